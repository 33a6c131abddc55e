"""POST /v1/files/extract: the console's upload reads a document's text, and a bad file is a clear 400."""

from __future__ import annotations

import pytest

from tests.api.test_errors import assert_error
from tests.factories import pdf_with_text


def test_pdf_and_text_files_come_back_as_text(stack) -> None:  # noqa: ANN001
    with stack.client("acme") as client:
        pdf = client.post("/v1/files/extract", params={"filename": "Orrin Canal.pdf"},
                          content=pdf_with_text(["The Orrin Canal opened in 1841.", "It links Vell and Maro."]))
        assert pdf.status_code == 200, pdf.text
        assert pdf.json() == {"title": "Orrin Canal", "text": "The Orrin Canal opened in 1841.\n\nIt links Vell and Maro.",
                              "characters": 56}
        md = client.post("/v1/files/extract", params={"filename": "C:\\notes\\ferry.MD"}, content="The ferry runs hourly.")
        assert md.json()["title"] == "ferry" and md.json()["text"] == "The ferry runs hourly."


@pytest.mark.parametrize("filename, body, code", [
    ("slides.pptx", b"PK\x03\x04", "unsupported_file_type"),
    ("noext", b"text", "unsupported_file_type"),
    ("broken.pdf", b"%PDF-1.4 truncated", "unreadable_file"),
    ("scan.pdf", pdf_with_text(["x"]).replace(b"<< /Length", b"<< /Filter /JBIG2Decode /Length"), "unreadable_file"),
    ("latin1.txt", b"caf\xe9", "unreadable_file"),
    ("empty.txt", b"", "empty_file"),
    ("blank.md", b"  \n\n ", "no_text"),
])
def test_bad_files_are_400s(stack, filename: str, body: bytes, code: str) -> None:  # noqa: ANN001
    with stack.client("acme") as client:
        assert_error(client.post("/v1/files/extract", params={"filename": filename}, content=body), 400, code=code)


def test_extracting_needs_the_learn_scope_and_a_filename(stack) -> None:  # noqa: ANN001
    with stack.client("acme-reader") as client:
        assert_error(client.post("/v1/files/extract", params={"filename": "a.txt"}, content=b"x"), 403)
    with stack.client("acme") as client:
        assert_error(client.post("/v1/files/extract", content=b"x"), 400, param="filename")
