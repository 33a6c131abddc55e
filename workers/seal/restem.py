"""SEAL's outer loop (ReST-EM): sample self-edits, reward them by what they teach, SFT the policy on the winners.

One round, per training passage:
  1. sample k self-edits from the current policy (the base model in round 1);
  2. train a fresh LoRA on each, s times with different seeds, and answer the passage's questions
     closed-book (the inner loop's `build_training_sequences` -> `LoraTrainer` -> `evaluate_probes`);
  3. reward = mean accuracy over the s runs minus a baseline: by default a LoRA trained, with the same
     seeds, on the passage alone (what every learn job trains on anyway), so the reward is what the
     self-edit adds; `reward_baseline="base"` measures against the model without an adapter, as the paper does;
  4. keep the best self-edit if its reward is > 0 (`select_best`).
Then a fresh policy LoRA is SFT-ed on the kept (prompt -> self-edit) pairs, loss on the completion only.
Each round starts from the base weights, as in ReST-EM (Singh et al. 2023): the data, not the weights,
carry what earlier rounds learned, and a 135M policy does not drift on its own samples round after round.

Everything is checkpointed under `out_dir`, so a killed run resumes at the next unfinished passage.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import REWARD_BASELINES, TRAINING_RECIPE, EvalConfig, RewardBaseline, SelfEditConfig, TrainConfig
from .datasets import Passage
from .evaluate import evaluate_probes
from .generator import Adapter, Generator, Message
from .runfiles import pin_settings, write_json_atomic
from .selfedit import PROMPTS, build_training_sequences, generate_self_edits

if TYPE_CHECKING:
    from .train import LoraTrainer

logger = logging.getLogger(__name__)

# Formats whose self-edit is one completion of one prompt, so (prompt -> self-edit) is an SFT pair.
POLICY_FORMATS = ("rewrite", "implications", "self-qa")
POLICY_MANIFEST = "seal_policy.json"  # written beside adapter_config.json: what this policy is and how it was made

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class EditScore:
    """One sampled self-edit and what training on it did, over s seeds."""

    index: int
    self_edit: str
    accuracies: list[float]
    train_losses: list[float]
    baseline: float

    @property
    def gain(self) -> float:
        """Reward: mean accuracy over the seeds minus the baseline (see `PolicyTrainConfig.reward_baseline`)."""
        return compute_gain(self.accuracies, self.baseline)

    @property
    def mean_loss(self) -> float:
        return statistics.fmean(self.train_losses) if self.train_losses else float("inf")


def compute_gain(accuracies: Sequence[float], baseline: float) -> float:
    """Mean accuracy gain over the baseline; an edit that was never scored has no gain."""
    if not accuracies:
        raise ValueError("compute_gain needs at least one accuracy")
    return statistics.fmean(accuracies) - baseline


def select_best(scores: Sequence[EditScore], *, eps: float = 1e-9) -> EditScore | None:
    """The self-edit to keep for a passage, or None when none has a gain > 0.

    Ties on gain (within `eps`) go to the lower mean final training loss (the edit the adapter
    absorbed most cleanly), then to the lower sample index, so the choice is deterministic.
    """
    positive = [s for s in scores if s.gain > eps]
    if not positive:
        return None
    top = max(s.gain for s in positive)
    tied = [s for s in positive if s.gain >= top - eps]
    return min(tied, key=lambda s: (s.mean_loss, s.index))


def policy_messages(passage: Passage, fmt: str) -> list[Message]:
    """The chat prompt the policy answers with a self-edit (exactly what `generate_self_edits` sends)."""
    if fmt not in POLICY_FORMATS:
        raise ValueError(f"policy format must be one of {POLICY_FORMATS}, got {fmt!r}")
    doc = passage.doc
    return [{"role": "user", "content": PROMPTS[fmt].format(title=doc.title or "the passage", text=doc.text)}]


def score_self_edit(
    *,
    trainer: LoraTrainer,
    scorer: Generator,
    passage: Passage,
    self_edit: str,
    fmt: str,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    workdir: str,
    eval_cfg: EvalConfig,
    baseline: float,
    index: int = 0,
) -> tuple[EditScore, list[list[dict]]]:
    """Train a fresh LoRA on one self-edit once per seed and grade it; returns the score and predictions."""
    seqs = build_training_sequences(passage.doc, self_edit, fmt, render_chat=trainer.render_chat)
    accs, losses, preds = [], [], []
    for seed in seeds:
        out = os.path.abspath(os.path.join(workdir, f"e{index}-s{seed}"))
        res = trainer.train_lora(seqs, replace(train_cfg, seed=seed), out)
        ev = evaluate_probes(scorer, passage.doc.probes, adapter=(f"edit-{index}-s{seed}", out),
                             max_tokens=eval_cfg.max_tokens)
        shutil.rmtree(out, ignore_errors=True)  # ~20 MB per r32 adapter; the score is what we keep
        accs.append(ev.accuracy)
        losses.append(res.final_loss)
        preds.append(ev.predictions)
    return EditScore(index=index, self_edit=self_edit, accuracies=accs, train_losses=losses,
                     baseline=baseline), preds


@dataclass
class PolicyTrainConfig:
    """ReST-EM settings; the paper used R=2 rounds, k=5 samples, and one inner loop per sample."""

    rounds: int = 2  # paper: 2 ReST-EM rounds
    k: int = 3  # self-edits sampled per passage per round (paper: 5)
    seeds: int = 1  # s: inner-loop repeats per self-edit with different LoRA seeds (paper: 1)
    format: str = "rewrite"  # prompt format the policy learns to answer
    temperature: float = 1.0  # paper samples at 1.0
    max_tokens: int = 256  # per self-edit
    # Policy SFT: rank 16 (vLLM serves it beside the knowledge adapters), 3 epochs over a handful of pairs.
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(rank=16, alpha=32, epochs=3, lr=3e-4, batch_size=4))
    # What a reward is measured against. "passage": a LoRA on the passage alone, trained with the same seeds,
    # because `build_training_sequences` always includes the passage. Against the bare model (the paper's
    # baseline, "base") the passage did most of the work at 135M: every sampled edit scored +44 to +50
    # points and the filter kept 5 of 6 passages on 1-question differences (docs/RESULTS.md, recipe 1).
    reward_baseline: RewardBaseline = "passage"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"PolicyTrainConfig.rounds must be >= 1, got {self.rounds}")
        if self.k < 1:
            raise ValueError(f"PolicyTrainConfig.k must be >= 1, got {self.k}")
        if self.seeds < 1:
            raise ValueError(f"PolicyTrainConfig.seeds must be >= 1, got {self.seeds}")
        if self.format not in POLICY_FORMATS:
            raise ValueError(f"PolicyTrainConfig.format must be one of {POLICY_FORMATS}, got {self.format!r}")
        if self.reward_baseline not in REWARD_BASELINES:
            raise ValueError(f"PolicyTrainConfig.reward_baseline must be one of {REWARD_BASELINES}, "
                             f"got {self.reward_baseline!r}")


def _score_passage(
    *, generator: Generator, trainer: LoraTrainer, scorer: Generator, passage: Passage, cfg: PolicyTrainConfig,
    train_cfg: TrainConfig, eval_cfg: EvalConfig, policy: Adapter | None, round_no: int, workdir: str,
) -> dict:
    t0 = time.perf_counter()
    se_cfg = SelfEditConfig(format=cfg.format, k=cfg.k, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                            seed=cfg.seed + 1000 * round_no)
    edits = generate_self_edits(generator, passage.doc, se_cfg, policy_adapter=policy)
    seeds = [train_cfg.seed + j for j in range(cfg.seeds)]
    no_adapter = evaluate_probes(scorer, passage.doc.probes, max_tokens=eval_cfg.max_tokens).accuracy
    if cfg.reward_baseline == "passage":
        passage_only, _ = score_self_edit(trainer=trainer, scorer=scorer, passage=passage, self_edit="",
                                          fmt="passage", train_cfg=train_cfg, seeds=seeds, workdir=workdir,
                                          eval_cfg=eval_cfg, baseline=0.0, index=-1)
        baseline = statistics.fmean(passage_only.accuracies)
    else:
        baseline = no_adapter
    scores = [score_self_edit(trainer=trainer, scorer=scorer, passage=passage, self_edit=e, fmt=cfg.format,
                              train_cfg=train_cfg, seeds=seeds, workdir=workdir, eval_cfg=eval_cfg,
                              baseline=baseline, index=i)[0]
              for i, e in enumerate(edits)]
    best = select_best(scores)
    return {
        "passage_id": passage.id, "title": passage.doc.title, "baseline": baseline,
        "baseline_kind": cfg.reward_baseline, "no_adapter_accuracy": no_adapter,
        "edits": [asdict(s) | {"gain": s.gain} for s in scores],
        "kept": best.index if best is not None else None, "sampled": cfg.k, "usable": len(edits),
        "seconds": time.perf_counter() - t0,
    }


def train_policy(
    *,
    generator: Generator,
    trainer: LoraTrainer,
    passages: Sequence[Passage],
    out_dir: str,
    cfg: PolicyTrainConfig,
    train_cfg: TrainConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    scorer: Generator | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run ReST-EM for `cfg.rounds` rounds; the final policy adapter is `out_dir/policy`.

    Args:
        generator: samples self-edits; it must accept the policy adapter (HFGenerator or VLLMGenerator).
        trainer: the warm base model the inner-loop LoRAs and the policy LoRA are trained on.
        passages: training passages with gold questions (SQuAD outside SEAL's evaluation split).
        out_dir: checkpoint and output directory; rerunning with the same arguments resumes.
        cfg: rounds, k, s, format and the policy SFT settings.
        train_cfg: the inner loop's LoRA settings (default: the paper's r32/a64, 10 epochs, lr 1e-3).
        eval_cfg: closed-book answer budget.
        scorer: answers probes with candidate adapters (default: `generator`).
        progress: called as (what, done, total) after each passage and each SFT.

    Returns:
        The training report, also written to `out_dir/report.json`.
    """
    train_cfg = train_cfg or TrainConfig()
    eval_cfg = eval_cfg or EvalConfig()
    scorer = scorer or generator
    root = Path(out_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Rounds may grow between runs (a rerun with more rounds extends the last one); nothing else may change.
    settings = {"recipe": TRAINING_RECIPE, "base_model": Path(trainer.model_path).name,
                "policy": {k: v for k, v in asdict(cfg).items() if k != "rounds"},  # rounds may grow on resume
                "inner_train": asdict(train_cfg), "eval_max_tokens": eval_cfg.max_tokens}
    pin_settings(root / "settings.json", settings,
                 unrecorded_results=any(root.glob("round-*/passages/*.json")))
    t_start = time.perf_counter()
    policy: Adapter | None = None
    rounds: list[dict] = []
    for r in range(1, cfg.rounds + 1):
        rdir = root / f"round-{r}"
        (rdir / "passages").mkdir(parents=True, exist_ok=True)
        results = []
        for i, p in enumerate(passages):
            ckpt = rdir / "passages" / f"{p.id}.json"
            if ckpt.is_file():
                results.append(json.loads(ckpt.read_text()))
            else:
                res = _score_passage(generator=generator, trainer=trainer, scorer=scorer, passage=p, cfg=cfg,
                                     train_cfg=train_cfg, eval_cfg=eval_cfg, policy=policy, round_no=r,
                                     workdir=str(rdir / "work"))
                write_json_atomic(ckpt, res)
                results.append(res)
            if progress is not None:
                progress(f"round {r}: passages", i + 1, len(passages))
        shutil.rmtree(rdir / "work", ignore_errors=True)
        adapter_dir = rdir / "policy"
        by_id = {p.id: p for p in passages}
        kept = [(by_id[res["passage_id"]], res["edits"][res["kept"]]["self_edit"])
                for res in results if res["kept"] is not None]
        if not (adapter_dir / "adapter_config.json").is_file():
            from .sft import SftExample, train_completion_lora

            examples = [SftExample(messages=policy_messages(p, cfg.format), completion=e) for p, e in kept]
            tmp = rdir / "policy.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            sft = train_completion_lora(trainer, examples, replace(cfg.sft, seed=cfg.seed + r), str(tmp))
            write_json_atomic(rdir / "sft.json", asdict(sft))
            os.replace(tmp, adapter_dir)  # the round counts as done only once its adapter is complete
        if progress is not None:
            progress(f"round {r}: policy SFT", 1, 1)
        sft_info = json.loads((rdir / "sft.json").read_text()) if (rdir / "sft.json").is_file() else {}
        rounds.append(_round_summary(r, results, len(kept), sft_info))
        policy = (f"policy-r{r}", str(adapter_dir))
    final = root / "policy"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(policy[1], final)
    report = {
        "format": cfg.format, "rounds": rounds, "config": asdict(cfg), "inner_train": asdict(train_cfg),
        "eval_max_tokens": eval_cfg.max_tokens, "base_model": trainer.model_path,
        "passages": [p.id for p in passages], "policy_dir": str(final),
        "seconds_this_run": time.perf_counter() - t_start,
    }
    write_json_atomic(final / POLICY_MANIFEST, report)
    write_json_atomic(root / "report.json", report)
    return report


def _round_summary(r: int, results: list[dict], kept: int, sft: dict) -> dict:
    all_gains = [e["gain"] for res in results for e in res["edits"]]
    kept_gains = [res["edits"][res["kept"]]["gain"] for res in results if res["kept"] is not None]
    return {
        "round": r, "passages": len(results), "kept": kept,
        "baseline_accuracy": statistics.fmean(res["baseline"] for res in results) if results else 0.0,
        "no_adapter_accuracy": statistics.fmean(res["no_adapter_accuracy"] for res in results) if results else 0.0,
        "mean_gain_all_edits": statistics.fmean(all_gains) if all_gains else 0.0,
        "mean_gain_kept": statistics.fmean(kept_gains) if kept_gains else 0.0,
        "usable_edits": sum(res["usable"] for res in results), "sampled_edits": sum(res["sampled"] for res in results),
        "seconds": sum(res["seconds"] for res in results) + sft.get("seconds", 0.0), "sft": sft,
    }


def read_policy_format(policy_dir: str) -> str | None:
    """The self-edit format a policy adapter was trained to answer, from its manifest (None if absent)."""
    path = Path(policy_dir) / POLICY_MANIFEST
    return json.loads(path.read_text()).get("format") if path.is_file() else None
