"""Splitting long documents at submit: nothing lost, nothing over the limit, probes where their answers are."""

from __future__ import annotations

from workers.seal.passages import assign_probes, split_passages
from workers.seal.types import Probe


def words(text: str) -> int:  # a stand-in tokenizer: one token per word
    return len(text.split())


def test_a_short_document_is_one_passage():
    assert split_passages("Short text.  ", words, 10) == ["Short text."]


def test_paragraphs_then_sentences_then_words_and_no_word_lost():
    text = ("Alpha one two. Beta three four.\n\nGamma five six seven eight nine ten eleven twelve thirteen.\n\n"
            "Delta end.")
    passages = split_passages(text, words, 6)
    assert all(words(p) <= 6 for p in passages)
    assert " ".join(" ".join(passages).split()) == " ".join(text.split())
    assert passages[0] == "Alpha one two. Beta three four."  # whole sentences packed together
    assert passages[-1].endswith("Delta end.")


def test_probes_follow_their_answers():
    passages = ["The lighthouse at Fenning Bay is 38 meters tall.", "It was first lit in 1834 by Ada Crane."]
    probes = [Probe("Who first lit it?", "Ada Crane"), Probe("How tall is the lighthouse?", "38 meters"),
              Probe("Where does the lighthouse stand?", "on the cliffs")]  # not literally in either passage
    assigned = assign_probes(passages, probes)
    assert [p.answer for p in assigned[0]] == ["38 meters", "on the cliffs"]
    assert [p.answer for p in assigned[1]] == ["Ada Crane"]
