"""Probe validation and the cloze fallback, on fixed passages and fixed model outputs."""

from workers.seal.facts import extract_facts
from workers.seal.probes import check_questions, write_probes
from workers.seal.types import Document

DOC = Document(title="Varnholt Observatory",
               text="The Varnholt Observatory sits on Mount Ceddra, 2,940 meters above the town of Lissemark. "
                    "It was completed in 1987 and named after the astronomer Ilse Varnholt. "
                    "Since 2015 the observatory has been run by the Northern Skies Trust.")


class ScriptedModel:
    """A Generator that answers each prompt from a table: the question it writes for each entity asked
    for, and its in-context answers. It records the entities it was asked for, in order."""

    def __init__(self, questions: dict[str, str], answers: dict[str, str]) -> None:
        self.questions = questions
        self.answers = answers
        self.asked_for: list[str] = []

    def generate(self, prompts, *, temperature=0.0, max_tokens=128, n=1, seed=None, adapter=None):
        outs = []
        for prompt in prompts:
            content = prompt[-1]["content"]
            if content.startswith("Passage:"):
                question = content.rsplit("Question: ", 1)[1]
                outs.append([self.answers.get(question, "I don't know.")])
            else:
                entity = content.split("\nAnswer: ", 1)[1].split("\n", 1)[0]
                self.asked_for.append(entity)
                outs.append([self.questions.get(entity, "Nothing here.")])
        return outs


def test_a_question_is_kept_only_when_answered_in_context_with_the_entity_it_was_written_for():
    model = ScriptedModel(
        questions={"Mount Ceddra": "Where does the Varnholt Observatory sit?",
                   "1987": "When was the observatory completed?",
                   "Northern Skies Trust": "Who runs the Varnholt Observatory?",
                   "Ilse Varnholt": "Who was the observatory named after?"},
        answers={"Where does the Varnholt Observatory sit?": "On Mount Ceddra.",
                 "When was the observatory completed?": "It was built a long time ago.",  # names no entity
                 "Who runs the Varnholt Observatory?": "The Northern Skies Trust",
                 "Who was the observatory named after?": "It was completed in 1987."},  # another entity
    )
    checked = check_questions(model, DOC, extract_facts(DOC.text, DOC.title))
    assert {c.question: c.gold for c in checked} == {
        "Where does the Varnholt Observatory sit?": "Mount Ceddra",
        "When was the observatory completed?": None,
        "Who runs the Varnholt Observatory?": "Northern Skies Trust",
        "Who was the observatory named after?": None,
    }
    reasons = {c.question: c.reason for c in checked}
    assert reasons["When was the observatory completed?"] == reasons["Who was the observatory named after?"] == (
        "the in-context answer does not name the entity asked for")


def test_entities_are_asked_for_across_statements_before_a_cap_cuts_them():
    model = ScriptedModel(questions={}, answers={})
    check_questions(model, DOC, extract_facts(DOC.text, DOC.title), limit=4)
    # One entity of each statement first, so a cap never leaves a statement unasked.
    assert model.asked_for == ["Mount Ceddra", "1987", "2015", "2,940 meters"]


def test_a_question_holding_its_own_answer_is_dropped():
    model = ScriptedModel(questions={"Mount Ceddra": "Is the observatory on Mount Ceddra?"},
                          answers={"Is the observatory on Mount Ceddra?": "Yes, on Mount Ceddra."})
    (checked, *_) = check_questions(model, DOC, extract_facts(DOC.text, DOC.title))
    assert checked.gold is None and checked.reason == "the question already contains its answer"


def test_too_few_good_questions_fall_back_to_entity_cloze_probes():
    model = ScriptedModel(questions={"Mount Ceddra": "Where does the Varnholt Observatory sit?"},
                          answers={"Where does the Varnholt Observatory sit?": "Mount Ceddra"})
    probes, record = write_probes(model, DOC, 4)
    assert record["source"] == "self-written+cloze"
    assert probes[0].question == "Where does the Varnholt Observatory sit?"
    # The cloze probes mask a whole entity, never the same answer twice, so each is gradeable.
    assert [p.answer for p in probes] == ["Mount Ceddra", "1987", "2015", "2,940 meters"]
    assert probes[1].question.endswith("Varnholt Observatory was completed in ___ and named after the astronomer "
                                       "Ilse Varnholt.")


def test_a_model_that_writes_no_questions_still_gets_cloze_probes():
    probes, record = write_probes(ScriptedModel(questions={}, answers={}), DOC, 3)
    assert record["source"] == "cloze"
    assert [p.answer for p in probes] == ["Mount Ceddra", "1987", "2015"]


def test_a_question_about_nothing_in_its_sentence_is_dropped():
    model = ScriptedModel(questions={"Mount Ceddra": "What is the answer to this question?"},
                          answers={"What is the answer to this question?": "Mount Ceddra"})
    (checked, *_) = check_questions(model, DOC, extract_facts(DOC.text, DOC.title))
    assert checked.gold is None and checked.reason == "the question names nothing its sentence is about"
