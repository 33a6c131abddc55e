"""Hyperparameters of the SEAL inner loop; paper values are noted, defaults were measured on a 2-core CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

SELF_EDIT_FORMATS = ("facts", "passage", "distill", "rewrite", "implications", "self-qa", "chat-qa", "recite")
# What a LoRA learns from a document: the sequences each format builds and where the loss falls.
# Bump it when either changes, so cached evaluation results of the old recipe are refused, not mixed in.
#   1: sequences with loss on every token
#   2: chats train on the answer only; "passage" also trains the passage as a chat answer
TRAINING_RECIPE = 2
# What ReST-EM rewards a self-edit against: a LoRA on the passage alone (what the edit adds) or the bare model (paper).
RewardBaseline = Literal["passage", "base"]
REWARD_BASELINES: tuple[str, ...] = get_args(RewardBaseline)
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class SelfEditConfig:
    """How self-edits are sampled from the policy."""

    # paper: rewrite/implications/self-qa. Measured on the 10 fictional passages (135M, CPU, 128-token
    # answers): the raw passage alone scored 82.5% closed-book, 10/10 passages >= 3/4, in 27 s of
    # training; the best self-edit ("recite": own question -> passage as a chat answer) also 82.5%
    # but 9/10 and ~67 s. Self-edits stay opt-in until a trained policy beats the passage. (Since
    # anchors joined training, "passage" also trains the passage as a chat answer: selfedit.py.)
    format: str = "passage"
    k: int = 1  # candidates (paper: 5 in ReST-EM); each adds ~35 s train + ~8 s eval here, so 1 fits 60 s on CPU
    temperature: float = 1.0  # paper samples at 1.0
    max_tokens: int = 256  # per self-edit; 135M rewrites rarely exceed ~150 tokens
    seed: int = 0  # sampling seed, so a learn job is reproducible
    questions_per_edit: int = 1  # recite/chat-qa: self-written questions per candidate (each costs a sequence)
    # distill: the most questions the teacher answers about the document (distill.py). Each is a
    # teacher answer to generate and a row to train every epoch, so this bounds the learn's time.
    distill_questions: int = 48
    # distill: keep only teacher answers that name what was asked; ask each short answer by clause too;
    # ask each fact only as far as the name asked for (distill.DistillConfig, where each is explained).
    distill_checked: bool = False
    distill_clauses: bool = False
    distill_prefixes: bool = False
    # distill: the most tokens the teacher answers in, never more than a user's answer gets (EvalConfig.
    # max_tokens). Each is a token to generate and to train on every epoch, for the longest rows.
    distill_answer_tokens: int = 48

    def __post_init__(self) -> None:
        if self.format not in SELF_EDIT_FORMATS:
            raise ValueError(f"SelfEditConfig.format must be one of {SELF_EDIT_FORMATS}, got {self.format!r}")
        if self.k < 1:
            raise ValueError(f"SelfEditConfig.k must be >= 1, got {self.k}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"SelfEditConfig.temperature must be in [0, 2], got {self.temperature}")
        if self.questions_per_edit < 1:
            raise ValueError(f"SelfEditConfig.questions_per_edit must be >= 1, got {self.questions_per_edit}")
        if not 1 <= self.distill_questions <= 256:
            raise ValueError(f"SelfEditConfig.distill_questions must be 1..256, got {self.distill_questions}")
        if not 4 <= self.distill_answer_tokens <= 1024:
            raise ValueError(f"SelfEditConfig.distill_answer_tokens must be 4..1024, got {self.distill_answer_tokens}")
        if self.max_tokens < 8:
            raise ValueError(f"SelfEditConfig.max_tokens must be >= 8, got {self.max_tokens}")


@dataclass
class TrainConfig:
    """LoRA SFT settings."""

    rank: int = 32  # paper: 32
    alpha: int = 64  # paper: 64
    epochs: int = 10  # paper: 10; with the raw passage this scored 82.5% (6 epochs at lr 2e-3 suits "recite")
    lr: float = 1e-3  # paper: 1e-3
    batch_size: int = 8  # paper: 1 with grad accumulation; batching is what keeps a 2-core CPU fast
    target_modules: tuple[str, ...] = field(default=ALL_LINEAR)  # paper: all attention + MLP projections
    seed: int = 0  # LoRA init and shuffling
    max_seq_len: int = 512  # truncation; sequences are passage-sized, never padded to 2048
    dropout: float = 0.0  # paper: 0; dropout slows memorisation of a handful of facts
    # Batches of rows of about one length instead of random ones (train.epoch_batches). Off: it trained
    # a SQuAD paragraph's set 18% faster, but with it on, three of the suite's learns that pass with
    # random batches failed, and a recall run lost a fifth of the answers at the same training time
    # (docs/RESULTS.md, "Training time on real text" and "Questions in the user's words").
    group_by_length: bool = False
    # Matrix products in bfloat16 on a float32 model, for a recipe measured to learn as well with them
    # (none bundled: the 135M recipes' learns changed verdict with them, and the time they save depends
    # on the CPU). The trainer applies it only where the CPU computes bf16 natively (LoraTrainer.bf16_autocast).
    bf16_autocast: bool = False

    def __post_init__(self) -> None:
        if self.rank not in (8, 16, 32, 64):
            # The ranks vLLM serves (its max_lora_rank defaults to the largest a recipe trains).
            raise ValueError(f"TrainConfig.rank must be one of 8/16/32/64, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"TrainConfig.alpha must be > 0, got {self.alpha}")
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"TrainConfig.lr must be in (0, 1), got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if not self.target_modules:
            raise ValueError(f"TrainConfig.target_modules must be non-empty, got {self.target_modules!r}")
        if self.max_seq_len < 16:
            raise ValueError(f"TrainConfig.max_seq_len must be >= 16, got {self.max_seq_len}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig.dropout must be in [0, 1), got {self.dropout}")
        self.target_modules = tuple(self.target_modules)


@dataclass
class EvalConfig:
    """How probes are written and answered."""

    num_probes: int = 4  # self-written probes per document when the caller gives none; each costs a decode
    # The budget a user's short question gets. A longer one (128 tokens was the old default) rewards an
    # adapter that recites its passage until the answer happens to appear.
    max_tokens: int = 48
    probe_max_tokens: int = 384  # budget for the model to write its probe Q/A list

    def __post_init__(self) -> None:
        if self.num_probes < 1:
            raise ValueError(f"EvalConfig.num_probes must be >= 1, got {self.num_probes}")
        if self.max_tokens < 4:
            raise ValueError(f"EvalConfig.max_tokens must be >= 4, got {self.max_tokens}")
        if self.probe_max_tokens < 32:
            raise ValueError(f"EvalConfig.probe_max_tokens must be >= 32, got {self.probe_max_tokens}")
