"""Context distillation's training set: questions from the document, the teacher reading it, its targets."""

from pathlib import Path

import pytest

from tests.conftest import TRAIN_THREADS
from workers.seal.distill import DistillConfig, build_distillation, distill_questions, short_answer_chats
from workers.seal.facts import extract_facts
from workers.seal.types import Document

MODEL = Path(__file__).resolve().parents[2] / "data" / "models" / "SmolLM2-135M-Instruct"
DOC = Document(title="Varnholt Observatory", text=(
    "The Varnholt Observatory sits on Mount Ceddra, 2,940 meters above the town of Lissemark. It was completed "
    "in 1987 and named after the astronomer Ilse Varnholt."), probes=[])


def test_questions_ask_each_fact_forward_and_from_its_other_side():
    questions = distill_questions(DOC, 48)
    by = {d: [q for q, kind in questions if kind == d] for d in ("forward", "reverse", "whole")}
    assert "The Varnholt Observatory sits on what, 2,940 meters above the town of Lissemark?" in by["forward"]
    assert "Varnholt Observatory was completed in what year and named after the astronomer Ilse Varnholt?" in by["forward"]
    # The statement asked from its other side names the place, not the observatory: the answer is the subject.
    assert "What sits on Mount Ceddra, 2,940 meters above the town of Lissemark?" in by["reverse"]
    assert "What do you know about Lissemark?" in by["reverse"]
    assert by["whole"] == ["What do you know about Varnholt Observatory?", "Tell me about Varnholt Observatory."]
    assert len({q.lower() for q, _ in questions}) == len(questions)
    assert distill_questions(DOC, 3) == questions[:3]


def test_short_answers_are_also_asked_as_far_as_the_asked_name_where_asked_to():
    facts = extract_facts(DOC.text, DOC.title)

    def render(chat: list[dict[str, str]]) -> str:
        return " | ".join(m["content"] for m in chat)

    plain = short_answer_chats(facts, render)
    cut = short_answer_chats(facts, render, prefixes_about="Varnholt Observatory")
    assert cut[: len(plain)] == plain  # the whole-sentence items stay, first
    assert "The Varnholt Observatory sits on what? | Mount Ceddra" in cut[len(plain):]
    assert "What sits on Mount Ceddra? | Varnholt Observatory" in cut[len(plain):]


def test_the_distillation_is_the_one_a_self_edit_config_asks_for():
    from workers.seal.config import SelfEditConfig

    cfg = DistillConfig.of(SelfEditConfig(format="distill", distill_questions=12, distill_checked=True,
                                          distill_prefixes=True), answer_tokens=32)
    assert (cfg.max_questions, cfg.checked, cfg.clauses, cfg.prefixes, cfg.answer_tokens) == (12, True, False, True, 32)
    assert DistillConfig.of(SelfEditConfig(format="distill", distill_answer_tokens=24)).answer_tokens == 24


def test_the_teacher_never_answers_in_more_tokens_than_a_user_gets():
    assert DistillConfig(answer_tokens=24).within(48).answer_tokens == 24
    assert DistillConfig(answer_tokens=48).within(16).answer_tokens == 16


def test_config_bounds():
    with pytest.raises(ValueError, match="top_k"):
        DistillConfig(top_k=0)
    with pytest.raises(ValueError, match="max_questions"):
        DistillConfig(max_questions=0)


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_the_teacher_reads_the_document_and_every_answer_becomes_a_row():
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(MODEL), num_threads=TRAIN_THREADS)
    cfg = DistillConfig(top_k=4, answer_tokens=24, max_questions=4)
    distillation = build_distillation(HFGenerator(trainer), trainer, DOC, cfg)
    assert len(distillation.rows) == len(distillation.records) == 4
    assert all(r["answer"] for r in distillation.records)
    # Reading the passage, the teacher answers from it (the 135M teacher spells "Ceddra" "Cedra" here).
    assert "2,940 meters above the town" in distillation.records[0]["answer"]
    for ids, labels, top_ids, _ in distillation.rows:
        assert top_ids.shape == (sum(label != -100 for label in labels), 4)
        assert "Passage" not in trainer.tokenizer.decode(ids)  # the student never sees the document
    assert distillation.short_answers and "2,940 meters" in distillation.short_answers[1]
    assert len(distillation.sequences(trainer.render_chat)) == 4 + len(distillation.short_answers)


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_a_checked_teacher_keeps_only_answers_that_name_what_was_asked():
    from workers.seal.facts import extract_facts, forward_items
    from workers.seal.grade import contains_answer
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(MODEL), num_threads=TRAIN_THREADS)
    cfg = DistillConfig(top_k=4, answer_tokens=24, max_questions=6, checked=True)
    distillation = build_distillation(HFGenerator(trainer), trainer, DOC, cfg)
    entity = {it.question: it.answer for it in forward_items(extract_facts(DOC.text, DOC.title))}
    forward = [r for r in distillation.records if r["direction"] == "forward"]
    assert forward and all(contains_answer(r["answer"], entity[r["question"]]) for r in forward)
    # Reading, the teacher names "Mount Cedra" where the document says "Mount Ceddra": that answer is left out.
    assert distill_questions(DOC, 1)[0][0] not in {r["question"] for r in distillation.records}
    assert distillation.dropped >= 1 and len(distillation.records) + distillation.dropped == 6
    assert len(distillation.rows) == len(distillation.records)


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_users_questions_are_read_and_taught_first_without_repeats():
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(MODEL), num_threads=TRAIN_THREADS)
    cfg = DistillConfig(top_k=4, answer_tokens=16, max_questions=2)
    own = distill_questions(DOC, 2)
    users = ["How high is the Varnholt Observatory above Lissemark?", " ", own[0][0].upper(),
             " how high is the Varnholt observatory above Lissemark? "]
    distillation = build_distillation(HFGenerator(trainer), trainer, DOC, cfg, user_questions=users)
    # Blank and repeated questions, and one the document already asks, are taught once; the cap is the
    # document's own questions', so a user's question never pushes one of them out.
    assert [(r["question"], r["direction"]) for r in distillation.records] == (
        [(users[0], "user")] + [(q, d) for q, d in own])
    assert "2,940" in distillation.records[0]["answer"]  # the teacher read the document to answer it
    assert len(distillation.rows) == 3
