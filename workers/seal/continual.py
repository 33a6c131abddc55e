"""Continual learning into one adapter stream: replay, the forgetting gate, consolidation.

Each published version carries the stream's memory (`StreamMemory`, kept in its seal.json):
- every training sequence the stream absorbed: replayed into later versions, and the whole
  corpus a consolidation retrains on;
- the probes of every absorbed document: what the gate re-asks to catch forgetting;
- that version's own graded answers to the probes it was gated on, so the next gate's
  "before" numbers cost no decoding.

Nothing here knows about the registry or the queue; workers/jobs.py and bench/continual.py
drive these functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from .config import TrainConfig
from .evaluate import EvalResult, evaluate_probes
from .facts import split_sentences
from .gate import GateDecision, decide
from .generator import Adapter, Generator
from .grade import contains_answer
from .inner import Progress
from .runfiles import write_json_atomic
from .types import Probe

if TYPE_CHECKING:
    from .train import LoraTrainer

logger = logging.getLogger(__name__)

CANARY_MAX_TOKENS = 48  # canary answers are a word or two; the base model states them in one sentence
ANCHOR_MAX_TOKENS = 96


@dataclass
class GateConfig:
    """Margins of the forgetting gate (see gate.decide)."""

    old_margin: float = 0.10  # accuracy drop allowed on earlier documents' probes
    canary_margin: float = 0.05  # accuracy drop allowed on the canary set vs the base model (1 of 24)
    max_old_probes: int = 32  # earlier probes re-asked per gate; above this a fixed-seed sample
    max_tokens: int = 48  # answer budget for document probes: what a user gets (as EvalConfig.max_tokens)
    enabled: bool = True  # False only for ablations (bench/continual.py): every candidate publishes


@dataclass
class ReplayConfig:
    """How many earlier training sequences join each new training run."""

    ratio: float = 8.0  # replayed sequences per new sequence
    max_sequences: int = 64
    anchors: int = 8  # base-model answers to general prompts mixed into every run (see anchor_sequences)

    def count(self, new_sequences: int, available: int) -> int:
        return min(available, self.max_sequences, math.ceil(self.ratio * max(new_sequences, 1)))


def probe_key(question: str, answer: str) -> str:
    return hashlib.sha1(f"{question}\0{answer}".encode()).hexdigest()[:16]


@dataclass
class StreamMemory:
    """What an adapter stream has absorbed, carried from each version to the next."""

    sequences: list[str] = field(default_factory=list)  # oldest first
    probes: list[dict[str, str]] = field(default_factory=list)  # {"question", "answer", "document"}
    results: dict[str, bool] = field(default_factory=dict)  # probe_key -> this version answered correctly
    documents: list[str] = field(default_factory=list)  # titles (or "" when untitled), oldest first
    since_consolidation: int = 0  # documents absorbed since the last consolidation

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StreamMemory:
        if not data:
            return cls()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replay(self, new_sequences: int, cfg: ReplayConfig, *, seed: int) -> list[str]:
        """A fixed-seed sample of earlier sequences, sized by the replay ratio."""
        n = cfg.count(new_sequences, len(self.sequences))
        if n <= 0:
            return []
        if n >= len(self.sequences):
            return list(self.sequences)
        return random.Random(seed).sample(self.sequences, n)

    def old_probes(self, cfg: GateConfig, *, seed: int) -> list[Probe]:
        probes = [Probe(question=p["question"], answer=p["answer"]) for p in self.probes]
        if len(probes) > cfg.max_old_probes:
            probes = random.Random(seed).sample(probes, cfg.max_old_probes)
        return probes

    def absorb(self, *, title: str | None, probes: Sequence[Probe], sequences: Sequence[str],
               results: dict[str, bool]) -> StreamMemory:
        """The memory of the version that has learned one more document."""
        return StreamMemory(
            sequences=self.sequences + list(sequences),
            probes=self.probes + [{"question": p.question, "answer": p.answer, "document": title or ""}
                                  for p in probes],
            results=dict(results),
            documents=self.documents + [title or ""],
            since_consolidation=self.since_consolidation + 1,
        )


def load_canary(path: str | None = None) -> list[Probe]:
    """The canary set: general questions the base model answers correctly (workers/seal/data/canary.jsonl).

    Built by asking SmolLM2-135M-Instruct 48 general-knowledge questions greedily and keeping 24 it
    answered correctly; a different base model should ship its own file (pass `path`).
    """
    if path is None:
        text = resources.files("workers.seal").joinpath("data/canary.jsonl").read_text()
    else:
        with open(path) as fh:
            text = fh.read()
    return [Probe(**json.loads(line)) for line in text.splitlines() if line.strip()]


def anchor_sequences(generator: Generator, render_chat: Any, *, cache_file: str | None = None,
                     model_id: str = "") -> list[str]:
    """Self-distillation anchors: the base model's own greedy answers to general prompts, as chat.

    Trained beside every new document, they keep the adapter answering general questions the way the
    base model does (pseudo-rehearsal). Without them a 10-epoch passage adapter answered everything
    by reciting its passage: canary accuracy fell from 24/24 to 8/24. The prompts
    (data/anchor_prompts.jsonl) are disjoint from the canary set, which stays a held-out check.

    A prompt with an `answer` keeps its anchor only if the base model got it right: rehearsing the
    base model's mistakes teaches them as patterns (its non-answer to "What is the capital of
    Portugal?" became the adapter's answer to every "capital of" canary question).
    Generated once per base model and prompt file, and cached in `cache_file`.
    """
    text = resources.files("workers.seal").joinpath("data/anchor_prompts.jsonl").read_text()
    prompts_digest = anchor_prompts_digest()
    for path in (cache_file, packaged_anchor_file(model_id)):
        if path and os.path.exists(path):
            with open(path) as fh:
                cached = json.load(fh)
            # The packaged set names the model by its id (directory basename), a cache by its path.
            if cached.get("model") in (model_id, model_key(model_id)) and cached.get("prompts") == prompts_digest:
                return list(cached["sequences"])
    items = [json.loads(line) for line in text.splitlines() if line.strip()]
    outs = generator.generate([[{"role": "user", "content": item["prompt"]}] for item in items], temperature=0.0,
                              max_tokens=ANCHOR_MAX_TOKENS, n=1, adapter=None)
    sequences = []
    for item, samples in zip(items, outs, strict=True):
        answer = _whole_sentences(samples[0].strip() if samples else "")
        if "answer" in item:
            # A factual anchor rehearses the short answer, not the essay after it: the first sentence
            # that holds the answer is the behaviour to keep, and it trains in a fraction of the tokens.
            answer = next((s for s in split_sentences(answer) if contains_answer(s, item["answer"])), "")
        if answer and ("answer" not in item or contains_answer(answer, item["answer"])):
            sequences.append(render_chat([{"role": "user", "content": item["prompt"]},
                                          {"role": "assistant", "content": answer}]))
    if cache_file:
        os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
        write_json_atomic(cache_file, {"model": model_id, "prompts": prompts_digest, "sequences": sequences})
    logger.info("anchor set: %d of %d base-model answers to general prompts kept", len(sequences), len(items))
    return sequences


def anchor_prompts_digest() -> str:
    text = resources.files("workers.seal").joinpath("data/anchor_prompts.jsonl").read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_key(model_path: str) -> str:
    return os.path.basename(os.path.normpath(model_path)) if model_path else ""


def packaged_anchor_file(model_path: str) -> str | None:
    """The anchor set shipped for a model (`data/anchors/<model id>.json`): the bundled model's own
    greedy answers, generated once by `anchor_sequences`, so a fresh worker does not spend minutes
    regenerating them. Used only while the prompt file it was made from is unchanged."""
    name = model_key(model_path)
    if not name:
        return None
    return str(resources.files("workers.seal").joinpath(f"data/anchors/{name}.json"))


def _whole_sentences(text: str) -> str:
    """Drop a trailing sentence the token budget cut off, so anchors never teach stopping mid-thought."""
    end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
    if text.endswith((".", "!", "?")) or end < 0:
        return text
    return text[: end + 1]


def sample_anchors(anchors: Sequence[str], n: int, *, seed: int) -> list[str]:
    if n <= 0 or not anchors:
        return []
    return list(anchors) if n >= len(anchors) else random.Random(seed).sample(list(anchors), n)


_base_canary: dict[int, EvalResult] = {}


def base_canary(scorer: Generator, canary: Sequence[Probe]) -> EvalResult:
    """The base model's canary score, computed once per scorer (it never changes)."""
    key = id(scorer)
    if key not in _base_canary:
        _base_canary[key] = evaluate_probes(scorer, canary, adapter=None, max_tokens=CANARY_MAX_TOKENS)
    return _base_canary[key]


