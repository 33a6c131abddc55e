"""Questions asked the way users ask them: wrappers from bench/data/wrappers.json.

A wrapper turns one question into a chat (OpenAI `messages`): an instruction line before or after it,
a system-like preface in the user turn, a subject header, a longer message around it, an earlier
exchange, or the question itself lowercased, mistyped or paraphrased with synonyms. Half of the
wrappers calibrate the router; the other half (`held_out`) are only ever measured.

    from wrappers import load_wrappers      # bench/ on sys.path, as bench scripts have it
    held_out = load_wrappers("held_out")
    messages = held_out[0].wrap("Who founded Fleilholt Mills?")
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRAPPERS_FILE = Path(__file__).resolve().parent / "data" / "wrappers.json"
SPLITS = ("calibration", "held_out")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class Wrapper:
    """One way of asking: a chat template and the transforms applied to the question first."""

    id: str
    kind: str
    split: str
    messages: tuple[dict[str, str], ...]
    transforms: tuple[Callable[[str, random.Random], str], ...] = ()

    def wrap(self, question: str) -> list[dict[str, str]]:
        """The chat a user would send for `question` (deterministic per wrapper and question)."""
        rng = random.Random(zlib.crc32(f"{self.id}\0{question}".encode()))
        for transform in self.transforms:
            question = transform(question, rng)
        return [{"role": m["role"], "content": m["content"].replace("{question}", question)} for m in self.messages]

    def text(self, question: str) -> str:
        """The last user turn of the wrapped chat (what a completions prompt would carry)."""
        return self.wrap(question)[-1]["content"]


def _typo(question: str, rng: random.Random, *, drop: bool) -> str:
    """One typo in one word of five letters or more (names included: users mistype those too)."""
    words = [m for m in _WORD.finditer(question) if len(m.group(0)) >= 5]
    if not words:
        return question
    match = rng.choice(words)
    word = match.group(0)
    i = rng.randrange(1, len(word) - 2)  # keep the first and last letters, as most typos do
    typo = word[:i] + word[i + 1:] if drop else word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return question[:match.start()] + typo + question[match.end():]


def _synonyms(table: dict[str, str]) -> Callable[[str, random.Random], str]:
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True)) + r")\b", re.IGNORECASE)

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        synonym = table[word.lower()]
        return synonym[0].upper() + synonym[1:] if word[0].isupper() else synonym

    return lambda question, rng: pattern.sub(replace, question)


def load_wrappers(split: str | None = None, path: Path = WRAPPERS_FILE) -> list[Wrapper]:
    """The wrappers of one split (`calibration` or `held_out`), or all of them."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data: dict[str, Any] = json.loads(path.read_text())
    transforms: dict[str, Callable[[str, random.Random], str]] = {
        "lowercase": lambda q, rng: q.lower(),
        "no_question_mark": lambda q, rng: q.rstrip("?").rstrip(),
        "typo_swap": lambda q, rng: _typo(q, rng, drop=False),
        "typo_drop": lambda q, rng: _typo(q, rng, drop=True),
        "synonyms_a": _synonyms(data["synonyms_a"]),
        "synonyms_b": _synonyms(data["synonyms_b"]),
    }
    wrappers = [
        Wrapper(id=w["id"], kind=w["kind"], split=w["split"], messages=tuple(w["messages"]),
                transforms=tuple(transforms[t] for t in w.get("transforms", ())))
        for w in data["wrappers"]
    ]
    return [w for w in wrappers if split is None or w.split == split]
