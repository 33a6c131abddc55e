"""Closed-book evaluation: ask each probe question with no passage in the prompt and grade the answer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .generator import Adapter, Generator
from .grade import graded
from .types import Probe

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Accuracy (normalized containment), mean token F1, and one record per probe."""

    accuracy: float
    f1: float
    predictions: list[dict] = field(default_factory=list)


def question_prompt(question: str) -> list[dict[str, str]]:
    """The serving format: one user message holding only the question (template's default system prompt)."""
    return [{"role": "user", "content": question}]


def evaluate_probes(
    generator: Generator,
    probes: Sequence[Probe],
    adapter: Adapter | None = None,
    *,
    max_tokens: int = 48,
    prompt: Callable[[str], list[dict[str, str]]] = question_prompt,
) -> EvalResult:
    """Greedy answers to `probes`, graded by containment and token F1: closed-book by default, or with
    whatever `prompt` puts around each question (the document in context: reading.reading_messages)."""
    return evaluate_probes_ways(generator, probes, (prompt,), adapter, max_tokens=max_tokens)[0]


def evaluate_probes_ways(
    generator: Generator,
    probes: Sequence[Probe],
    prompts: Sequence[Callable[[str], list[dict[str, str]]]],
    adapter: Adapter | None = None,
    *,
    max_tokens: int = 48,
) -> list[EvalResult]:
    """`evaluate_probes` once per prompt, all asked in one batch: a learn measures its probes closed-book
    and read in context on the same base weights, and one batch decodes both for about the time of one."""
    if not probes:
        return [EvalResult(accuracy=0.0, f1=0.0, predictions=[]) for _ in prompts]
    outs = generator.generate([prompt(p.question) for prompt in prompts for p in probes], temperature=0.0,
                              max_tokens=max_tokens, n=1, adapter=adapter)
    results = []
    for way in range(len(prompts)):
        records = []
        for probe, samples in zip(probes, outs[way * len(probes) : (way + 1) * len(probes)], strict=True):
            pred = samples[0].strip() if samples else ""
            records.append(graded(probe.question, probe.answer, pred))
        acc = sum(r["correct"] for r in records) / len(records)
        f1 = sum(r["f1"] for r in records) / len(records)
        results.append(EvalResult(accuracy=acc, f1=f1, predictions=records))
    return results
