"""One SEAL inner loop: self-edits -> one LoRA per candidate -> closed-book evaluation -> best candidate."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .config import EvalConfig, SelfEditConfig, TrainConfig
from .distill import DistillConfig, build_distillation
from .evaluate import evaluate_probes, evaluate_probes_ways, question_prompt
from .gate import new_facts_improved
from .generator import Adapter, Generator
from .probes import write_probes
from .reading import reading_messages
from .selfedit import build_training_sequences, format_qa, generate_self_edits, split_sentences
from .types import Cancelled, Document, Probe, ProbeSource

if TYPE_CHECKING:  # torch loads only when a trainer is actually built
    from .train import LoraTrainer

logger = logging.getLogger(__name__)

MAX_RETRY_EPOCHS = 50  # the request schema's own ceiling

Progress = Callable[[str, float, str, "dict | None"], None]


@dataclass
class CandidateResult:
    """One self-edit's trained adapter and its score on the probes."""

    index: int
    adapter_dir: str
    self_edit: str
    num_sequences: int
    train_loss: float  # the last epoch's mean
    train_seconds: float
    accuracy: float
    f1: float
    predictions: list[dict] = field(default_factory=list)  # per probe: question, answer, prediction, before
    sequences: list[str] = field(default_factory=list, repr=False)  # what it trained on, replay included
    recipe: str = ""  # format/epochs, for the job's metrics
    first_loss: float = float("nan")  # the first step's: beside train_loss, whether training learned at all


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
    probe_record: dict = field(default_factory=dict)  # how the probes were chosen (probes.write_probes)
    # The same probes answered by the base model reading the document (measure_reading): what the
    # adapter has to match to answer from its weights alone.
    accuracy_context: float | None = None
    f1_context: float | None = None
    context_predictions: list[dict] = field(default_factory=list)
    # Distillation only: how many teacher answers were taught, and how many left out (empty, or failing
    # DistillConfig.checked), so a job's metrics say when the teacher could not read its document.
    teacher: dict[str, int] = field(default_factory=dict)


