"""Long documents become passages a training sequence and a probe prompt can hold whole.

A learn trains on sequences of at most TrainConfig.max_seq_len tokens and asks probes with the
passage in the prompt, so a longer document would be silently truncated in one place and
overflow the context window in the other. Splitting at submit, on paragraph and then sentence
boundaries, keeps every word learnable and every probe answerable.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .grade import normalize_answer
from .selfedit import split_sentences
from .types import Probe

_PARAGRAPH = re.compile(r"\n\s*\n")


def split_passages(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """`text` cut into passages of at most `max_tokens` tokens, in order, losing no word.

    Paragraphs are kept whole where they fit, else split into sentences, else (a run-on sentence)
    into runs of words. Neighbouring pieces are packed together up to the limit.
    """
    if count_tokens(text) <= max_tokens:
        return [text.strip()]
    pieces: list[str] = []
    for paragraph in (p.strip() for p in _PARAGRAPH.split(text) if p.strip()):
        if count_tokens(paragraph) <= max_tokens:
            pieces.append(paragraph)
            continue
        for sentence in split_sentences(paragraph):
            pieces.extend([sentence] if count_tokens(sentence) <= max_tokens
                          else _pack(sentence.split(), " ", count_tokens, max_tokens))
    return _pack(pieces, "\n\n", count_tokens, max_tokens)


def _pack(pieces: list[str], sep: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Join neighbouring pieces with `sep` while the result stays within `max_tokens`."""
    packed: list[str] = []
    for piece in pieces:
        joined = f"{packed[-1]}{sep}{piece}" if packed else piece
        if packed and count_tokens(joined) <= max_tokens:
            packed[-1] = joined
        else:
            packed.append(piece)
    return packed


def assign_probes(passages: list[str], probes: list[Probe]) -> list[list[Probe]]:
    """Each probe goes to the passage that holds its answer (else the one sharing most of its words),
    so every passage is gated on questions it can answer."""
    texts = [normalize_answer(p) for p in passages]
    words = [set(t.split()) for t in texts]
    assigned: list[list[Probe]] = [[] for _ in passages]
    for probe in probes:
        answer = normalize_answer(probe.answer)
        holders = [i for i, t in enumerate(texts) if answer and answer in t]
        if holders:
            assigned[holders[0]].append(probe)
            continue
        asked = set(normalize_answer(f"{probe.question} {probe.answer}").split())
        best = max(range(len(passages)), key=lambda i: (len(asked & words[i]), -i))
        assigned[best].append(probe)
    return assigned
