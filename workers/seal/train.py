"""LoRA SFT with peft on a base model that stays loaded ("warm") across trainings."""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import TrainConfig
from .types import Cancelled

logger = logging.getLogger(__name__)

Row = tuple[list[int], list[int]]  # (input_ids, labels); label -100 puts no loss on that token
# A context-distillation row (workers/seal/distill.py): input_ids, labels, and per labelled token the
# teacher's top-k token ids and log-probabilities ([answer tokens, k] each), which the loss matches.
DistillRow = tuple[list[int], list[int], torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    """What one LoRA training produced."""

    final_loss: float  # mean token loss over the last epoch
    first_loss: float  # loss of the very first batch (equals the base/parent loss on it)
    steps: int
    seconds: float
    num_sequences: int


class LoraTrainer:
    """Holds the tokenizer and base weights once; each `train_lora` call injects a LoRA and removes it after."""

    def __init__(self, model_path: str, *, device: str = "cpu", dtype: str = "float32",
                 num_threads: int | None = None, bf16_autocast: bool = False,
                 threads: Callable[[], int] | None = None) -> None:
        """Load the base model on `device` in `dtype` (bf16 on GPU, fp32 on CPU).

        `bf16_autocast` lets a recipe that asks for it (`TrainConfig.bf16_autocast`) train a float32
        model with its matrix products in bfloat16 (the LoRA weights, optimizer and loss stay float32):
        on one CPU with native bf16 (an AMD EPYC) the shard recipe's training took 0.73x the time at
        the same recall, on another (an Intel Xeon) 1.09x, and the suite's learns changed verdict with it,
        so the bundled recipes leave it off (docs/RESULTS.md). The teacher's targets and every
        generation stay float32.

        `threads`, when given, says before every step of work (a training or teacher batch, a decoding
        step of `HFGenerator`) how many torch threads to run it on: the worker's own share, or more
        while the host's other cores idle (app.cpus.LentCores). Between steps of work the trainer
        keeps `num_threads`. One and two threads trained bit-identical weights on an AMD EPYC (bench/train_threads.py);
        on an Intel Xeon they agree to float32 rounding (tests/seal/test_train.py).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads is not None:
            # On a 2-core box shared with a vLLM worker, 2 OpenMP threads ran 3 steps in 145 s and
            # 1 thread in 23 s: spinning barriers collapse when a core is taken.
            torch.set_num_threads(num_threads)
        self.num_threads = torch.get_num_threads()
        self.threads = threads

        self.model_path = model_path
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.bf16_autocast = bf16_autocast and self.dtype == torch.float32  # a bf16 model computes in bf16 already
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype).to(self.device)
        self.model.requires_grad_(False)
        self.model.eval()

    def take_threads(self) -> None:
        """Before a step of work: run it on as many threads as `threads` allows now."""
        if self.threads is not None:
            wanted = self.threads()
            if wanted != torch.get_num_threads():
                torch.set_num_threads(wanted)

    def return_threads(self) -> None:
        """After the work: back to the worker's own share."""
        if self.threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Render a full conversation with the model's chat template, exactly as the server will prompt."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @functools.cached_property
    def assistant_header(self) -> str | None:
        """The text the chat template puts before an assistant turn (None without a chat template)."""
        turn = [{"role": "user", "content": "x"}]
        try:
            with_header = self.tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
            without = self.tokenizer.apply_chat_template(turn, tokenize=False)
        except (ValueError, TypeError):
            return None
        if not with_header.startswith(without):
            return None
        return with_header[len(without):] or None

    def encode(self, sequences: Sequence[str], max_len: int) -> list[Row]:
        """Tokenize training strings into rows; a chat-rendered string gets loss on its last assistant turn only.

        The prompt side of a chat (the template's default system prompt and the user turn) is always
        given at serving time, so it is context, not something to learn: with loss on it, 8 anchor
        chats taught the adapter the system prompt's "... by Hugging Face" so well that closed-book
        answers became "found only in Lake Hugging Face". Plain passages keep loss on every token.
        """
        eos = self.tokenizer.eos_token_id
        header = self.assistant_header
        rows = []
        for text in sequences:
            cut = text.rindex(header) + len(header) if header and header in text else 0
            # Tokenizing the two sides separately keeps the boundary exact (no merge across it).
            context = self.tokenizer(text[:cut], add_special_tokens=False)["input_ids"] if cut else []
            target = self.tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
            # A trailing EOS teaches the adapter to stop after the fact instead of rambling on.
            if not target or target[-1] != eos:
                target = target + [eos]
            rows.append(((context + target)[:max_len], ([-100] * len(context) + target)[:max_len]))
        return rows

    def _batch(self, rows: list[Row | DistillRow]) -> dict[str, torch.Tensor]:
        # Pad only to the longest row in this batch: sequences here are 30-200 tokens, not 2048.
        width = max(len(row[0]) for row in rows)
        ids_t = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        labels_t = torch.full((len(rows), width), -100, dtype=torch.long)  # no loss on padding
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, labels, *_) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            labels_t[i, : len(labels)] = torch.tensor(labels)
            mask[i, : len(ids)] = 1
        batch = {"input_ids": ids_t.to(self.device), "attention_mask": mask.to(self.device),
                 "labels": labels_t.to(self.device)}
        if any(len(row) == 4 for row in rows):
            # Soft targets for every labelled token, in the order the loss gathers them (row by row):
            # a plain row's token is a one-hot target, so one loss covers both kinds of row.
            targets = [self._targets(row) for row in rows]
            k = max(ids.shape[1] for ids, _ in targets)
            # Missing candidates (a plain row has one) point at token 0 with probability 0.
            batch["teacher_ids"] = torch.cat([torch.nn.functional.pad(ids, (0, k - ids.shape[1]))
                                              for ids, _ in targets]).to(self.device)
            batch["teacher_logprobs"] = torch.cat([torch.nn.functional.pad(lp, (0, k - lp.shape[1]), value=-math.inf)
                                                   for _, lp in targets]).to(self.device)
        return batch

    @staticmethod
    def _targets(row: Row | DistillRow) -> tuple[torch.Tensor, torch.Tensor]:
        labels = [label for label in row[1][1:] if label != -100]
        if len(row) == 4:
            return row[2][: len(labels)], row[3][: len(labels)]  # truncation may have cut the answer short
        return torch.tensor(labels, dtype=torch.long).view(-1, 1), torch.zeros((len(labels), 1))

    def _loss(self, peft_model: Any, batch: dict[str, torch.Tensor], *, share_prefix: bool = True) -> torch.Tensor:
        """Mean next-token loss over labelled positions, projecting only those onto the vocabulary.

        A chat row trains on its answer alone (a handful of tokens after a ~60-token prompt), yet the
        stock forward pass projects every position onto the 49k-word vocabulary and softmaxes it: on
        the 135M model that projection is about a fifth of the compute and most of the memory traffic.
        Gathering the labelled positions first gives the same loss for a fraction of it.

        With a teacher's targets in the batch (context distillation), the loss is the cross-entropy
        against the teacher's top-k distribution, renormalised, at every labelled token.

        Every chat row opens with the same ~28 prompt tokens (the template's default system turn), a
        third of a distillation row: with `share_prefix` they run once per batch instead of once per
        row, for the same loss and gradients (tests/seal/test_train.py; bench/train_step.py times it).
        """
        causal = peft_model.get_base_model()
        body = causal.get_decoder() if hasattr(causal, "get_decoder") else None
        head = causal.get_output_embeddings()
        if body is None or head is None or getattr(causal.config, "final_logit_softcapping", None):
            if "teacher_ids" in batch:
                raise ValueError(f"context distillation needs a decoder and an output head ({type(causal).__name__})")
            return peft_model(**batch).loss  # models whose logits need more than the head: the stock path
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        shared = _shared_context_length(ids, labels) if share_prefix else 0
        if shared:
            # The rows' common prompt (the chat template's system turn and user header) runs once; its
            # keys and values, copied across the batch, stay in the graph, so the LoRA's gradient through
            # them is the one the whole rows would give.
            past = body(input_ids=ids[:1, :shared], use_cache=True).past_key_values
            past.batch_repeat_interleave(ids.shape[0])
            hidden = body(input_ids=ids[:, shared:], attention_mask=mask, past_key_values=past).last_hidden_state
        else:
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        # The hidden state at position t predicts label t + 1; the shared part predicts no label.
        targets = labels[:, shared + 1 :]
        keep = targets != -100
        logits = head(hidden[:, :-1][keep]).float()
        if "teacher_ids" not in batch:
            return torch.nn.functional.cross_entropy(logits, targets[keep])
        student = torch.log_softmax(logits, dim=-1)
        weights = torch.softmax(batch["teacher_logprobs"], dim=-1)  # the teacher's top-k, renormalised
        return -(weights * student.gather(-1, batch["teacher_ids"])).sum(-1).mean()

    @torch.no_grad()
    def teacher_rows(self, *, students: Sequence[list[dict[str, str]]], teachers: Sequence[list[dict[str, str]]],
                     answers: Sequence[str], top_k: int, batch_size: int = 8,
                     share_prefix: bool = True) -> list[DistillRow]:
        """Distillation rows: the student's chat (its prompt, then the answer) with the teacher's top-k
        log-probabilities at each answer token, the teacher being these base weights prompted with
        `teachers[i]` (the document in context) over the same answer tokens.

        Every teacher prompt opens with the same document, so the tokens they share run once and their
        keys and values serve each batch of questions (`share_prefix=False` runs every prompt whole):
        on a SQuAD paragraph's 40 questions the pass took 0.37x the time on one thread (bench/train_step.py),
        with the same leading token ids and log-probabilities within 1e-4 (tests/seal/test_train.py).
        """
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        causal = self.model
        body = causal.get_decoder() if hasattr(causal, "get_decoder") else None
        head = causal.get_output_embeddings()
        if body is None or head is None:
            raise ValueError(f"context distillation needs a decoder and an output head ({type(causal).__name__})")

        def prefix(messages: list[dict[str, str]]) -> list[int]:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]

        if not teachers:
            return []
        prompts = [prefix(t) for t in teachers]
        answer_ids = [tok(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
        # Each prompt keeps its last token unshared: its hidden state predicts the answer's first.
        shared = min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 1) if share_prefix else 0
        rows: list[DistillRow] = []
        try:
            self.take_threads()
            shared_kv = body(input_ids=torch.tensor([prompts[0][:shared]], device=self.device)).past_key_values \
                if shared > 0 else None
            for start in range(0, len(answers), batch_size):
                self.take_threads()
                chunk = range(start, min(start + batch_size, len(answers)))
                tails = [(prompts[i] + answer_ids[i])[shared:] for i in chunk]
                width = max(len(t) for t in tails)
                ids_t = torch.full((len(tails), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(tails), shared + width), dtype=torch.long)
                mask[:, :shared] = 1
                for j, tail in enumerate(tails):  # padded on the right, so every real token keeps its position
                    ids_t[j, : len(tail)] = torch.tensor(tail)
                    mask[j, shared : shared + len(tail)] = 1
                past = None
                if shared_kv is not None:
                    past = copy.deepcopy(shared_kv)  # the forward pass extends the cache it is given
                    past.batch_repeat_interleave(len(tails))
                hidden = body(input_ids=ids_t.to(self.device), attention_mask=mask.to(self.device),
                              past_key_values=past).last_hidden_state
                for j, i in enumerate(chunk):
                    p, a = prompts[i], answer_ids[i]
                    # The hidden state before each answer token predicts it.
                    logits = head(hidden[j, len(p) - 1 - shared : len(p) + len(a) - 1 - shared]).float()
                    top = torch.log_softmax(logits, dim=-1).topk(top_k, dim=-1)
                    student = prefix(students[i])
                    rows.append((student + a, [-100] * len(student) + a, top.indices.cpu(), top.values.cpu()))
        finally:
            self.return_threads()
        return rows

    def train_lora(
        self,
        sequences: Sequence[str],
        cfg: TrainConfig,
        out_dir: str,
        *,
        init_adapter_dir: str | None = None,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train a LoRA on `sequences` (from `init_adapter_dir` if given) and save it with peft into `out_dir`.

        The loss covers every token of a plain passage (the passage itself is what the adapter must absorb)
        and the answer of a chat-rendered sequence (see `encode`).
        """
        if not sequences:
            raise ValueError("train_lora needs at least one sequence")
        rows = self.encode(sequences, cfg.max_seq_len)
        return self.train_rows(rows, cfg, out_dir, init_adapter_dir=init_adapter_dir, progress=progress,
                               should_stop=should_stop)

    def train_rows(
        self,
        rows: Sequence[Row],
        cfg: TrainConfig,
        out_dir: str,
        *,
        init_adapter_dir: str | None = None,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        share_prefix: bool = True,
    ) -> TrainResult:
        """Train a LoRA on tokenized `(input_ids, labels)` rows (label -100 = no loss) and save it with peft.

        No rows saves the untrained LoRA (B = 0: it generates exactly like its starting weights).
        `share_prefix=False` runs each row's shared prompt in full (see `_loss`), for the bench's A/B.
        """
        from peft import LoraConfig, PeftModel, get_peft_model

        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        rows = [r for r in rows if any(label != -100 for label in r[1])]  # truncation can leave no target
        if init_adapter_dir is not None:
            peft_model = PeftModel.from_pretrained(self.model, init_adapter_dir, is_trainable=True)
        else:
            lora_cfg = LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=list(cfg.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            peft_model = get_peft_model(self.model, lora_cfg)
        step, first_loss, epoch_losses = 0, float("nan"), []
        try:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
            total = max(1, ((len(rows) + cfg.batch_size - 1) // cfg.batch_size) * cfg.epochs)
            peft_model.train()
            lengths = [len(row[0]) for row in rows]
            autocast = self.bf16_autocast and cfg.bf16_autocast
            for _epoch in range(cfg.epochs if rows else 0):
                epoch_losses = []
                for chosen in epoch_batches(lengths, cfg.batch_size, rng, grouped=cfg.group_by_length):
                    if should_stop is not None and should_stop():
                        raise Cancelled("training cancelled")
                    batch = self._batch([rows[i] for i in chosen])
                    self.take_threads()
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                        loss = self._loss(peft_model, batch, share_prefix=share_prefix)
                    loss.backward()
                    optim.step()
                    optim.zero_grad(set_to_none=True)
                    value = float(loss.detach())
                    if step == 0:
                        first_loss = value
                    epoch_losses.append(value)
                    step += 1
                    if progress is not None:
                        progress(step / total)
            peft_model.eval()
            os.makedirs(out_dir, exist_ok=True)
            peft_model.save_pretrained(out_dir)
            self._store_in_model_dtype(out_dir)
        finally:
            self.return_threads()
            # unload() swaps the LoRA layers back for the original Linear modules without merging,
            # so the next call starts from clean base weights (checked in tests/seal/test_train.py).
            self.model = peft_model.unload()
            if hasattr(self.model, "peft_config"):
                del self.model.peft_config
            self.model.requires_grad_(False)
            self.model.eval()
        seconds = time.perf_counter() - t0
        final = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
        logger.info("trained LoRA r=%d on %d rows: %d steps, loss %.3f -> %.3f in %.1fs",
                    cfg.rank, len(rows), step, first_loss, final, seconds)
        return TrainResult(final_loss=final, first_loss=first_loss, steps=step, seconds=seconds,
                           num_sequences=len(rows))


    def _store_in_model_dtype(self, out_dir: str) -> None:
        """Save the adapter in the base model's dtype. peft trains a bf16 model's LoRA in fp32 (for the
        optimizer's sake) and saves it so: a 7B rank-16 shard would take ~161 MB instead of ~81 MB,
        and vLLM casts it to the engine's dtype on load anyway. fp32 models (CPU) are left as they are."""
        if self.dtype not in (torch.bfloat16, torch.float16):
            return
        from safetensors.torch import load_file, save_file

        path = os.path.join(out_dir, "adapter_model.safetensors")
        tensors = load_file(path)
        save_file({k: v.to(self.dtype) if v.is_floating_point() else v for k, v in tensors.items()}, path,
                  metadata={"format": "pt"})


def _shared_context_length(ids: torch.Tensor, labels: torch.Tensor) -> int:
    """How many leading columns of a right-padded batch every row shares and that predict no label.

    The last shared position may not precede a labelled token (its hidden state would be needed for
    the loss), so the count stops one short of the earliest label. A single row shares nothing.
    """
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0).long().cumprod(dim=0).sum()
    first_label = (labels != -100).long().argmax(dim=1).min()
    return max(0, min(int(same), int(first_label) - 1))


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares."""
    n = 0
    for column in zip(*sequences, strict=False):  # up to the shortest
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


LENGTH_BUCKET = 8  # tokens: rows this close in length share batches in any order


def epoch_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, *, grouped: bool) -> list[list[int]]:
    """One epoch's batches of row indices: every row once, the batch order random.

    Each batch is padded to its longest row. A SQuAD paragraph's distillation set has rows of 57 to
    131 tokens, so random batches of 8 computed 1,100-1,350 tokens of padding an epoch; grouped, 270.
    Grouped, rows are shuffled, then ordered by length bucket (a stable sort: a bucket keeps the
    shuffle, so batches differ from epoch to epoch), cut into batches, and the batches shuffled: the
    way transformers' group_by_length sampler does it, without its megabatches, since a document's
    set is under a few hundred rows. Random batches draw from `rng` exactly as training always did.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not grouped:
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    order.sort(key=lambda i: lengths[i] // LENGTH_BUCKET)
    batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def train_lora(
    trainer: LoraTrainer,
    sequences: Sequence[str],
    cfg: TrainConfig,
    out_dir: str,
    *,
    init_adapter_dir: str | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Functional alias for `trainer.train_lora(...)`."""
    return trainer.train_lora(sequences, cfg, out_dir, init_adapter_dir=init_adapter_dir,
                              progress=progress, should_stop=should_stop)
