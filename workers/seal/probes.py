"""Probes a learn is graded on when the caller gives none: the model's own questions, kept only when
they check out, else cloze items that mask one name, number or date.

A probe is only as good as its gold answer. The model is asked, for one name, number or date of a
sentence, which question the sentence answers with it; the question is kept when the base model,
with the passage in context, answers it with that entity, which becomes the gold answer, so it can be
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
from .selfedit import clean_question
from .types import Document, Probe

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
    checked = check_questions(generator, doc, facts, limit=QUESTIONS_PER_PROBE * n, seed=seed)
    kept = _spread([Probe(question=c.question, answer=c.gold) for c in checked if c.gold], n)
    source = "self-written"
    if len(kept) < min(MIN_SELF_WRITTEN, n):
        cloze = [p for p in cloze_probes(facts, n) if all(not _same_answer(p, k) for k in kept)]
        kept = (kept + cloze)[:n]
        source = "self-written+cloze" if any(c.gold for c in checked) else "cloze"
    logger.info("probes: %d kept (%s); %d of %d self-written questions checked out", len(kept), source,
                sum(1 for c in checked if c.gold), len(checked))
    record = {"source": source, "questions": [c.__dict__ for c in checked]}
    return kept, record


# A 135M model asked "write one question this sentence answers" writes "What is the answer to this
# question?" or "What is the purpose of X?" (5 of 43 checked out on the dev set, docgen documents and
# SQuAD paragraphs). Told which of the sentence's entities to ask for, and shown two worked examples
# about unrelated subjects, it writes the question a user would ask 3-5 times as often.
QUESTION_SHOTS = (
    ("The Brooklyn Bridge was opened in 1883 and spans the East River.", "the East River",
     "Which river does the Brooklyn Bridge span?"),
    ("Marie Curie was born in Warsaw and won the Nobel Prize in 1903.", "1903",
     "In what year did Marie Curie win the Nobel Prize?"),
)
QUESTION_PROMPT = 'Sentence: {sentence}\nAnswer: {answer}\nWrite the question this sentence answers with "{answer}".'
QUESTIONS_PER_PROBE = 6  # questions written per probe wanted: about one in four checks out on real text


def question_prompt(sentence: str, answer: str) -> list[dict[str, str]]:
    """The few-shot chat that asks for the question `sentence` answers with `answer`."""
    messages = []
    for shot_sentence, shot_answer, shot_question in QUESTION_SHOTS:
        messages += [{"role": "user", "content": QUESTION_PROMPT.format(sentence=shot_sentence, answer=shot_answer)},
                     {"role": "assistant", "content": shot_question}]
    return messages + [{"role": "user", "content": QUESTION_PROMPT.format(sentence=sentence, answer=answer)}]


def check_questions(generator: Generator, doc: Document, facts: list[Fact], *, limit: int = 24,
                    seed: int = 1234) -> list[CheckedQuestion]:
    """Ask for each entity of each statement in turn (at most `limit` questions, spread over the
    statements) and keep the questions the model answers, in context, with the entity asked for."""
    targets = _round_robin([[(f, e) for e in f.entities] for f in facts])[:limit]
    if not targets:
        return []
    # Greedy and from its own seed, so the questions are not strings any training sequence holds.
    q_outs = generator.generate([question_prompt(f.statement, e) for f, e in targets], temperature=0.0,
                                max_tokens=32, n=1, seed=seed)
    asked: list[tuple[str, Fact, str]] = []
    for (fact, entity), samples in zip(targets, q_outs, strict=True):
        q = clean_question(samples[0] if samples else "")
        if q is not None and all(q != other for other, _, _ in asked):
            asked.append((q, fact, entity))
    if not asked:
        return []
    a_prompts = [[{"role": "user", "content": ANSWER_PROMPT.format(text=doc.text, question=q)}] for q, _, _ in asked]
    a_outs = generator.generate(a_prompts, temperature=0.0, max_tokens=24, n=1)
    return [_check(q, fact, entity, samples[0].strip() if samples else "")
            for (q, fact, entity), samples in zip(asked, a_outs, strict=True)]


def _check(question: str, fact: Fact, entity: str, answer: str) -> CheckedQuestion:
    if not _about(question, fact):
        return CheckedQuestion(question, answer, None, "the question names nothing its sentence is about")
    if contains_answer(question, entity):
        return CheckedQuestion(question, answer, None, "the question already contains its answer")
    if not contains_answer(answer, entity):
        # Another of the sentence's entities is no gold answer: "What is the Bread Festival?" answered
        # "a 7-day festival" asks nothing that "7" answers.
        return CheckedQuestion(question, answer, None, "the in-context answer does not name the entity asked for")
    return CheckedQuestion(question, answer, entity, "answered in context")


def _round_robin(groups: list[list]) -> list:
    """The first item of every group, then every second one, ...: a cap keeps every statement."""
    return [g[depth] for depth in range(max((len(g) for g in groups), default=0)) for g in groups if depth < len(g)]


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
