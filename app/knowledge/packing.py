"""Re-packing ("sleep"): which learned documents of a knowledge base belong in the same shard.

Related documents (shared names, shared vocabulary) go together, so a question that spans two of
them reaches one shard that learned both. Deterministic: the same documents always pack the same
way, whatever order they come in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.knowledge.router import tokenize

MIN_SIMILARITY = 0.08  # below this two documents share only incidental words: they are not related


@dataclass(frozen=True)
class PackItem:
    doc_id: int
    title: str | None
    text: str


def similarity(a: set[str], b: set[str], weight: dict[str, float]) -> float:
    """IDF-weighted Jaccard: sharing a rare name counts, sharing a common word barely does."""
    union = a | b
    if not union:
        return 0.0
    return sum(weight[t] for t in a & b) / sum(weight[t] for t in union)


def pack(items: Sequence[PackItem], capacity: int, *, min_similarity: float = MIN_SIMILARITY) -> list[list[int]]:
    """Groups of at most `capacity` doc ids: the most related pairs merge first (single linkage, as long
    as the merged group fits); what relates to nothing is packed in id order into the remaining room."""
    ordered = sorted(items, key=lambda i: i.doc_id)
    terms = {i.doc_id: set(tokenize(f"{i.title or ''} {i.text}")) for i in ordered}
    df: dict[str, int] = {}
    for ts in terms.values():
        for t in ts:
            df[t] = df.get(t, 0) + 1
    n = len(ordered)
    weight = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
    group = {i.doc_id: [i.doc_id] for i in ordered}
    pairs = []
    for x in range(n):
        for y in range(x + 1, n):
            a, b = ordered[x].doc_id, ordered[y].doc_id
            s = similarity(terms[a], terms[b], weight)
            if s >= min_similarity:
                pairs.append((-s, a, b))
    for _, a, b in sorted(pairs):
        ga, gb = group[a], group[b]
        if ga is gb or len(ga) + len(gb) > capacity:
            continue
        ga.extend(gb)
        for d in gb:
            group[d] = ga
    groups: list[list[int]] = []
    seen: set[int] = set()
    for i in ordered:
        g = group[i.doc_id]
        if id(g) not in seen:
            seen.add(id(g))
            groups.append(sorted(g))
    related = [g for g in groups if len(g) > 1]
    loners = [g[0] for g in groups if len(g) == 1]
    packed = [loners[k:k + capacity] for k in range(0, len(loners), capacity)]
    return sorted(related + packed, key=lambda g: g[0])
