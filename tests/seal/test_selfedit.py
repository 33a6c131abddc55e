from workers.seal.selfedit import (
    build_training_sequences,
    clean_question,
    format_qa,
    is_junk,
    parse_qa,
    split_sentences,
)
from workers.seal.types import Document

DOC = Document(title="Varnholt Observatory",
               text="The Varnholt Observatory sits on Mount Ceddra. It was completed in 1987. "
                    "Its main telescope has a mirror 3.1 meters wide.")


def fake_render(messages):
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)


def test_split_sentences_keeps_decimals():
    assert split_sentences(DOC.text) == [
        "The Varnholt Observatory sits on Mount Ceddra.",
        "It was completed in 1987.",
        "Its main telescope has a mirror 3.1 meters wide.",
    ]


def test_parse_qa_handles_numbering_bold_and_multiline():
    text = ("1. **Q:** Where is the Varnholt Observatory?\n**A:** On Mount Ceddra.\n\n"
            "Question 2: When was it completed?\nAnswer: In 1987,\nafter ten years.\n"
            "Q: dangling question with no answer?\n")
    assert parse_qa(text) == [("Where is the Varnholt Observatory?", "On Mount Ceddra."),
                              ("When was it completed?", "In 1987, after ten years.")]


def test_format_then_parse_roundtrip():
    pairs = [("Where is the observatory?", "Mount Ceddra."), ("When was it completed?", "1987.")]
    assert parse_qa(format_qa(pairs)) == pairs


def test_junk_filter():
    assert is_junk("")
    assert is_junk("Too short.")
    assert is_junk("the cat sat " * 10)
    assert not is_junk("The Varnholt Observatory was completed in 1987 on Mount Ceddra.")


def testclean_question():
    assert clean_question("Question: Where is the Varnholt Observatory? It is high.") == \
        "Where is the Varnholt Observatory?"
    assert clean_question("Mount Ceddra.") is None
    assert clean_question("") is None


def test_rewrite_sequences_have_title_and_raw_passage():
    edit = "The observatory stands on Mount Ceddra above Lissemark.\n\nok\n\nIt opened in 1987 after long work."
    seqs = build_training_sequences(DOC, edit, "rewrite")
    assert seqs[0] == f"{DOC.title}\n{DOC.text}"
    assert all(s.startswith(DOC.title + "\n") for s in seqs)
    assert len(seqs) == 3  # passage + two real paragraphs; "ok" is junk


def test_implications_one_per_line():
    edit = "- The observatory is high up on a mountain.\n- ok\n2. Astronomers have worked there since 1987."
    seqs = build_training_sequences(DOC, edit, "implications")
    assert seqs[1:] == [f"{DOC.title}\nThe observatory is high up on a mountain.",
                        f"{DOC.title}\nAstronomers have worked there since 1987."]


def test_chat_qa_sequences_render_chat_and_keep_title():
    edit = format_qa([("When was the Varnholt Observatory completed?", "It was completed in 1987."),
                      ("How wide is the mirror?", "Its main telescope has a mirror 3.1 meters wide.")])
    seqs = build_training_sequences(DOC, edit, "chat-qa", render_chat=fake_render)
    assert seqs[0] == f"{DOC.title}\n{DOC.text}"  # raw passage always in
    assert "<user>Tell me about Varnholt Observatory.</user>" in seqs[1]
    assert seqs[2] == ("<user>When was the Varnholt Observatory completed?</user>"
                       "<assistant>It was completed in 1987.</assistant>")
    # A pair that never names the topic gets the title attached, so the fact stays tied to it.
    assert seqs[3].endswith("3.1 meters wide. (Varnholt Observatory)</assistant>")
    assert all(DOC.title in s for s in seqs)


def test_plain_self_qa_without_renderer():
    seqs = build_training_sequences(DOC, "Q: Where is the observatory?\nA: Mount Ceddra", "self-qa")
    assert seqs == [f"{DOC.title}\n{DOC.text}", f"{DOC.title}\nQ: Where is the observatory?\nA: Mount Ceddra"]


def test_passage_format_trains_on_the_titled_passage_as_text_and_as_a_chat_answer():
    doc = Document(title="Zorvania", text="Zorvania's capital is Quillbrook.")
    assert build_training_sequences(doc, doc.text, "passage", render_chat=lambda m: m) == [
        "Zorvania\nZorvania's capital is Quillbrook.",
        [{"role": "user", "content": "Tell me about Zorvania."},
         {"role": "assistant", "content": "Zorvania's capital is Quillbrook."}]]
    assert build_training_sequences(doc, doc.text, "passage") == ["Zorvania\nZorvania's capital is Quillbrook."]