def _fallback_edit(doc: Document, fmt: str) -> str:
    # When every sampled edit is junk, the passage itself still trains (calibrated at ~56-63%).
    title = doc.title or "the passage"
    if fmt in ("recite", "rewrite", "implications"):
        return format_qa([(f"What do you know about {title}?", doc.text.strip())]) if fmt == "recite" else ""
    return format_qa([(f"What do you know about {title}?", s) for s in split_sentences(doc.text)])


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
    measure_reading: bool = False,
    second_recipe: bool = True,
) -> LearnResult:
    """Run the inner loop on `doc` and return the best candidate adapter (saved under `workdir/cand-<i>`).

    The parent adapter is the "before" of the evaluation; with `warm_start` training also starts from it,
    otherwise from the base weights (the caller then passes every earlier sequence as replay). With
    `measure_reading`, the probes are also answered by the base model with the document in the prompt.
    With `second_recipe`, a candidate that does not raise its probes is followed by one more recipe
    (the facts format at twice the epochs) before the caller's gate sees it; without, it fails fast.

    The `distill` format trains on the base model's own answers while it reads the document
    (distill.py): the teacher answers are generated once, before the candidates train.
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
    probe_record: dict = {"source": ProbeSource.caller}
    if self_generated:
        report("generating", 0.4, "writing probe questions")
        t = time.perf_counter()
        probes, probe_record = write_probes(generator, doc, eval_cfg.num_probes)
        times["probes"] = time.perf_counter() - t
    distillation = None
    if selfedit_cfg.format == "distill":
        report("generating", 0.7, "the model reads the document and answers questions about it (the teacher)")
        t = time.perf_counter()
        distill_cfg = DistillConfig.of(selfedit_cfg).within(eval_cfg.max_tokens)
        distillation = build_distillation(generator, trainer, doc, distill_cfg, should_cancel=should_cancel)
        times["teacher"] = time.perf_counter() - t
    times["generating"] = time.perf_counter() - t0
    report("generating", 1.0, f"{len(edits)} self-edit(s), {len(probes)} probe(s)",
           {"self_edits": len(edits), "probes": len(probes), "probes_self_generated": self_generated,
            "probe_source": probe_record["source"],
            **({"teacher_answers": len(distillation.records), "teacher_dropped": distillation.dropped}
               if distillation is not None else {})})

    # --- training and evaluating ----------------------------------------------------------------
    render = trainer.render_chat
    plans = [(e, selfedit_cfg.format, train_cfg) for e in edits]
    parent = ("parent", parent_adapter_dir) if parent_adapter_dir else None
    init_dir = parent_adapter_dir if warm_start else None

    def train_and_score(index: int, edit: str, fmt: str, cfg: TrainConfig, of: int) -> CandidateResult:
        check()
        out = os.path.join(workdir, f"cand-{index}")
        t = time.perf_counter()

        def step(f: float) -> None:
            report("training", (index + f) / of, f"candidate {index + 1}/{of}")

        if fmt == "distill" and distillation is not None:
            plain = distillation.short_answers + list(replay_sequences)
            seqs = distillation.sequences(render) + list(replay_sequences)  # the record a retrain reads
            rows = distillation.rows + trainer.encode(plain, cfg.max_seq_len)
            res = trainer.train_rows(rows, cfg, out, init_adapter_dir=init_dir, should_stop=should_cancel,
                                     progress=step)
        else:
            seqs = build_training_sequences(doc, edit, fmt, render_chat=render) + list(replay_sequences)
            res = trainer.train_lora(seqs, cfg, out, init_adapter_dir=init_dir, should_stop=should_cancel,
                                     progress=step)
        times["training"] = times.get("training", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        check()
        ev = evaluate_probes(scorer, probes, adapter=(f"cand-{index}", out), max_tokens=eval_cfg.max_tokens)
        times["evaluating"] = times.get("evaluating", 0.0) + time.perf_counter() - t
        report("evaluating", (index + 1) / of, f"candidate {index + 1} accuracy {ev.accuracy:.2f}",
               {"candidate": index, "accuracy": ev.accuracy, "f1": ev.f1})
        return CandidateResult(index=index, adapter_dir=out, self_edit=edit, num_sequences=len(seqs),
                               train_loss=res.final_loss, train_seconds=res.seconds, accuracy=ev.accuracy,
                               f1=ev.f1, predictions=ev.predictions, sequences=seqs, recipe=f"{fmt}/{cfg.epochs}ep",
                               first_loss=res.first_loss)

    def read(question: str) -> list[dict[str, str]]:
        return reading_messages(doc.title, doc.text, question)

    t = time.perf_counter()
    reading = None
    if measure_reading and probes and parent is None:
        # Both are the base model's answers: one batch asks them closed-book and read in context.
        before, reading = evaluate_probes_ways(scorer, probes, (question_prompt, read),
                                               max_tokens=eval_cfg.max_tokens)
    else:
        before = evaluate_probes(scorer, probes, adapter=parent, max_tokens=eval_cfg.max_tokens)
    times["evaluating"] = time.perf_counter() - t
    results = [train_and_score(i, e, fmt, cfg, len(plans)) for i, (e, fmt, cfg) in enumerate(plans)]
    best = _best(results)
    if second_recipe and probes and not new_facts_improved(before.accuracy, best.accuracy):
        # One more recipe before a rejection: more epochs, and the facts format if that was not tried.
        fmt = "facts" if selfedit_cfg.format != "facts" else selfedit_cfg.format
        edit = generate_self_edits(generator, doc, SelfEditConfig(format="facts"))[0] if fmt != selfedit_cfg.format \
            else best.self_edit
        retry_cfg = replace(train_cfg, epochs=min(2 * train_cfg.epochs, MAX_RETRY_EPOCHS))
        report("training", 1.0, f"accuracy did not rise ({before.accuracy:.2f} -> {best.accuracy:.2f}); "
                                f"trying {fmt} for {retry_cfg.epochs} epochs")
        results.append(train_and_score(len(results), edit, fmt, retry_cfg, len(results) + 1))
        best = _best(results)
    for c in results:
        c.predictions = merge_predictions(before.predictions, c.predictions)
    if measure_reading and probes:
        if reading is None:
            t = time.perf_counter()
            check()
            reading = evaluate_probes(scorer, probes, max_tokens=eval_cfg.max_tokens, prompt=read)
            times["evaluating"] = times.get("evaluating", 0.0) + time.perf_counter() - t
        report("evaluating", 1.0, f"read in context: accuracy {reading.accuracy:.2f} (weights {best.accuracy:.2f})",
               {"accuracy_context": reading.accuracy, "f1_context": reading.f1})
    return LearnResult(
        best_adapter_dir=best.adapter_dir, best_index=best.index, candidates=results,
        accuracy_before=before.accuracy, accuracy_after=best.accuracy, f1_before=before.f1, f1_after=best.f1,
        train_loss=best.train_loss, probes=probes, probes_self_generated=self_generated,
        self_edits=[c.self_edit for c in results], training_sequences=best.sequences,
        new_sequences=best.sequences[: len(best.sequences) - len(replay_sequences)], stage_seconds=times,
        baseline_predictions=before.predictions, probe_record=probe_record,
        accuracy_context=reading.accuracy if reading else None, f1_context=reading.f1 if reading else None,
        context_predictions=reading.predictions if reading else [],
        teacher={"answers": len(distillation.records), "dropped": distillation.dropped} if distillation else {},
    )


def _best(results: list[CandidateResult]) -> CandidateResult:
    # Best accuracy, then F1 (a short right answer over a recitation holding it), then lower training loss.
    return max(results, key=lambda r: (r.accuracy, r.f1, -r.train_loss))


def merge_predictions(before: Sequence[dict], after: Sequence[dict]) -> list[dict]:
    """One record per probe with the parent's ("before") and the candidate's ("after") answer."""
    by_question = {(r["question"], r["answer"]): r for r in before}
    merged = []
    for r in after:
        b = by_question.get((r["question"], r["answer"]), {})
        merged.append({**r, "before": b.get("prediction"), "correct_before": b.get("correct"),
                       "f1_before": b.get("f1")})
    return merged
