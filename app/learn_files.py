"""Reading documents to learn from files: .txt, .md, .pdf, .json and .jsonl. `seal learn FILE` and the
console's upload (POST /v1/files/extract) both read them here."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".pdf")
# Text extraction runs in the API's thread pool: bound what one upload can ask of it (beside the body limit).
MAX_PDF_PAGES = 500


class UnreadableFile(ValueError):
    """The file's bytes are not a document of its kind (a broken PDF, text that is not UTF-8)."""


def extract_text(data: bytes, suffix: str) -> str:
    """The text of a .txt, .md or .pdf file. A PDF's pages are joined by blank lines; a scanned PDF
    with no text layer gives none (it would need OCR)."""
    if suffix == ".pdf":
        return _clean("\n\n".join(p.strip() for p in _pdf_pages(data) if p.strip()))
    try:
        return _clean(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text (byte {exc.start})") from exc


def _pdf_pages(data: bytes) -> list[str]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if len(reader.pages) > MAX_PDF_PAGES:
            raise UnreadableFile(f"{len(reader.pages)} pages, more than {MAX_PDF_PAGES}: split it")
        return [page.extract_text() or "" for page in reader.pages]
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure (a bomb, a filter, nesting) is the file's
        raise UnreadableFile(f"not a readable PDF ({type(exc).__name__})") from exc


def _clean(text: str) -> str:
    # A PDF's text map may decode to lone surrogates, which no JSON encoder writes; NUL is refused by PostgreSQL.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def read_documents(path: Path, *, title: str | None = None) -> list[dict[str, Any]]:
    """Return learn documents; .json/.jsonl items may use SQuAD-style `context`/`questions` names."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [{"title": title or path.stem, "text": extract_text(path.read_bytes(), suffix)}]
    raw = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        items = [json.loads(line) for line in raw.splitlines() if line.strip()]
    else:
        loaded = json.loads(raw)
        items = loaded if isinstance(loaded, list) else [loaded]
    return [_to_document(item) for item in items]


def _to_document(item: dict[str, Any]) -> dict[str, Any]:
    probes = item.get("probes", item.get("questions", []))
    return {
        "title": item.get("title"),
        "text": item.get("text", item.get("context", "")),
        "probes": [{"question": p["question"], "answer": p["answer"]} for p in probes],
    }
