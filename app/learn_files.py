"""Reading documents to learn from files: .txt, .md, .pdf, .json and .jsonl. `seal learn FILE` and the
console's upload (POST /v1/files/extract) both read them here."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".pdf")


class UnreadableFile(ValueError):
    """The file's bytes are not a document of its kind (a broken PDF, text that is not UTF-8)."""


def extract_text(data: bytes, suffix: str) -> str:
    """The text of a .txt, .md or .pdf file. A PDF's pages are joined by blank lines; a scanned PDF
    with no text layer gives none (it would need OCR)."""
    if suffix == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            pages = [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]
        except (PdfReadError, ValueError, KeyError, TypeError) as exc:  # pypdf's errors on a damaged file
            raise UnreadableFile(f"not a readable PDF ({exc})") from exc
        return "\n\n".join(p.strip() for p in pages if p.strip())
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text (byte {exc.start})") from exc


def read_documents(path: Path, *, title: str | None = None) -> list[dict[str, Any]]:
    """Return learn documents; .json/.jsonl items may use SQuAD-style `context`/`questions` names."""
    if path.suffix in TEXT_SUFFIXES:
        return [{"title": title or path.stem, "text": extract_text(path.read_bytes(), path.suffix)}]
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
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
