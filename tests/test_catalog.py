"""The adapter catalog: events are hints to re-read the registry, one bad version never stops
the others, and tenantless adapters reach tenants only when an operator shares them."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import SimpleNamespace

import httpx

from app.catalog import follow_events
from app.events import ADAPTER_CHANNEL, AdapterEvent
from app.redis_server import redis_client
from tests.api.test_adapters_serving import ask, wait_for_model
from tests.api.test_errors import assert_error
from tests.factories import publish, train_fact_adapter

QUESTION = "Which harbour does the Larkspur ferry leave from?"


def test_a_version_that_fails_to_load_leaves_the_others_syncing(stack, tmp_path_factory):
    # Rank 128 is above the engine's max_lora_rank (16 for the bundled recipe, at most 64 by hand): vLLM refuses it.
    too_wide = train_fact_adapter(tmp_path_factory.mktemp("wide"), QUESTION, "From Quayhaven.", steps=2, rank=128)
    publish(stack, "too-wide", too_wide)
    good = train_fact_adapter(tmp_path_factory.mktemp("good"), QUESTION, "From Quayhaven harbour.", steps=30)
    version, _ = publish(stack, "still-fine", good)
    wait_for_model(stack, "still-fine", version)
    assert "quayhaven" in ask(stack, "still-fine", QUESTION).lower()
    assert httpx.get(stack.url + "/readyz").status_code == 200
    with stack.client() as client:
        r = client.post("/v1/chat/completions", json={"model": "too-wide", "messages": [{"role": "user", "content": "hi"}]})
        assert_error(r, 503, code="adapter_unavailable")
        # Publishing a loadable version mends it, with no restart.
        fixed, _ = publish(stack, "too-wide", good)
        wait_for_model(stack, "too-wide", fixed)


def test_events_are_hints_not_instructions(stack, tmp_path_factory):
    """A forged event naming a path and a tenant changes nothing: the registry decides."""
    src = train_fact_adapter(tmp_path_factory.mktemp("forged"), QUESTION, "From Brackwater.", steps=2)
    forged = AdapterEvent("published", "globex~hijack", 1).dumps().replace(
        "}", f', "path": "{src}", "tenant": "globex"}}')
    redis_client(stack.redis_url).publish(ADAPTER_CHANNEL, forged)
    with stack.client("globex") as client:
        r = client.post("/v1/chat/completions", json={"model": "hijack", "messages": [{"role": "user", "content": "hi"}]})
        assert_error(r, 404, code="model_not_found")


def test_tenantless_adapters_are_admin_only_unless_shared(stack, tmp_path_factory):
    src = train_fact_adapter(tmp_path_factory.mktemp("ops"), QUESTION, "From Eastmoor.", steps=2)
    publish(stack, "ops-internal", src, tenant=None)
    with stack.client("admin") as admin:
        assert admin.post("/v1/chat/completions", json={"model": "ops-internal", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    with stack.client("acme") as client:
        r = client.post("/v1/chat/completions", json={"model": "ops-internal", "messages": [{"role": "user", "content": "hi"}]})
        assert_error(r, 404, code="model_not_found")
        assert "ops-internal" not in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_the_event_listener_says_in_one_line_that_redis_is_away(caplog):
    """While Redis is down the listener retries with backoff, each time one warning line, no traceback."""
    with socket.socket() as s:  # a port that nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = SimpleNamespace(state=SimpleNamespace(engine=None, settings=SimpleNamespace(sqlalchemy_url="sqlite://")))

    async def listen_briefly() -> None:
        task = asyncio.create_task(follow_events(app, f"redis://127.0.0.1:{port}/0"))
        await asyncio.sleep(2.0)  # backoff 0.5 s, then 1 s: two or three tries
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    with caplog.at_level(logging.WARNING, logger="app.catalog"):
        asyncio.run(listen_briefly())
    records = [r for r in caplog.records if r.name == "app.catalog"]
    assert len(records) >= 2, [r.getMessage() for r in records]
    assert all(r.levelno == logging.WARNING and r.exc_info is None and "lost Redis" in r.getMessage()
               for r in records), [r.getMessage() for r in records]
