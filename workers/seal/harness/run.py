"""The knowledge-incorporation harness: each condition on each passage, graded, cached, resumable.

Conditions (a fresh adapter per passage, as in the paper's single-passage setting):
  base              no adapter, no context
  passage           LoRA on the raw passage
  self-edit:<fmt>   LoRA on the passage + one self-edit sampled from the base model; `self-edit:distill`
                    samples nothing: the LoRA matches the base model's answers while it reads the
                    passage (distill.py), as a knowledge base's shards learn
  self-edit+policy  LoRA on the passage + one self-edit sampled from a trained policy adapter
  context           the passage in the prompt, no training (the retrieval upper bound)

Training and grading reuse the inner loop's pieces (`build_training_sequences`, `LoraTrainer`,
`evaluate_probes`, via `restem.score_self_edit`), so the harness measures what learn jobs run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import TRAINING_RECIPE, EvalConfig, SelfEditConfig, TrainConfig
from ..datasets import Passage
from ..distill import DistillConfig, build_distillation
from ..evaluate import evaluate_probes
from ..generator import Adapter, Generator
from ..grade import graded
from ..probes import ANSWER_PROMPT
from ..restem import score_self_edit
from ..runfiles import pin_settings, write_json_atomic
from ..selfedit import generate_self_edits
from ..types import Probe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..train import LoraTrainer

logger = logging.getLogger(__name__)

BASE, PASSAGE, SELF_EDIT, POLICY, CONTEXT = "base", "passage", "self-edit", "self-edit+policy", "context"
CONDITIONS = (BASE, PASSAGE, SELF_EDIT, POLICY, CONTEXT)

Judge = Callable[[str, str, str], bool]
Progress = Callable[[str, int, int], None]  # (condition, passages done, total)


@dataclass
class HarnessConfig:
    """What to run; `fingerprint()` of this is stored with the cache so stale results are never mixed in.

    The policy adapter is not part of the fingerprint: policy records carry their `policy_dir` and
    are recomputed when it changes, so a new policy reuses every other cached condition.
    """

    conditions: Sequence[str] = CONDITIONS
    formats: Sequence[str] = ("rewrite",)  # self-edit formats; more than one gives `self-edit:<fmt>` per format
    policy_dir: str | None = None  # trained policy adapter for `self-edit+policy`
    policy_format: str = "rewrite"  # the format the policy was trained to answer
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    selfedit_max_tokens: int = 256
    selfedit_temperature: float = 1.0  # paper samples at 1.0
    seed: int = 0  # self-edit sampling and LoRA seed
    # `self-edit:distill`'s question set, top-k and teacher budget; the teacher never answers in more tokens
    # than eval.max_tokens, the user's budget, as a learn's does.
    distill: DistillConfig = field(default_factory=DistillConfig)
    # A ceiling, never a recipe: `self-edit:distill` also trains on the graded questions themselves,
    # answered with their gold answers, to tell what the LoRA can hold from what the questions reach.
    train_on_probes: bool = False
    # A measurement, never a recipe: half of each document's graded questions (`users_half`) are asked
    # as users would ask them, and `self-edit:distill` teaches the teacher's answers to them (reading the
    # document, never their gold answers). Graded apart, the other half tells whether questions in the
    # users' words carry over to questions no one asked; the asked half, what a repeated question gets.
    users_ask_half: bool = False

    def __post_init__(self) -> None:
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown conditions {bad}; choose from {CONDITIONS}")
        if POLICY in self.conditions and not self.policy_dir:
            raise ValueError("the self-edit+policy condition needs policy_dir (a trained policy adapter)")
        for fmt in [*self.formats, self.policy_format]:
            SelfEditConfig(format=fmt)  # validates the name
        if not self.formats:
            raise ValueError("formats must name at least one self-edit format")

    def condition_keys(self) -> list[str]:
        """Expanded condition names, in table order."""
        keys = []
        for c in self.conditions:
            if c == SELF_EDIT:
                keys += [f"{SELF_EDIT}:{f}" for f in self.formats]
            elif c == POLICY:
                keys.append(f"{POLICY}:{self.policy_format}")
            else:
                keys.append(c)
        return keys

    def fingerprint(self) -> dict:
        return {"recipe": TRAINING_RECIPE, "train": asdict(self.train), "eval": asdict(self.eval), "seed": self.seed,
                "selfedit_max_tokens": self.selfedit_max_tokens, "selfedit_temperature": self.selfedit_temperature,
                # only where it is used, so caches of runs without distill still resume
                **({"distill": asdict(self.distill)} if "distill" in self.formats else {}),
                **({"train_on_probes": True} if self.train_on_probes else {}),
                **({"users_ask_half": True} if self.users_ask_half else {})}


def context_prompt(text: str, question: str) -> list[dict[str, str]]:
    """The passage in the prompt (the same wording the probe writer answers with)."""
    return [{"role": "user", "content": ANSWER_PROMPT.format(text=text, question=question)}]


def _grade(questions: Sequence, preds: Sequence[str]) -> list[dict]:
    return [graded(p.question, p.answer, pred) for p, pred in zip(questions, preds, strict=True)]


def _scored(preds: list[dict]) -> dict:
    n = max(len(preds), 1)
    return {"questions": len(preds), "correct": sum(p["correct"] for p in preds),
            "accuracy": sum(p["correct"] for p in preds) / n, "f1": sum(p["f1"] for p in preds) / n,
            "predictions": preds}


def _run_one(key: str, passage: Passage, *, generator: Generator, trainer: LoraTrainer, cfg: HarnessConfig,
             workdir: str) -> dict:
    doc = passage.doc
    t0 = time.perf_counter()
    extra: dict = {}
    if key == BASE:
        preds = evaluate_probes(generator, doc.probes, max_tokens=cfg.eval.max_tokens).predictions
    elif key == CONTEXT:
        outs = generator.generate([context_prompt(doc.text, p.question) for p in doc.probes], temperature=0.0,
                                  max_tokens=cfg.eval.max_tokens, n=1)
        preds = _grade(doc.probes, [o[0].strip() if o else "" for o in outs])
    elif key == f"{SELF_EDIT}:distill":
        preds, extra = _run_distill(passage, generator=generator, trainer=trainer, cfg=cfg, workdir=workdir)
    else:
        cond, _, fmt = key.partition(":")
        fmt = fmt or "passage"
        edit = doc.text.strip()
        if cond != PASSAGE:
            policy: Adapter | None = ("policy", os.path.abspath(cfg.policy_dir)) if cond == POLICY else None
            se_cfg = SelfEditConfig(format=fmt, k=1, temperature=cfg.selfedit_temperature,
                                    max_tokens=cfg.selfedit_max_tokens, seed=cfg.seed)
            edits = generate_self_edits(generator, doc, se_cfg, policy_adapter=policy)
            # A junk sample leaves only the passage (plus its chat form) to train on; recorded, not hidden.
            edit = edits[0] if edits else ""
            extra["self_edit_junk"] = not edits
        score, all_preds = score_self_edit(trainer=trainer, scorer=generator, passage=passage, self_edit=edit,
                                           fmt=fmt, train_cfg=cfg.train, seeds=[cfg.train.seed],
                                           workdir=workdir, eval_cfg=cfg.eval, baseline=0.0)
        preds = all_preds[0]
        extra |= {"self_edit": edit if cond != PASSAGE else None, "train_loss": score.train_losses[0]}
        if cond == POLICY:
            extra["policy_dir"] = os.path.abspath(cfg.policy_dir)
    return {"condition": key, "passage_id": passage.id, "title": doc.title, **_scored(preds),
            "seconds": time.perf_counter() - t0, **extra}


def _run_distill(passage: Passage, *, generator: Generator, trainer: LoraTrainer, cfg: HarnessConfig,
                 workdir: str) -> tuple[list[dict], dict]:
    """The `distill` recipe a learn job runs (inner.py): the teacher's answers and their token
    distributions, then a fresh LoRA trained on them beside the short entity answers, graded closed-book."""
    doc = passage.doc
    t0 = time.perf_counter()
    distill_cfg = cfg.distill.within(cfg.eval.max_tokens)
    asked = [p.question for p in users_half(doc.probes)] if cfg.users_ask_half else []
    distillation = build_distillation(generator, trainer, doc, distill_cfg, user_questions=asked)
    teacher_seconds = time.perf_counter() - t0
    gold = [trainer.render_chat([{"role": "user", "content": p.question}, {"role": "assistant", "content": p.answer}])
            for p in doc.probes] if cfg.train_on_probes else []
    rows = distillation.rows + trainer.encode(distillation.short_answers + gold, cfg.train.max_seq_len)
    out = os.path.abspath(os.path.join(workdir, "distill"))
    res = trainer.train_rows(rows, cfg.train, out)
    preds = evaluate_probes(generator, doc.probes, adapter=("distill", out), max_tokens=cfg.eval.max_tokens).predictions
    shutil.rmtree(out, ignore_errors=True)  # the score is what the harness keeps
    return preds, {"self_edit": None, "train_loss": res.final_loss, "teacher_seconds": round(teacher_seconds, 2),
                   "train_seconds": round(res.seconds, 2), "distill_rows": len(rows),
                   "teacher_dropped": distillation.dropped}


def users_half(probes: Sequence[Probe]) -> list[Probe]:
    """The graded questions `HarnessConfig.users_ask_half` asks as users would: every other one, from
    the first, so a document's forward and reverse questions are both split."""
    return list(probes[::2])


