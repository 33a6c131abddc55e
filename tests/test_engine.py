"""Model-name parsing, and the adapter table's swap, drain and rollback logic."""

from __future__ import annotations

import pytest

from app.engine import parse_model_name, version_name


@pytest.mark.parametrize("model, expected", [
    ("notes", ("notes", None)),
    ("notes@v3", ("notes", 3)),
    ("team.notes-2@v10", ("team.notes-2", 10)),
    ("notes@vx", ("notes@vx", None)),
    ("@v3", ("@v3", None)),
])
def test_parse_model_name(model, expected):
    assert parse_model_name(model) == expected


def test_version_name_round_trips():
    assert parse_model_name(version_name("notes", 7)) == ("notes", 7)


# --- the adapter table: swap, drain, rollback ------------------------------------------------------
# These drive the table's own logic against a client that records what vLLM would be asked to do
# and streams nothing; the real AsyncLLM path is exercised by the API tests (tests/api).

import asyncio  # noqa: E402

from app.engine import AdapterState, Engine, Route  # noqa: E402


class RecordingClient:
    """Stands in for AsyncLLM's adapter calls; `generate` holds until released, like a long request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.release = asyncio.Event()

    def get_tokenizer(self) -> None:
        return None

    async def add_lora(self, request) -> bool:  # noqa: ANN001
        self.calls.append(("add", request.lora_name))
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        self.calls.append(("remove", lora_id))
        return True

    async def generate(self, prompt, params, request_id, lora_request=None):  # noqa: ANN001, ANN201
        await self.release.wait()
        yield "done"


def engine(client: RecordingClient, drain_timeout_s: float = 5) -> Engine:
    return Engine(client, base_model_id="base", max_model_len=2048, drain_timeout_s=drain_timeout_s)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_swap_adds_first_and_removes_the_old_version_once_it_drains():
    async def run() -> None:
        client = RecordingClient()
        e = engine(client)
        await e.swap("kb", 1, "/v1", tenant="acme")
        old = e.lookup("kb")
        stream = e.generate([1], None, Route("kb", old), "r1")
        pending = asyncio.ensure_future(stream.__anext__())  # a request pinned to v1
        await settle()
        await e.swap("kb", 2, "/v2", tenant="acme")
        await settle()
        assert e.lookup("kb").version == 2  # new requests go to v2 at once
        assert old.state is AdapterState.draining and ("remove", old.request.lora_int_id) not in client.calls
        client.release.set()
        await pending
        await stream.aclose()
        await settle()
        assert old.state is AdapterState.removed
        assert client.calls == [("add", "kb@v1"), ("add", "kb@v2"), ("remove", old.request.lora_int_id)]

    asyncio.run(run())


def test_rolling_back_while_draining_keeps_the_version():
    async def run() -> None:
        client = RecordingClient()
        e = engine(client)
        await e.swap("kb", 1, "/v1", tenant="acme")
        v1 = e.lookup("kb")
        stream = e.generate([1], None, Route("kb", v1), "r1")
        pending = asyncio.ensure_future(stream.__anext__())
        await settle()
        await e.swap("kb", 2, "/v2", tenant="acme")
        await settle()
        await e.swap("kb", 1, "/v1", tenant="acme")  # rolled back before v1 drained
        client.release.set()
        await pending
        await stream.aclose()
        await settle()
        assert e.lookup("kb") is v1 and v1.state is AdapterState.ready
        assert ("remove", v1.request.lora_int_id) not in client.calls
        assert e.lookup("kb", 2) is None  # v2 drained (it had no requests) and was unloaded

    asyncio.run(run())


def test_ids_are_stable_and_replays_are_no_ops():
    async def run() -> None:
        client = RecordingClient()
        e = engine(client)
        assert await e.swap("kb", 1, "/v1", tenant="acme") >= 0
        first_id = e.lookup("kb").request.lora_int_id
        assert await e.swap("kb", 1, "/v1", tenant="acme") == 0.0  # a replayed event
        await e.swap("kb", 2, "/v2", tenant="acme")
        await settle()
        await e.swap("kb", 1, "/v1", tenant="acme")  # reloaded after removal: same lora_int_id
        assert e.lookup("kb").request.lora_int_id == first_id
        await e.unroute("kb")
        assert e.lookup("kb") is None and e.list_models() == []
        assert [c for c in client.calls if c[0] == "add"] == [("add", "kb@v1"), ("add", "kb@v2"), ("add", "kb@v1")]

    asyncio.run(run())


def test_relative_paths_are_refused():
    async def run() -> None:
        e = engine(RecordingClient())
        try:
            await e.swap("kb", 1, "adapters/kb/v1", tenant=None)
        except ValueError as exc:
            assert "absolute" in str(exc)
        else:
            raise AssertionError("a relative path would be read as a Hub id")

    asyncio.run(run())
