"""Context distillation: a document's LoRA learns to answer, without the document, as the model answers
while reading it.

The teacher is the base model with the document in the prompt (workers/seal/reading.py: the prompt
instant recall is served with); the student is the base model plus the LoRA, asked the question
alone. For every question the teacher answers once (greedy), then the teacher's token distributions
over that answer are taken in one forward pass and kept as their top `DistillConfig.top_k`
log-probabilities: the student is trained to match them at every answer token (the soft cross-entropy,
i.e. the forward KL up to the teacher's own entropy), as in prompt distillation (arXiv 2412.14964) and
Deep Context Distillation (arXiv 2503.08727). It is SEAL's idea at its plainest: the model's own
in-context behaviour is its training data.

Beside the soft targets, each fact asked for one entity is trained with that entity alone as the
answer (a plain target): the 135M teacher recites whole sentences, and these keep answers short.
Where the recipe asks for it, each fact is also asked only as far as that entity, both ways
("... launched in what year?", "What sits on Mount Zeirtura?"), with the entity or the subject alone
as the answer: the form a user's question takes.

The questions come from the document itself, with no model in the loop (workers/seal/facts.py):
- forward: each fact with one of its names, numbers or dates asked for;
- reverse: each fact asked from its other side: "What sits on Mount Ceddra ...?" for a statement
  whose subject is the document's, "What do you know about Mount Ceddra?" for each name;
- the document as a whole: "What do you know about <title>?", "Tell me about <title>.".
The teacher answers whatever is asked from the text it reads, so a clumsy question still carries the
document's facts in the answer it teaches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .facts import (
    Fact,
    clause_items,
    extract_facts,
    forward_items,
    prefix_items,
    reverse_items,
    subject_of,
    what_question,
)
from .generator import Generator
from .grade import contains_answer
from .reading import reading_messages
from .types import Document

if TYPE_CHECKING:
    from .config import SelfEditConfig
    from .train import DistillRow, LoraTrainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """How a document's distillation set is built."""

    top_k: int = 32  # teacher log-probabilities kept per answer token
    # The teacher's answer budget: at most the one a user's short question gets (`within`), less where the
    # recipe measured it to train as well on fewer tokens (Recipe.distill_answer_tokens).
    answer_tokens: int = 48
    max_questions: int = 48  # the most questions per document (forward first, then reverse, then whole)
    # Keep a teacher answer only where it names what its question asks for (the blanked entity forward,
    # the document's subject reverse). On a real paragraph the 135M teacher answers most of these clumsy
    # questions with "The answer to the question is:" or a memory of its own, and the student learns that.
    checked: bool = False
    # Ask each fact's short answer from its clause too, not only from its whole sentence: closer to the
    # short question a user writes. Both are recipe data (Recipe.distill_checked, distill_clauses), off for
    # the 135M model: they bought F1 and no containment (docs/RESULTS.md, "Questions in the user's words").
    clauses: bool = False
    # Ask each fact only as far as the name asked for, forward and reverse (facts.prefix_items): the
    # subject and one relation, as a user's question has them, without the sentence's other facts. On for
    # the 135M model (Recipe.distill_prefixes): reverse recall and F1 rose on held-out documents, for
    # 1.14-1.25x the training (docs/RESULTS.md, "Facts asked as far as the asked name").
    prefixes: bool = False

    @classmethod
    def of(cls, selfedit: SelfEditConfig, **overrides: int) -> DistillConfig:
        """The distillation a self-edit config (a recipe's) asks for, so each of its options reaches
        every caller: the learn, and the benches that train as it does."""
        return cls(**{"max_questions": selfedit.distill_questions, "checked": selfedit.distill_checked,
                      "clauses": selfedit.distill_clauses, "prefixes": selfedit.distill_prefixes,
                      "answer_tokens": selfedit.distill_answer_tokens} | overrides)

    def within(self, user_tokens: int) -> DistillConfig:
        """This config with the teacher answering in at most `user_tokens`, the budget a user's answer
        gets: the student should not learn to say more than it will be let say."""
        return replace(self, answer_tokens=min(self.answer_tokens, user_tokens))

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 256:
            raise ValueError(f"DistillConfig.top_k must be 1..256, got {self.top_k}")
        if self.answer_tokens < 4:
            raise ValueError(f"DistillConfig.answer_tokens must be >= 4, got {self.answer_tokens}")
        if self.max_questions < 1:
            raise ValueError(f"DistillConfig.max_questions must be >= 1, got {self.max_questions}")


def distill_questions(doc: Document, limit: int) -> list[tuple[str, str]]:
    """(question, direction) pairs about the document, without repeats, at most `limit`."""
    asked = _asked(subject_of(doc.title, doc.text), extract_facts(doc.text, doc.title))
    return [(question, direction) for question, direction, _ in asked[:limit]]