@dataclass
class GateReport:
    """The decision plus everything it was judged on."""

    decision: GateDecision
    results: dict[str, bool]  # the candidate's graded answers: the next version's cached "before"
    old_predictions: list[dict] = field(default_factory=list)
    canary_predictions: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.decision.accepted, "reasons": self.decision.reasons,
                "numbers": self.decision.numbers, "seconds": round(self.seconds, 2),
                "old_predictions": self.old_predictions[:32], "canary_predictions": self.canary_predictions}


def _accuracy(records: Sequence[dict]) -> float:
    return sum(r["correct"] for r in records) / len(records) if records else 0.0


def gate_candidate(
    *,
    scorer: Generator,
    candidate: Adapter,
    parent: Adapter | None,
    memory: StreamMemory,
    canary: Sequence[Probe],
    cfg: GateConfig,
    new_before: float | None,
    new_after: float | None,
    new_predictions: Sequence[dict] = (),
    seed: int = 0,
    old_unrouted: Sequence[bool] = (),
    canary_through: Callable[[Probe], bool] | None = None,
) -> GateReport:
    """Judge a candidate on the new document (given), earlier documents' probes and the canary set.

    Earlier probes are compared with the parent version (cached answers where it has them);
    the canary set is compared with the base model, so small drops cannot compound version
    after version.

    Behind a router (a knowledge base's shard) a question reaches the candidate only when the
    router sends it there: `old_unrouted` are the cached verdicts of sampled earlier probes that
    go elsewhere (they count, unchanged, in both accuracies), and `canary_through(probe)` says
    which canary questions reach the candidate; the rest keep the base model's answers.
    """
    t0 = time.perf_counter()
    old = memory.old_probes(cfg, seed=seed)
    old_after = evaluate_probes(scorer, old, adapter=candidate, max_tokens=cfg.max_tokens) if old else None
    old_before = None
    if old:
        missing = [p for p in old if probe_key(p.question, p.answer) not in memory.results]
        fresh = (evaluate_probes(scorer, missing, adapter=parent, max_tokens=cfg.max_tokens).predictions
                 if missing and parent is not None else [])
        before_by_key = {probe_key(r["question"], r["answer"]): r["correct"] for r in fresh}
        before_by_key.update(memory.results)
        old_before = sum(before_by_key.get(probe_key(p.question, p.answer), False) for p in old) / len(old)
    old_after_acc = old_after.accuracy if old_after else None
    if old_unrouted:
        n, fixed = len(old) + len(old_unrouted), sum(old_unrouted)
        old_before = ((old_before or 0.0) * len(old) + fixed) / n
        old_after_acc = ((old_after_acc or 0.0) * len(old) + fixed) / n
    # A margin of 1 allows any drop, so the canary set cannot change the verdict; decoding it twice
    # (base and candidate) is most of a small learn's evaluation time on a CPU.
    canary = canary if cfg.canary_margin < 1 else ()
    canary_before = base_canary(scorer, canary) if canary else None
    canary_after_acc: float | None = None
    canary_predictions: list[dict] = []
    if canary:
        asked = [p for p in canary if canary_through(p)] if canary_through is not None else list(canary)
        after = evaluate_probes(scorer, asked, adapter=candidate, max_tokens=CANARY_MAX_TOKENS) if asked else None
        canary_predictions = after.predictions if after else []
        by_question = {r["question"]: bool(r["correct"]) for r in canary_before.predictions}
        by_question.update({r["question"]: bool(r["correct"]) for r in canary_predictions})
        canary_after_acc = sum(by_question.values()) / len(by_question)
    decision = decide(
        new_before=new_before, new_after=new_after,
        old_before=old_before, old_after=old_after_acc,
        canary_before=canary_before.accuracy if canary_before else None,
        canary_after=canary_after_acc,
        # The margins are fractions of the questions asked, never widened to "at least one probe":
        # evaluation noise is answered by asking more questions (max_old_probes), not by a wider gate.
        old_margin=cfg.old_margin, canary_margin=cfg.canary_margin,
    )
    if not cfg.enabled and not decision.accepted:
        decision = GateDecision(accepted=True, reasons=["gate disabled; would have rejected: "
                                                        + "; ".join(decision.reasons)], numbers=decision.numbers)
    graded = list(new_predictions) + (old_after.predictions if old_after else [])
    results = {probe_key(r["question"], r["answer"]): bool(r["correct"]) for r in graded}
    return GateReport(decision=decision, results=results,
                      old_predictions=old_after.predictions if old_after else [],
                      canary_predictions=canary_predictions,
                      seconds=time.perf_counter() - t0)