def _cache_path(out: Path, key: str, passage_id: str) -> Path:
    return out / "cache" / key.replace(":", "__").replace("+", "_plus_") / f"{passage_id}.json"


def shard_passages(passages: Sequence[Passage], spec: str) -> list[Passage]:
    """Shard `I/N` of `passages`: every N-th passage from the I-th (0-based), so shards are balanced.

    Shards share one cache directory, so they can run side by side (cores, GPUs or hosts on a shared
    disk); the unsharded run afterwards reads every passage from the cache and writes the tables.
    """
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"shard must be I/N with 0 <= I < N, got {spec!r}")
    return list(passages[int(index)::int(count)])


def run_harness(
    *,
    generator: Generator,
    trainer: LoraTrainer,
    passages: Sequence[Passage],
    cfg: HarnessConfig,
    out_dir: str,
    judge: Judge | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Run every condition on every passage (passage-major, so a partial run has full rows); returns records.

    Each (condition, passage) result is written to `out_dir/cache/` as soon as it is done, and
    read back instead of recomputed when the run is repeated, so an interrupted run continues.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pin_settings(out / "config.json", cfg.fingerprint())
    keys = cfg.condition_keys()
    records = []
    for i, passage in enumerate(passages):
        for key in keys:
            path = _cache_path(out, key, passage.id)
            rec = json.loads(path.read_text()) if path.is_file() else None
            if rec is not None and key.startswith(POLICY) and rec.get("policy_dir") != os.path.abspath(cfg.policy_dir):
                rec = None  # cached under another policy adapter: the policy condition is rerun, the rest reused
            if rec is None:
                rec = _run_one(key, passage, generator=generator, trainer=trainer, cfg=cfg,
                               workdir=str(out / "work" / passage.id))
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(path, rec, indent=1)
            if judge is not None and any("judge" not in p for p in rec["predictions"]):
                for p in rec["predictions"]:
                    p.setdefault("judge", judge(p["question"], p["answer"], p["prediction"]))
                rec["judge_accuracy"] = sum(p["judge"] for p in rec["predictions"]) / max(len(rec["predictions"]), 1)
                write_json_atomic(path, rec, indent=1)
            records.append(rec)
            if progress is not None:
                progress(key, i + 1, len(passages))
    return records


def regrade(records: Sequence[dict], cut: Callable[[str], str]) -> list[dict]:
    """The records graded again, each prediction as `cut` leaves it.

    Answers are greedy, so a budget of N tokens answers with the first N tokens of a longer budget's
    answer: cutting a finished run's predictions at N tokens (`cut_at_tokens`) grades it as an
    N-token run would, without training or decoding again. A judge's verdicts were given on the
    whole prediction, so they are dropped.
    """
    return [{**rec, **_scored([graded(p["question"], p["answer"], cut(p["prediction"])) for p in rec["predictions"]])}
            for rec in records]


def cut_at_tokens(tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> Callable[[str], str]:
    """A text's first `max_tokens` tokens, as the model's tokenizer splits it."""
    def cut(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]).strip()
    return cut


def summarize(records: Sequence[dict], keys: Sequence[str]) -> list[dict]:
    """Per condition: micro accuracy (correct / questions), mean token F1, judge accuracy, passages, seconds."""
    rows = []
    for key in keys:
        recs = [r for r in records if r["condition"] == key]
        if not recs:
            continue
        preds = [p for r in recs for p in r["predictions"]]
        n = max(len(preds), 1)
        judged = [p["judge"] for p in preds if "judge" in p]
        rows.append({
            "condition": key, "passages": len(recs), "questions": len(preds),
            "accuracy": sum(p["correct"] for p in preds) / n, "f1": sum(p["f1"] for p in preds) / n,
            "judge_accuracy": sum(judged) / len(judged) if judged and len(judged) == len(preds) else None,
            "seconds": sum(r["seconds"] for r in recs),
            "junk_self_edits": sum(bool(r.get("self_edit_junk")) for r in recs),
        })
    return rows
