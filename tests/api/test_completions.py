"""Completions through the official openai client against the real server and engine."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import BASE_MODEL

QUESTION = "What is the capital of France?"


def test_chat_answers_paris(stack):
    reply = stack.openai().chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=30, temperature=0)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_client_that_leaves_is_counted_as_gone_not_as_a_server_error(stack):
    """A client that hangs up on a long non-streamed answer frees the engine; the request is counted
    499 (client closed request), and the API logs no unhandled error for it."""
    import httpx

    def count(status: str) -> float:  # chat requests that ended with `status`, whatever their model label
        lines = httpx.get(stack.url + "/metrics", timeout=10).text.splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith("seal_requests_total{")
                   and 'route="/v1/chat/completions"' in line and f'status="{status}"' in line)

    log = stack.data_dir / "api.log"
    log_size, gone, failed = log.stat().st_size, count("499"), count("500")
    with stack.client() as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", timeout=1.0, json={
            "model": BASE_MODEL, "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            "max_tokens": 400, "temperature": 0})
    deadline = time.monotonic() + 30
    while count("499") == gone and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count("499") == gone + 1 and count("500") == failed
    with log.open(errors="replace") as f:
        f.seek(log_size)
        assert "unhandled error" not in f.read()


def test_chat_stream_matches_non_stream(stack):
    client = stack.openai()
    kwargs = {"model": BASE_MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 30, "temperature": 0}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_sync_and_stream(stack):
    client = stack.openai()
    kwargs = {"model": BASE_MODEL, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}
    whole = client.completions.create(**kwargs)
    assert "Paris" in whole.choices[0].text
    assert whole.usage.completion_tokens == 5 and whole.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_async_client_concurrent_requests(stack):
    async def run() -> list[str]:
        client = stack.async_openai()
        calls = [client.chat.completions.create(model=BASE_MODEL, messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=20, temperature=0) for _ in range(6)]
        replies = await asyncio.gather(*calls)
        stream = await client.chat.completions.create(model=BASE_MODEL, stream=True, max_tokens=20, temperature=0,
                                                      messages=[{"role": "user", "content": QUESTION}])
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return [r.choices[0].message.content for r in replies] + [streamed]

    texts = asyncio.run(run())
    assert len(set(texts)) == 1 and "Paris" in texts[0]  # greedy: batching must not change answers


def test_n_stop_seed_top_p(stack):
    client = stack.openai()
    msgs = [{"role": "user", "content": "Write a sentence about the sea."}]
    many = client.chat.completions.create(model=BASE_MODEL, messages=msgs, n=3, max_tokens=16, temperature=1.0, seed=7)
    assert sorted(c.index for c in many.choices) == [0, 1, 2]
    again = client.chat.completions.create(model=BASE_MODEL, messages=msgs, n=3, max_tokens=16, temperature=1.0, seed=7)
    assert [c.message.content for c in many.choices] == [c.message.content for c in again.choices]
    stopped = client.completions.create(model=BASE_MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0,
                                        stop=[" 6"], top_p=0.9)
    assert " 6" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


def test_unsupported_openai_fields_are_ignored(stack):
    reply = stack.openai().chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        max_tokens=20, temperature=0, frequency_penalty=0, presence_penalty=0, user="u-1")
    assert reply.choices[0].message.content


def test_chat_logprobs(stack):
    client = stack.openai()
    kwargs = {"model": BASE_MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 6,
              "temperature": 0, "logprobs": True, "top_logprobs": 2}
    reply = client.chat.completions.create(**kwargs)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode()) and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].token == t.token  # greedy picks the most likely token
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    streamed = [t for c in client.chat.completions.create(**kwargs, stream=True)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    plain = client.chat.completions.create(**{**kwargs, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_completion_logprobs(stack):
    client = stack.openai()
    kwargs = {"model": BASE_MODEL, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0,
              "logprobs": 2}
    choice = client.completions.create(**kwargs).choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and token in top and len(top) in (2, 3)
    streamed = [c.choices[0].logprobs for c in client.completions.create(**kwargs, stream=True)
                if c.choices and c.choices[0].logprobs]
    assert [t for s in streamed for t in s.tokens] == lp.tokens
    assert [o for s in streamed for o in s.text_offset] == lp.text_offset
