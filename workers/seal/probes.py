"""Probes a learn is graded on when the caller gives none: the model's own questions, kept only when
they check out, else cloze items that mask one name, number or date.

A probe is only as good as its gold answer. A self-written question is kept when the base model,
with the passage in context, answers it with a name, number or date that the passage states in
the sentence the question was written from; that entity becomes the gold answer, so it can be
graded by containment and token F1 alike. When fewer than `MIN_SELF_WRITTEN` survive, entity cloze
probes fill the rest: a sentence with one entity masked is gradeable by construction, unlike a
sentence cut before its last two words ("... which is 1.8 ..." -> "kilometers long").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .facts import Fact, cloze_probes, extract_facts
from .generator import Generator
from .grade import contains_answer, normalize_answer
from .selfedit import PROMPTS, clean_question
from .types import Document, Probe, ProbeSource

logger = logging.getLogger(__name__)

ANSWER_PROMPT = ("Passage: {text}\n\nAnswer the question using the passage, in as few words as possible.\n"
                 "Question: {question}")
MIN_SELF_WRITTEN = 3  # below this, cloze probes fill the set: 1-2 questions cannot tell learning from luck


@dataclass(frozen=True)
class CheckedQuestion:
    """One self-written question, the base model's in-context answer, and whether it checked out."""

    question: str
    in_context_answer: str
    gold: str | None  # the entity that answer named; None when the question was dropped
    reason: str


def write_probes(generator: Generator, doc: Document, n: int, *, seed: int = 1234) -> tuple[list[Probe], dict]:
    """Up to `n` probes for `doc` and a record of how they were chosen (kept in the job's metrics)."""
    facts = extract_facts(doc.text, doc.title)
    checked = check_questions(generator, doc, facts, seed=seed)
    kept = _spread([Probe(question=c.question, answer=c.gold) for c in checked if c.gold], n)
    source = ProbeSource.self_written
    if len(kept) < min(MIN_SELF_WRITTEN, n):
        cloze = [p for p in cloze_probes(facts, n) if all(not _same_answer(p, k) for k in kept)]
        kept = (kept + cloze)[:n]
        source = ProbeSource.self_written_cloze if any(c.gold for c in checked) else ProbeSource.cloze
    logger.info("probes: %d kept (%s); %d of %d self-written questions checked out", len(kept), source,
                sum(1 for c in checked if c.gold), len(checked))
    record = {"source": source, "questions": [c.__dict__ for c in checked]}
    return kept, record


def check_questions(generator: Generator, doc: Document, facts: list[Fact], *, seed: int = 1234) -> list[CheckedQuestion]:
    """Write one question per statement and keep those the model answers, in context, with its entity."""
    title = doc.title or "the passage"
    usable = [f for f in facts if f.entities]
    if not usable:
        return []
    # Greedy and from its own seed, so the questions are not strings any training sequence holds.
    q_prompts = [[{"role": "user", "content": PROMPTS["chat-qa"].format(title=title, sentence=f.statement)}]
                 for f in usable]
    q_outs = generator.generate(q_prompts, temperature=0.0, max_tokens=32, n=1, seed=seed)
    asked: list[tuple[str, Fact]] = []
    for fact, samples in zip(usable, q_outs, strict=True):
        q = clean_question(samples[0] if samples else "")
        if q is not None and all(q != other for other, _ in asked):
            asked.append((q, fact))
    if not asked:
        return []
    a_prompts = [[{"role": "user", "content": ANSWER_PROMPT.format(text=doc.text, question=q)}] for q, _ in asked]
    a_outs = generator.generate(a_prompts, temperature=0.0, max_tokens=24, n=1)
    return [_check(q, fact, samples[0].strip() if samples else "") for (q, fact), samples in zip(asked, a_outs,
                                                                                                strict=True)]


def _check(question: str, fact: Fact, answer: str) -> CheckedQuestion:
    if not _about(question, fact):
        return CheckedQuestion(question, answer, None, "the question names nothing its sentence is about")
    named = [e for e in fact.entities if contains_answer(answer, e)]
    if not named:
        return CheckedQuestion(question, answer, None, "the in-context answer names none of the sentence's entities")
    gold = named[0]
    if contains_answer(question, gold):
        return CheckedQuestion(question, answer, None, "the question already contains its answer")
    return CheckedQuestion(question, answer, gold, "answered in context")


def _about(question: str, fact: Fact) -> bool:
    """A question must share a content word with its sentence: "What is the answer to this question?"
    can be answered in context by naming anything, and closed-book by nothing."""
    def words(text: str) -> set[str]:
        return {w for w in normalize_answer(text).split() if len(w) > 3}

    return bool(words(question) & (words(fact.statement) - {w for e in fact.entities for w in words(e)}))


def _same_answer(a: Probe, b: Probe) -> bool:
    return normalize_answer(a.answer) == normalize_answer(b.answer)


def _spread(probes: list[Probe], n: int) -> list[Probe]:
    # Keep at most n, preferring distinct answers so one fact does not dominate the score.
    seen, first, rest = set(), [], []
    for p in probes:
        key = normalize_answer(p.answer)
        (rest if key in seen else first).append(p)
        seen.add(key)
    return (first + rest)[:n]
