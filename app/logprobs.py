"""vLLM's per-token log probabilities in OpenAI's two shapes (chat and legacy completions).

vLLM returns, per generated token, a dict token id → Logprob(logprob, rank, decoded_token)
holding the top-N tokens plus the sampled one. Token text and bytes follow vLLM's own OpenAI
server: the token's decoded text, and its UTF-8 bytes (a token that ends inside a multi-byte
character decodes to U+FFFD there too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.api.schemas import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob

# -inf (a token the sampler could never pick) is not JSON; OpenAI and vLLM send this instead.
MIN_LOGPROB = -9999.0


def _token(entry: Any, token_id: int) -> str:
    return entry.decoded_token if entry.decoded_token is not None else f"token_id:{token_id}"


def _top(step: dict[int, Any], n: int) -> list[tuple[int, Any]]:
    return sorted(((i, e) for i, e in step.items() if e.rank is not None and e.rank <= n), key=lambda p: p[1].rank)


def chat_logprobs(token_ids: Sequence[int], steps: Sequence[dict[int, Any] | None] | None, top_n: int) -> ChatLogprobs:
    """`choices[].logprobs` of a chat completion: one entry per generated token."""
    content = []
    for token_id, step in zip(token_ids, steps or (), strict=False):
        if not step or token_id not in step:
            continue
        entry = step[token_id]
        token = _token(entry, token_id)
        top = [TopLogprob(token=(t := _token(e, i)), logprob=max(e.logprob, MIN_LOGPROB), bytes=list(t.encode()))
               for i, e in _top(step, top_n)]
        content.append(ChatTokenLogprob(token=token, logprob=max(entry.logprob, MIN_LOGPROB),
                                        bytes=list(token.encode()), top_logprobs=top))
    return ChatLogprobs(content=content)


def completion_logprobs(
    token_ids: Sequence[int], steps: Sequence[dict[int, Any] | None] | None, top_n: int, text_offset: int = 0
) -> CompletionLogprobs:
    """`choices[].logprobs` of a legacy completion; `text_offset` is where the first token starts in the text."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for token_id, step in zip(token_ids, steps or (), strict=False):
        if not step or token_id not in step:
            continue
        entry = step[token_id]
        token = _token(entry, token_id)
        out.tokens.append(token)
        out.token_logprobs.append(max(entry.logprob, MIN_LOGPROB))
        # OpenAI always includes the sampled token, so a position may hold top_n + 1 entries.
        top = {_token(e, i): max(e.logprob, MIN_LOGPROB) for i, e in _top(step, top_n)}
        top.setdefault(token, max(entry.logprob, MIN_LOGPROB))
        out.top_logprobs.append(top)
        out.text_offset.append(text_offset)
        text_offset += len(token)
    return out