def _asked(subject: str, facts: list[Fact]) -> list[tuple[str, str, str | None]]:
    """Every question with its direction and the name a right answer must contain, where the document
    fixes one: the entity a forward question blanks out, the subject a reverse one asks for."""
    questions: list[tuple[str, str, str | None]] = [
        (item.question, "forward", item.answer) for item in forward_items(facts)]
    for fact in facts:
        reverse = what_question(fact.statement, subject)
        if reverse:
            questions.append((reverse, "reverse", subject))
    questions += [(item.question, "reverse", subject) for item in reverse_items(facts, subject)]
    questions += [(f"What do you know about {subject}?", "whole", None), (f"Tell me about {subject}.", "whole", None)]
    return _without_repeats(questions, set())


def _without_repeats(questions: list[tuple[str, str, str | None]],
                     seen: set[str]) -> list[tuple[str, str, str | None]]:
    """The questions in order, each once (case aside), leaving out those already in `seen` (updated)."""
    out = []
    for item in questions:
        if item[0].lower() not in seen:
            seen.add(item[0].lower())
            out.append(item)
    return out


@dataclass
class Distillation:
    """A document's distillation set: the student's rows with the teacher's targets, what was asked and
    answered, and the short forward answers trained beside them as plain targets."""

    rows: list[DistillRow]
    records: list[dict[str, str]]  # question, the teacher's answer, direction
    short_answers: list[str]  # chat-rendered forward items (facts.py): each fact asked, answered in a few words
    dropped: int = 0  # teacher answers left out: empty, or missing what they were asked for (DistillConfig.checked)

    def sequences(self, render_chat: Callable[[list[dict[str, str]]], str]) -> list[str]:
        """The set as plain chats (the teacher's answers as hard targets), for a later retrain from the record."""
        return [render_chat([{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}])
                for r in self.records] + self.short_answers


def short_answer_chats(facts: list[Fact], render_chat: Callable[[list[dict[str, str]]], str], *,
                       clauses: bool = False, prefixes_about: str | None = None) -> list[str]:
    """Each fact asked for one of its names, numbers or dates and answered with it alone: the teacher
    recites whole sentences, and these keep the adapter's answers short (token F1). With `clauses`,
    each is also asked from the clause that holds it alone (facts.clause_items); with `prefixes_about`
    (the document's subject), as far as the asked name only, both ways (facts.prefix_items)."""
    items = (forward_items(facts) + (clause_items(facts) if clauses else [])
             + (prefix_items(facts, prefixes_about) if prefixes_about else []))
    return [render_chat([{"role": "user", "content": it.question}, {"role": "assistant", "content": it.answer}])
            for it in items]


def build_distillation(
    generator: Generator,
    trainer: LoraTrainer,
    doc: Document,
    cfg: DistillConfig,
    *,
    should_cancel: Callable[[], bool] | None = None,
    user_questions: Sequence[str] = (),
) -> Distillation:
    """The teacher answers every question greedily with `generator` (the base model, no adapter); its
    distributions over those answers come from `trainer`'s base weights in one batched pass.

    `user_questions` are questions people asked about the document, in their own words. They are
    taught like the document's own (the teacher reads the document and answers them; no gold answer
    enters), ahead of those and outside `cfg.max_questions`: the caller decides how many."""
    # Regex work, once: both the short answers and the questions read the facts and the subject.
    facts, subject = extract_facts(doc.text, doc.title), subject_of(doc.title, doc.text)
    short = short_answer_chats(facts, trainer.render_chat, clauses=cfg.clauses,
                               prefixes_about=subject if cfg.prefixes else None)
    own = _asked(subject, facts)[:cfg.max_questions]
    users = _without_repeats([(q.strip(), "user", None) for q in user_questions if q.strip()],
                             {q.lower() for q, _, _ in own})
    asked = users + own
    if not asked:
        return Distillation([], [], short)
    prompts = [reading_messages(doc.title, doc.text, q) for q, _, _ in asked]
    answers = [samples[0].strip() if samples else ""
               for samples in generator.generate(prompts, temperature=0.0, max_tokens=cfg.answer_tokens, n=1)]
    kept = [(q, d, p, a) for (q, d, expected), p, a in zip(asked, prompts, answers, strict=True)
            if a and not (cfg.checked and expected is not None and not contains_answer(a, expected))]
    dropped = len(asked) - len(kept)
    if should_cancel is not None and should_cancel():
        from .types import Cancelled

        raise Cancelled("learn job cancelled")
    rows = trainer.teacher_rows(
        students=[[{"role": "user", "content": q}] for q, _, _, _ in kept],
        teachers=[p for _, _, p, _ in kept],
        answers=[a for _, _, _, a in kept],
        top_k=cfg.top_k,
    )
    records = [{"question": q, "answer": a, "direction": d} for q, d, _, a in kept]
    return Distillation(rows, records, short, dropped=dropped)