@dataclass
class ConsolidationResult:
    adapter_dir: str
    report: GateReport
    train_loss: float
    train_seconds: float
    sequences: int


def consolidate(
    *,
    trainer: LoraTrainer,
    scorer: Generator,
    memory: StreamMemory,
    parent: Adapter | None,
    canary: Sequence[Probe],
    train_cfg: TrainConfig,
    gate_cfg: GateConfig,
    workdir: str,
    anchors: Sequence[str] = (),
    progress: Progress | None = None,
    should_cancel: Any = None,
    old_unrouted: Sequence[bool] = (),
    canary_through: Callable[[Probe], bool] | None = None,
) -> ConsolidationResult:
    """"Sleep": train a fresh adapter from the base weights on everything the stream absorbed.

    Sequential warm-started versions drift; one run over the whole corpus gives every document
    the same weight. The result faces the same forgetting gate (no new document to improve on).
    """
    if not memory.sequences:
        raise ValueError("nothing to consolidate: the stream has absorbed no documents")
    out = os.path.join(os.path.abspath(workdir), "consolidated")
    report_stage = progress or (lambda *_: None)
    res = trainer.train_lora(list(memory.sequences) + list(anchors), train_cfg, out, init_adapter_dir=None,
                             progress=lambda f: report_stage("training", f, "consolidating", None),
                             should_stop=should_cancel)
    report_stage("evaluating", 0.0, "gating the consolidated version", None)
    report = gate_candidate(scorer=scorer, candidate=("consolidated", out), parent=parent, memory=memory,
                            canary=canary, cfg=gate_cfg, new_before=None, new_after=None,
                            old_unrouted=old_unrouted, canary_through=canary_through)
    return ConsolidationResult(adapter_dir=out, report=report, train_loss=res.final_loss,
                               train_seconds=res.seconds, sequences=len(memory.sequences))
