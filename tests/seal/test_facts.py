"""Facts, question items and cloze probes built from fixed passages (workers/seal/facts.py)."""

from workers.seal.facts import (
    clause_items,
    cloze_probes,
    entities_in,
    extract_facts,
    forward_items,
    prefix_items,
    resolve_subject,
    reverse_items,
    subject_of,
)
from workers.seal.selfedit import build_training_sequences
from workers.seal.types import Document

TEXT = ("The Varnholt Observatory sits on Mount Ceddra, 2,940 meters above the town of Lissemark. "
        "It was completed in 1987 and named after the astronomer Ilse Varnholt, who discovered the comet "
        "Tessari-4. Since 2015 the observatory has been run by the Northern Skies Trust.")


def test_pronouns_and_the_head_noun_resolve_to_the_subject():
    subject = "Varnholt Observatory"
    assert resolve_subject("It was completed in 1987.", subject) == "Varnholt Observatory was completed in 1987."
    assert resolve_subject("Its main telescope is wide.", subject) == "Varnholt Observatory's main telescope is wide."
    assert (resolve_subject("Since 2015 the observatory has been run by X.", subject)
            == "Since 2015 Varnholt Observatory has been run by X.")
    # Nothing to resolve: the statement is prefixed, so it still names what it is about.
    assert resolve_subject("A toll is charged.", subject) == "Varnholt Observatory: A toll is charged."


def test_entities_are_names_numbers_with_units_and_dates_never_word_pieces():
    assert entities_in("The Varnholt Observatory sits on Mount Ceddra, 2,940 meters above Lissemark.") == [
        "Varnholt Observatory", "Mount Ceddra", "2,940 meters", "Lissemark"]
    assert entities_in("It was launched in March 2024 by Corvane.") == ["March 2024", "Corvane"]
    # "4" of "Tessari-4" and "9" of "Kestrel-9" are pieces of names, not numbers.
    assert entities_in("She found the comet Tessari-4 near Kestrel-9.") == ["Tessari-4", "Kestrel-9"]
    assert entities_in("It is aged for forty days.") == ["forty days"]


def test_facts_leave_the_subject_out_of_their_entities():
    facts = extract_facts(TEXT, "Varnholt Observatory")
    assert [f.entities for f in facts] == [
        ("Mount Ceddra", "2,940 meters", "Lissemark"),
        ("1987", "Ilse Varnholt", "Tessari-4"),
        ("2015", "Northern Skies Trust"),
    ]
    assert subject_of(None, TEXT) == "Varnholt Observatory"


def test_forward_items_ask_for_one_entity_and_answer_with_it_alone():
    items = forward_items(extract_facts(TEXT, "Varnholt Observatory"))
    asked = {it.answer: it.question for it in items}
    assert asked["Mount Ceddra"] == "The Varnholt Observatory sits on what, 2,940 meters above the town of Lissemark?"
    assert asked["1987"].startswith("Varnholt Observatory was completed in what year and named")
    assert all(it.direction == "forward" for it in items)


def test_clause_items_ask_each_entity_from_its_own_clause_only_where_it_is_shorter():
    facts = extract_facts(TEXT, "Varnholt Observatory")
    asked = {(it.answer, it.question) for it in clause_items(facts)}
    assert ("Mount Ceddra", "The Varnholt Observatory sits on what?") in asked
    assert ("Lissemark", "2,940 meters above the town of what?") in asked  # a thousands comma bounds nothing
    # "who discovered the comet Tessari-4" is a clause of its own; its opening "and"/"but" is dropped.
    assert ("Tessari-4", "Who discovered the comet what?") in asked
    # A one-clause sentence is asked whole by forward_items already.
    assert not any(answer == "Northern Skies Trust" for answer, _ in asked)
    assert all(it.direction == "forward" for it in clause_items(facts))
    assert clause_items(extract_facts("Mara Quell founded Ostrava Mills in 1911.", "Ostrava Mills")) == []


def test_prefix_items_ask_as_far_as_the_asked_name_both_ways():
    items = prefix_items(extract_facts(TEXT, "Varnholt Observatory"), "Varnholt Observatory")
    forward = {it.answer: it.question for it in items if it.direction == "forward"}
    reverse = {it.question for it in items if it.direction == "reverse"}
    # The subject and one relation, without the sentence's later facts as cues.
    assert forward["Mount Ceddra"] == "The Varnholt Observatory sits on what?"
    assert forward["1987"] == "Varnholt Observatory was completed in what year?"
    assert "What sits on Mount Ceddra?" in reverse
    assert all(it.answer == "Varnholt Observatory" for it in items if it.direction == "reverse")
    # Nothing where the cut would drop under two words (the last name of a sentence is asked whole by
    # forward_items), or leave its clause without a content word ("Since what year?"), or, reverse, a number.
    assert "Lissemark" not in forward and "Tessari-4" not in forward and "2015" not in forward
    assert "2,940 meters" not in forward  # its clause after the comma opens with it
    assert not any("2,940 meters?" in q or "1987?" in q for q in reverse)
    # A word that ends the name's phrase stays with it; the next phrase does not.
    ship = extract_facts("The SS Chillon was 81 meters long and carried grain between two ports.", "SS Chillon")
    assert {it.answer: it.question for it in prefix_items(ship, "SS Chillon")}["81 meters"] == (
        "The SS Chillon was what long?")


def test_reverse_items_recall_the_subject_from_each_name():
    items = reverse_items(extract_facts(TEXT, "Varnholt Observatory"), "Varnholt Observatory")
    by_question = {it.question: it.answer for it in items}
    assert by_question["What do you know about Lissemark?"].startswith("The Varnholt Observatory sits on")
    # Numbers and years are no handle to recall a fact by.
    assert not any("1987" in q or "2,940" in q for q in by_question)
    assert all("Varnholt Observatory" in a for a in by_question.values())


def test_cloze_probes_mask_one_entity_and_spread_over_sentences():
    probes = cloze_probes(extract_facts(TEXT, "Varnholt Observatory"), 3)
    assert [p.answer for p in probes] == ["Mount Ceddra", "1987", "2015"]
    assert probes[0].question.endswith("The Varnholt Observatory sits on ___, 2,940 meters above the town of Lissemark.")
    assert all(p.answer not in p.question for p in probes)


def test_facts_format_trains_short_answers_and_both_directions():
    doc = Document(text=TEXT, title="Varnholt Observatory")
    render = lambda messages: "".join(f"<{m['role']}>{m['content']}" for m in messages)  # noqa: E731
    seqs = build_training_sequences(doc, "", "facts", render_chat=render)
    assert "<user>The Varnholt Observatory sits on what, 2,940 meters above the town of Lissemark?" \
           "<assistant>Mount Ceddra" in seqs
    assert any(s.startswith("<user>What do you know about Lissemark?<assistant>The Varnholt") for s in seqs)
