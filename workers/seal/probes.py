"""Self-written probes: when a caller gives none, the model writes Q/A pairs grounded in the passage."""

from __future__ import annotations

import logging

from .generator import Generator
from .grade import normalize_answer
from .selfedit import PROMPTS, clean_question, split_sentences
from .types import Document, Probe

logger = logging.getLogger(__name__)

ANSWER_PROMPT = ("Passage: {text}\n\nAnswer the question using the passage, in as few words as possible.\n"
                 "Question: {question}")


def generate_probes(generator: Generator, doc: Document, n: int, *, seed: int = 1234) -> list[Probe]:
    """Write up to `n` probes: one question per sentence, answered with the passage in context, kept if grounded."""
    title = doc.title or "the passage"
    sentences = split_sentences(doc.text)
    if not sentences:
        return []
    # Questions are written per sentence (as in the chat-qa self-edit) but greedily and from a
    # different seed, so they are not the exact strings the candidate was trained on.
    q_prompts = [[{"role": "user", "content": PROMPTS["chat-qa"].format(title=title, sentence=s)}]
                 for s in sentences]
    per = 1  # one greedy question per sentence; sampling more cost ~10 s and kept few
    q_outs = generator.generate(q_prompts, temperature=0.7 if per > 1 else 0.0, max_tokens=32, n=per, seed=seed)
    questions: list[str] = []
    for samples in q_outs:
        for text in samples:
            q = clean_question(text)
            if q is not None and q not in questions:
                questions.append(q)
    if not questions:
        return []
    # With the passage in the prompt the 135M model answers ~75-80% of questions correctly (DESIGN.md);
    # the grounding filter below drops answers that are not literally in the passage.
    a_prompts = [[{"role": "user", "content": ANSWER_PROMPT.format(text=doc.text, question=q)}] for q in questions]
    a_outs = generator.generate(a_prompts, temperature=0.0, max_tokens=16, n=1)
    passage_n = f" {normalize_answer(doc.text)} "
    probes: list[Probe] = []
    for q, samples in zip(questions, a_outs, strict=True):
        answer = _short_answer(samples[0] if samples else "")
        a_n = normalize_answer(answer)
        if a_n and f" {a_n} " in passage_n and len(a_n.split()) <= 8 and a_n not in normalize_answer(q):
            probes.append(Probe(question=q, answer=answer))
    logger.info("self-written probes: %d of %d questions kept", len(probes), len(questions))
    return _spread(probes, n)


def _short_answer(text: str) -> str:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    for tag in ("Answer:", "A:"):
        if line.startswith(tag):
            line = line[len(tag):].strip()
    return line.rstrip(".").strip()


def _spread(probes: list[Probe], n: int) -> list[Probe]:
    # Keep at most n, preferring distinct answers so one fact does not dominate the score.
    seen, first, rest = set(), [], []
    for p in probes:
        key = normalize_answer(p.answer)
        (rest if key in seen else first).append(p)
        seen.add(key)
    return (first + rest)[:n]
