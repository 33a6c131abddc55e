"""Answer grading: normalized containment (the default) and token F1. Pure functions."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD style)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def contains_answer(prediction: str, gold: str) -> bool:
    """True when the normalized gold answer appears, on word boundaries, in the normalized prediction."""
    gold_n = normalize_answer(gold)
    if not gold_n:
        return False
    # Padding with spaces keeps "1987" from matching inside "19870" and "art" inside "party".
    return f" {gold_n} " in f" {normalize_answer(prediction)} "


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token-level F1 between normalized prediction and gold."""
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    common = Counter(pred_toks) & Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def graded(question: str, answer: str, prediction: str) -> dict:
    """One graded answer, as every evaluation records it."""
    return {"question": question, "answer": answer, "prediction": prediction,
            "correct": contains_answer(prediction, answer), "f1": token_f1(prediction, answer)}
