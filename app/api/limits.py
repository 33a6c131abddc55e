"""Bounds shared by every wire model, so that bad input fails validation (400) instead of deep inside.

Python's JSON parser accepts what later layers cannot handle: `"\\udc00"` parses to a lone
surrogate that UTF-8 cannot encode (the tokenizer, the log and the response all fail), a NUL
character is refused by PostgreSQL text columns, and an integer has no size limit while SQLite,
PostgreSQL and vLLM stop at 64 bits.
"""

from __future__ import annotations

from typing import Any

# The largest integer any wire field accepts: SQLite and PostgreSQL `integer` columns and vLLM's
# int32 token ids all stop here, and no count, offset or version of ours comes near it.
MAX_INT32 = 2**31 - 1
# OpenAI's `seed` is an int64; torch seeds its generators from any value in this range.
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1


def text_problem(value: str, *, allow_nul: bool = True) -> str | None:
    """Why `value` cannot be stored or encoded, or None when it is fine."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it contains a lone surrogate, e.g. '\\udc00')"
    if not allow_nul and "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    return None


def check_text(value: Any, *, allow_nul: bool = True) -> Any:
    """Raise ValueError (a 400 naming the field) for text that cannot be encoded; lists are checked item by item."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and (problem := text_problem(item, allow_nul=allow_nul)):
            raise ValueError(problem)
    return value
