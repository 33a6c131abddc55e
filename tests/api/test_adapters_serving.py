"""Adapters: a peft-trained adapter is listed, changes answers by name, and hot-swaps under load."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.conftest import BASE_MODEL
from tests.factories import publish, train_fact_adapter


def wait_for_model(stack, model_id: str, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.client() as client:
            cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
        if model_id in cards and cards[model_id]["version"] == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"{model_id}@v{version} never became servable")


def ask(stack, model: str, question: str, who: str = "acme") -> str:
    reply = stack.openai(who).chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0)
    return reply.choices[0].message.content


@pytest.fixture(scope="module")
def fact(fictional):
    passage = fictional[0]
    q = passage["questions"][0]
    return q["question"], q["answer"]


@pytest.fixture(scope="module")
def fact_adapter(stack, fact, tmp_path_factory):
    question, answer = fact
    src = train_fact_adapter(tmp_path_factory.mktemp("a1"), question, f"The answer is {answer}.")
    version, _ = publish(stack, "fiction-facts", src)
    wait_for_model(stack, "fiction-facts", version)
    return version


def test_adapter_listed_and_changes_answer(stack, fact, fact_adapter):
    question, answer = fact
    with stack.client() as client:
        ids = [c["id"] for c in client.get("/v1/models").json()["data"]]
    assert ids[0] == BASE_MODEL and "fiction-facts" in ids
    base_before = ask(stack, BASE_MODEL, question)
    assert answer.lower() not in base_before.lower()
    assert answer.lower() in ask(stack, "fiction-facts", question).lower()
    assert answer.lower() in ask(stack, f"fiction-facts@v{fact_adapter}", question).lower()
    assert ask(stack, BASE_MODEL, question) == base_before  # the base is untouched by the adapter


def test_other_tenant_cannot_see_or_use_adapter(stack, fact, fact_adapter):
    with stack.client("globex") as client:
        assert "fiction-facts" not in [c["id"] for c in client.get("/v1/models").json()["data"]]
        for model in ("fiction-facts", f"fiction-facts@v{fact_adapter}"):
            r = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    with stack.client("admin") as admin:  # admins see every adapter, by its key
        assert "acme~fiction-facts" in [c["id"] for c in admin.get("/v1/models").json()["data"]]


def test_hot_swap_under_streaming_load(stack, fact, tmp_path_factory):
    """Stream continuously while flipping versions: zero failures, each reply from exactly one version."""
    question, _ = fact
    marks = ("Amberfall", "Brightwater")
    v1, _ = publish(stack, "swapper", train_fact_adapter(tmp_path_factory.mktemp("s1"), question, f"It is {marks[0]}."))
    v2, _ = publish(stack, "swapper", train_fact_adapter(tmp_path_factory.mktemp("s2"), question, f"It is {marks[1]}."))
    wait_for_model(stack, "swapper", v2)
    assert marks[0] in ask(stack, f"swapper@v{v1}", question)
    assert marks[1] in ask(stack, f"swapper@v{v2}", question)

    results: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    async def stream_forever() -> None:
        client = stack.async_openai()
        while not stop.is_set():
            try:
                stream = await client.chat.completions.create(
                    model="swapper", messages=[{"role": "user", "content": question}], max_tokens=24,
                    temperature=0, stream=True)
                results.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and fails the test
                failures.append(exc)

    async def load() -> None:
        await asyncio.gather(*(stream_forever() for _ in range(4)))

    runner = threading.Thread(target=asyncio.run, args=(load(),))
    runner.start()
    swaps = 0
    deadline = time.monotonic() + 240  # CPU speed varies a lot on shared CI machines
    try:
        with stack.client() as client:
            # Flip between versions until replies from both are seen, and at least 6 swaps were made. Each
            # flip waits for a reply to finish after it: flipping on a clock instead kept vLLM's CPU engine
            # loading LoRAs back to back on a slow box (123 flips, 2 minutes, for 8 replies).
            while time.monotonic() < deadline and not failures:
                target = v1 if swaps % 2 == 0 else v2
                r = client.post("/v1/adapters/swapper/rollback", json={"version": target})
                assert r.status_code == 200, r.text
                swaps += 1
                replied = len(results)
                wait_until = min(deadline, time.monotonic() + 15)
                while len(results) == replied and time.monotonic() < wait_until and not failures:
                    time.sleep(0.1)
                seen = {m for m in marks for text in results if m in text}
                if swaps >= 6 and len(seen) == 2 and len(results) >= 8:
                    break
    finally:
        stop.set()
        runner.join(120)
    assert not failures, failures[:3]
    assert len(results) >= 8
    from_v1 = [r for r in results if marks[0] in r and marks[1] not in r]
    from_v2 = [r for r in results if marks[1] in r and marks[0] not in r]
    assert len(from_v1) + len(from_v2) == len(results), [r for r in results if r not in from_v1 + from_v2]
    assert from_v1 and from_v2
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'seal_adapter_swaps_total{adapter="acme~swapper"}' in metrics  # labelled by key, as operators see it
