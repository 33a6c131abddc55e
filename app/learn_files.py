"""Reading documents for `seal learn` from .txt, .json and .jsonl files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_documents(path: Path, *, title: str | None = None) -> list[dict[str, Any]]:
    """Return learn documents; .json/.jsonl items may use SQuAD-style `context`/`questions` names."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [{"title": title or path.stem, "text": raw}]
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
