"""Probe validation and the cloze fallback, on fixed passages and fixed model outputs."""

from workers.seal.facts import extract_facts
from workers.seal.probes import check_questions, write_probes
from workers.seal.types import Document

DOC = Document(title="Varnholt Observatory",
               text="The Varnholt Observatory sits on Mount Ceddra, 2,940 meters above the town of Lissemark. "
                    "It was completed in 1987 and named after the astronomer Ilse Varnholt. "
                    "Since 2015 the observatory has been run by the Northern Skies Trust.")


class ScriptedModel:
    """A Generator that answers each prompt from a table: the questions it writes, and its in-context answers."""

    def __init__(self, questions: list[str], answers: dict[str, str]) -> None:
        self.questions = questions
        self.answers = answers

    def generate(self, prompts, *, temperature=0.0, max_tokens=128, n=1, seed=None, adapter=None):
        outs = []
        for i, prompt in enumerate(prompts):
            content = prompt[-1]["content"]
            if content.startswith("Passage:"):
                question = content.rsplit("Question: ", 1)[1]
                outs.append([self.answers.get(question, "I don't know.")])
            else:
                outs.append([self.questions[i] if i < len(self.questions) else "Nothing here."])
        return outs


def test_a_question_is_kept_only_when_answered_in_context_with_its_sentences_entity():
    model = ScriptedModel(
        questions=["Where does the Varnholt Observatory sit?", "When was the observatory completed?",
                   "Who runs the Varnholt Observatory?"],
        answers={"Where does the Varnholt Observatory sit?": "On Mount Ceddra.",
                 "When was the observatory completed?": "It was built a long time ago.",  # names no entity
                 "Who runs the Varnholt Observatory?": "The Northern Skies Trust"},
    )
    checked = check_questions(model, DOC, extract_facts(DOC.text, DOC.title))
    assert [(c.question, c.gold) for c in checked] == [
        ("Where does the Varnholt Observatory sit?", "Mount Ceddra"),
        ("When was the observatory completed?", None),
        ("Who runs the Varnholt Observatory?", "Northern Skies Trust"),
    ]
    assert checked[1].reason == "the in-context answer names none of the sentence's entities"


def test_a_question_holding_its_own_answer_is_dropped():
    model = ScriptedModel(questions=["Is the observatory on Mount Ceddra?"],
                          answers={"Is the observatory on Mount Ceddra?": "Yes, on Mount Ceddra."})
    (checked, *_) = check_questions(model, DOC, extract_facts(DOC.text, DOC.title))
    assert checked.gold is None and checked.reason == "the question already contains its answer"


def test_too_few_good_questions_fall_back_to_entity_cloze_probes():
    model = ScriptedModel(questions=["Where does the Varnholt Observatory sit?"],
                          answers={"Where does the Varnholt Observatory sit?": "Mount Ceddra"})
    probes, record = write_probes(model, DOC, 4)
    assert record["source"] == "self-written+cloze"
    assert probes[0].question == "Where does the Varnholt Observatory sit?"
    # The cloze probes mask a whole entity, never the same answer twice, so each is gradeable.
    assert [p.answer for p in probes] == ["Mount Ceddra", "1987", "2015", "2,940 meters"]
    assert probes[1].question.endswith("Varnholt Observatory was completed in ___ and named after the astronomer "
                                       "Ilse Varnholt.")


def test_a_model_that_writes_no_questions_still_gets_cloze_probes():
    probes, record = write_probes(ScriptedModel(questions=[], answers={}), DOC, 3)
    assert record["source"] == "cloze"
    assert [p.answer for p in probes] == ["Mount Ceddra", "1987", "2015"]


def test_a_question_about_nothing_in_its_sentence_is_dropped():
    model = ScriptedModel(questions=["What is the answer to this question?"],
                          answers={"What is the answer to this question?": "Mount Ceddra"})
    (checked, *_) = check_questions(model, DOC, extract_facts(DOC.text, DOC.title))
    assert checked.gold is None and checked.reason == "the question names nothing its sentence is about"
