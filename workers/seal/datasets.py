"""Evaluation and policy-training passages: SQuAD with SEAL's split, and fictional JSONL sets."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from .types import Document, Probe

logger = logging.getLogger(__name__)

SQUAD_SEED = 42  # SEAL's split: random.seed(42); random.shuffle(passages)
SQUAD_EVAL_SIZE = 200  # the first 200 shuffled passages (974 questions) are the evaluation split
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the repo


@dataclass(frozen=True)
class Passage:
    """A document with its gold questions, and a stable id used as the cache key."""

    id: str
    doc: Document

    @property
    def num_questions(self) -> int:
        return len(self.doc.probes)


def _to_document(item: dict) -> Document:
    probes = [Probe(question=q["question"], answer=q["answer"]) for q in item.get("questions", [])]
    return Document(text=item["context"], title=item.get("title"), probes=probes)


def load_squad(path: str | Path, *, split: str = "eval", limit: int | None = None) -> list[Passage]:
    """SQuAD passages in SEAL's format; `split="eval"` is SEAL's 200-passage split, `"train"` the rest.

    Args:
        path: a JSON list of `{title, context, questions: [{question, answer}]}`.
        split: "eval" (first 200 after the seeded shuffle) or "train" (every other passage).
        limit: keep only this many passages from the start of the split (a prefix, so runs nest).

    Returns:
        The passages, with ids `squad-<position in the shuffled list>`.
    """
    if split not in ("eval", "train"):
        raise ValueError(f"split must be 'eval' or 'train', got {split!r}")
    items = json.loads(Path(path).read_text())
    order = list(range(len(items)))
    # Shuffle indices with the same RNG calls as shuffling the list itself (SEAL's `random.seed(42)`, then
    # `random.shuffle`), so positions match SEAL's; a private Random leaves the caller's global RNG alone.
    random.Random(SQUAD_SEED).shuffle(order)
    picked = order[:SQUAD_EVAL_SIZE] if split == "eval" else order[SQUAD_EVAL_SIZE:]
    offset = 0 if split == "eval" else SQUAD_EVAL_SIZE
    passages = [Passage(id=f"squad-{offset + i}", doc=_to_document(items[j])) for i, j in enumerate(picked)]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        passages = passages[:limit]
    return passages


def draw_squad(path: str | Path, n: int, seed: int) -> list[Passage]:
    """`n` passages of SEAL's evaluation split drawn with `seed` from its second half: the benches' real
    text, away from the split's first passages, which `seal eval squad` measured recipes on."""
    held_out = load_squad(path, split="eval")[SQUAD_EVAL_SIZE // 2:]
    if not 1 <= n <= len(held_out):
        raise ValueError(f"n must be 1..{len(held_out)}, got {n}")
    return random.Random(seed).sample(held_out, n)


def load_jsonl(path: str | Path, *, limit: int | None = None) -> list[Passage]:
    """Passages from a JSONL file in `fictional_dev.jsonl`'s schema (`id`, `title`, `context`, `questions`)."""
    passages = []
    for n, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        item = json.loads(line)
        passages.append(Passage(id=str(item.get("id", f"line-{n}")), doc=_to_document(item)))
    if len({p.id for p in passages}) != len(passages):
        raise ValueError(f"{path}: passage ids must be unique (they key the result cache)")
    return passages[:limit] if limit is not None else passages
