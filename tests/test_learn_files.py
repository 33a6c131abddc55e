"""Documents read from files: the text of .txt, .md and .pdf, documents of .jsonl."""

from __future__ import annotations

import json

import pytest

from app import learn_files
from app.learn_files import UnreadableFile, extract_text, read_documents
from tests.factories import pdf_with_text


def test_pdf_pages_are_joined_by_blank_lines() -> None:
    data = pdf_with_text(["The Orrin Canal opened in 1841.", "It links Vell and Maro (two towns)."])
    assert extract_text(data, ".pdf") == "The Orrin Canal opened in 1841.\n\nIt links Vell and Maro (two towns)."


# A filter pypdf cannot decode without an extra library raises DependencyError, not PdfReadError.
JBIG2_PDF = pdf_with_text(["Hello"]).replace(b"<< /Length", b"<< /Filter /JBIG2Decode /Length")


@pytest.mark.parametrize("data, suffix", [(b"%PDF-1.4 not really", ".pdf"), (b"", ".pdf"), (JBIG2_PDF, ".pdf"),
                                          (b"\xff\xfe\x00caf\xe9", ".txt")])
def test_unreadable_bytes_say_why(data: bytes, suffix: str) -> None:
    with pytest.raises(UnreadableFile):
        extract_text(data, suffix)


def test_text_that_json_or_postgres_refuses_is_cleaned() -> None:
    """A PDF's text map can decode to lone surrogates, which no JSON encoder writes, and NUL, which
    PostgreSQL refuses: the extracted text holds neither."""
    assert learn_files._clean("a\ud800b\x00c") == "a?bc"


def test_text_files_drop_a_byte_order_mark() -> None:
    assert extract_text("\ufeff# Notes\nThe ferry runs hourly.".encode(), ".md") == "# Notes\nThe ferry runs hourly."


def test_read_documents_by_suffix(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "CANAL.PDF").write_bytes(pdf_with_text(["The Orrin Canal opened in 1841."]))
    (tmp_path / "notes.md").write_text("The ferry runs hourly.")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"title": "T", "context": "C", "questions": [
        {"question": "Q?", "answer": "A", "id": 1}]}) + "\n")
    assert read_documents(tmp_path / "CANAL.PDF") == [{"title": "CANAL", "text": "The Orrin Canal opened in 1841."}]
    assert read_documents(tmp_path / "notes.md", title="Ferry") == [{"title": "Ferry", "text": "The ferry runs hourly."}]
    assert read_documents(tmp_path / "docs.jsonl") == [{"title": "T", "text": "C",
                                                        "probes": [{"question": "Q?", "answer": "A"}]}]
