"""One SEAL inner loop: self-edits -> one LoRA per candidate -> closed-book evaluation -> best candidate."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import EvalConfig, SelfEditConfig, TrainConfig
from .evaluate import EvalResult, evaluate_probes
from .generator import Adapter, Generator
from .probes import generate_probes
from .selfedit import build_training_sequences, format_qa, generate_self_edits, split_sentences
from .types import Cancelled, Document, Probe

if TYPE_CHECKING:  # torch loads only when a trainer is actually built
    from .train import LoraTrainer

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, str, "dict | None"], None]


@dataclass
class CandidateResult:
    """One self-edit's trained adapter and its score on the probes."""

    index: int
    adapter_dir: str
    self_edit: str
    num_sequences: int
    train_loss: float
    train_seconds: float
    accuracy: float
    f1: float
    predictions: list[dict] = field(default_factory=list)


@dataclass
class LearnResult:
    """Everything a learn job needs to gate, publish and explain a new adapter version."""

    best_adapter_dir: str
    best_index: int
    candidates: list[CandidateResult]
    accuracy_before: float
    accuracy_after: float
    f1_before: float
    f1_after: float
    train_loss: float
    probes: list[Probe]
    probes_self_generated: bool
    self_edits: list[str]
    training_sequences: list[str]  # what the best candidate trained on, replay included
    new_sequences: list[str]  # the part that came from this document
    stage_seconds: dict[str, float]
    baseline_predictions: list[dict] = field(default_factory=list)


def _fallback_edit(doc: Document, fmt: str) -> str:
    # When every sampled edit is junk, the passage itself still trains (calibrated at ~56-63%).
    title = doc.title or "the passage"
    if fmt in ("recite", "rewrite", "implications"):
        return format_qa([(f"What do you know about {title}?", doc.text.strip())]) if fmt == "recite" else ""
    return format_qa([(f"What do you know about {title}?", s) for s in split_sentences(doc.text)])


def _fallback_probes(doc: Document) -> list[Probe]:
    # No usable self-written probe: ask for each sentence's continuation from its first words.
    probes = []
    for s in split_sentences(doc.text):
        words = s.rstrip(".!?").split()
        if len(words) >= 6:
            probes.append(Probe(question=f"Complete the sentence: {' '.join(words[:-2])} ...",
                                answer=" ".join(words[-2:])))
    return probes


def learn_document(
    *,
    generator: Generator,
    trainer: LoraTrainer,
    doc: Document,
    selfedit_cfg: SelfEditConfig,
    train_cfg: TrainConfig,
    workdir: str,
    eval_cfg: EvalConfig | None = None,
    parent_adapter_dir: str | None = None,
    warm_start: bool = True,
    replay_sequences: Sequence[str] = (),
    policy_adapter: Adapter | None = None,
    eval_generator: Generator | None = None,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> LearnResult:
    """Run the inner loop on `doc` and return the best candidate adapter (saved under `workdir/cand-<i>`).

    The parent adapter is the "before" of the evaluation; with `warm_start` training also starts from it,
    otherwise from the base weights (the caller then passes every earlier sequence as replay).
    """
    eval_cfg = eval_cfg or EvalConfig()
    scorer = eval_generator or generator
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    times: dict[str, float] = {}

    def report(stage: str, frac: float, msg: str, data: dict | None = None) -> None:
        logger.info("[%s %.0f%%] %s", stage, 100 * frac, msg)
        if progress is not None:
            progress(stage, frac, msg, data)

    def check() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("learn job cancelled")

    # --- generating -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    check()
    report("generating", 0.0, f"sampling {selfedit_cfg.k} self-edit(s) ({selfedit_cfg.format})")
    edits = generate_self_edits(generator, doc, selfedit_cfg, policy_adapter=policy_adapter)
    if not edits:
        logger.warning("all self-edits were junk; falling back to the passage's own sentences")
        edits = [_fallback_edit(doc, selfedit_cfg.format)]
    check()
    probes = list(doc.probes)
    self_generated = not probes
    if self_generated:
        report("generating", 0.5, "writing probe questions")
        probes = generate_probes(generator, doc, eval_cfg.num_probes) or _fallback_probes(doc)
    times["generating"] = time.perf_counter() - t0
    report("generating", 1.0, f"{len(edits)} self-edit(s), {len(probes)} probe(s)",
           {"self_edits": len(edits), "probes": len(probes), "probes_self_generated": self_generated})

    # --- training ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    render = trainer.render_chat
    seq_sets = [build_training_sequences(doc, e, selfedit_cfg.format, render_chat=render) + list(replay_sequences)
                for e in edits]
    trained = []
    for i, seqs in enumerate(seq_sets):
        check()
        out = os.path.join(workdir, f"cand-{i}")

        def on_step(frac: float, i: int = i) -> None:
            report("training", (i + frac) / len(seq_sets), f"candidate {i + 1}/{len(seq_sets)}")

        res = trainer.train_lora(seqs, train_cfg, out, init_adapter_dir=parent_adapter_dir if warm_start else None,
                                 progress=on_step, should_stop=should_cancel)
        trained.append((out, res))
    times["training"] = time.perf_counter() - t0
    report("training", 1.0, f"trained {len(trained)} candidate(s)")

    # --- evaluating -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    check()
    parent = ("parent", parent_adapter_dir) if parent_adapter_dir else None
    before = evaluate_probes(scorer, probes, adapter=parent, max_tokens=eval_cfg.max_tokens)
    report("evaluating", 1 / (len(trained) + 1), f"baseline accuracy {before.accuracy:.2f}")
    results: list[CandidateResult] = []
    for i, (out, res) in enumerate(trained):
        check()
        ev: EvalResult = evaluate_probes(scorer, probes, adapter=(f"cand-{i}", out), max_tokens=eval_cfg.max_tokens)
        results.append(CandidateResult(index=i, adapter_dir=out, self_edit=edits[i], num_sequences=len(seq_sets[i]),
                                       train_loss=res.final_loss, train_seconds=res.seconds, accuracy=ev.accuracy,
                                       f1=ev.f1, predictions=ev.predictions))
        report("evaluating", (i + 2) / (len(trained) + 1), f"candidate {i + 1} accuracy {ev.accuracy:.2f}",
               {"candidate": i, "accuracy": ev.accuracy, "f1": ev.f1})
    times["evaluating"] = time.perf_counter() - t0
    # Best accuracy; ties go to the lower training loss (the edit the adapter absorbed best).
    best = max(results, key=lambda r: (r.accuracy, -r.train_loss))
    return LearnResult(
        best_adapter_dir=best.adapter_dir, best_index=best.index, candidates=results,
        accuracy_before=before.accuracy, accuracy_after=best.accuracy, f1_before=before.f1, f1_after=best.f1,
        train_loss=best.train_loss, probes=probes, probes_self_generated=self_generated, self_edits=edits,
        training_sequences=seq_sets[best.index],
        new_sequences=seq_sets[best.index][: len(seq_sets[best.index]) - len(replay_sequences)], stage_seconds=times, baseline_predictions=before.predictions,
    )
