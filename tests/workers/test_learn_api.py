"""/v1/learn contract without a worker: validation, durability of the write, idempotency, cancel, listing."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from app.registry.db import session_scope
from app.registry.models import Document, LearnJob
from tests.api.test_errors import assert_error
from tests.conftest import wait_job

DOC = {"title": "Zorvania", "text": "Zorvania is a small island nation whose capital is Quillbrook."}


def count_rows(stack) -> tuple[int, int]:
    with session_scope(stack.db_url) as s:
        return s.scalar(select(func.count()).select_from(LearnJob)), s.scalar(select(func.count()).select_from(Document))


@pytest.mark.parametrize("body, status, param", [
    ({"adapter": "ok", "documents": []}, 400, "documents"),
    ({"adapter": "ok", "documents": [{"text": ""}]}, 400, "documents.0.text"),
    ({"adapter": "ok", "documents": [{"text": "   "}]}, 400, "documents.0.text"),
    ({"adapter": "Bad Name!", "documents": [DOC]}, 400, "adapter"),
    ({"adapter": "-leading", "documents": [DOC]}, 400, "adapter"),
    ({"adapter": "ok", "documents": [{**DOC, "probes": [{"question": "Capital?"}]}]}, 400, "documents.0.probes.0.answer"),
    ({"adapter": "ok", "documents": [{**DOC, "probes": [{"question": "Capital?", "answer": " "}]}]}, 400, None),
    ({"adapter": "ok", "documents": [DOC], "options": {"k": 99}}, 400, "options.k"),
    ({"adapter": "ok", "documents": [DOC], "options": {"rank": 7}}, 400, "options.rank"),
    ({"adapter": "ok", "documents": [DOC], "options": {"format": "poetry"}}, 400, "options.format"),
    ({"adapter": "ok", "documents": [DOC], "options": {"seed": -1}}, 400, "options.seed"),
    ({"adapter": "ok", "documents": [DOC], "surprise": 1}, 400, "surprise"),
    ({"adapter": 5, "documents": [DOC]}, 400, "adapter"),
    ({"adapter": "ok", "documents": "text"}, 400, "documents"),
])
def test_bad_learn_input_writes_nothing(stack, body, status, param):
    before = count_rows(stack)
    with stack.client() as client:
        assert_error(client.post("/v1/learn", json=body), status, param=param)
    assert count_rows(stack) == before


def test_oversized_and_non_json_learn_input(stack):
    before = count_rows(stack)
    with stack.client() as client:
        big = {"adapter": "ok", "documents": [{"text": "x" * (10 * 1024 * 1024)}]}
        assert_error(client.post("/v1/learn", json=big), 413)
        too_long_doc = {"adapter": "ok", "documents": [{"text": "word " * 50_000}]}
        assert_error(client.post("/v1/learn", json=too_long_doc), 413, code="document_too_large")
        assert_error(client.post("/v1/learn", content=b"not json", headers={"content-type": "application/json"}), 400)
        assert_error(client.get("/v1/learn/00000000-0000-0000-0000-000000000000"), 404)
        assert_error(client.post("/v1/learn/nope/cancel"), 404)
    assert count_rows(stack) == before


def test_accept_is_durable_and_idempotent_then_cancel(stack, redis_client):
    body = {"adapter": "idem-test", "documents": [DOC]}
    with stack.client() as client:
        first = client.post("/v1/learn", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 202, first.text
        job = first.json()
        # An idle worker may start the job before the 202 is written, and the reply says so: both are accepted.
        assert job["status"] in ("queued", "running") and job["adapter"] == "idem-test" and job["documents"] == 1
        assert first.headers["location"] == f"/v1/learn/{job['id']}"
        # Recorded in SQL and queued in Redis.
        with session_scope(stack.db_url) as s:
            assert s.get(LearnJob, job["id"]) is not None
        assert redis_client.exists(f"rq:job:{job['id']}")

        again = client.post("/v1/learn", json=body, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 200 and again.json()["id"] == job["id"]
        changed = client.post("/v1/learn", json={**body, "adapter": "other"}, headers={"Idempotency-Key": "k-1"})
        assert_error(changed, 409, code="idempotency_key_reused")
        # Keys are per tenant: another tenant may reuse the same key.
        with stack.client("globex") as globex:
            assert globex.post("/v1/learn", json={**body, "adapter": "globex-idem"},
                               headers={"Idempotency-Key": "k-1"}).status_code == 202

        # Cancel works whether the job is still queued or a worker already started it.
        assert client.post(f"/v1/learn/{job['id']}/cancel").status_code == 200
        cancelled = wait_job(stack, job["id"], timeout=600)
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
        assert client.post(f"/v1/learn/{job['id']}/cancel").json()["status"] == "cancelled"
        events = cancelled["events"]
        assert events[0]["message"] == "queued" and "cancel" in events[-1]["message"]

        # The SSE stream replays the events and ends, since the job is finished.
        with client.stream("GET", f"/v1/learn/{job['id']}/events") as stream:
            text = "".join(stream.iter_text())
        assert "event: job" in text and "event: end" in text and '"status": "cancelled"' in text

    with stack.client("globex") as globex:
        for job_id in [j["id"] for j in globex.get("/v1/learn").json()["data"]]:
            globex.post(f"/v1/learn/{job_id}/cancel")
        assert_error(globex.get(f"/v1/learn/{job['id']}"), 404)  # not its job


def test_list_filters_and_paginates(stack):
    with stack.client() as client:
        page = client.get("/v1/learn", params={"adapter": "idem-test", "status": "cancelled", "limit": 1}).json()
        assert page["total"] >= 1 and len(page["data"]) == 1 and page["data"][0]["adapter"] == "idem-test"
        assert client.get("/v1/learn", params={"status": "bogus"}).status_code == 400
        assert client.get("/v1/learn", params={"limit": 0}).status_code == 400


def test_event_streams_are_bounded_per_tenant(stack):
    """Each open SSE stream polls the registry: one tenant may hold 8 per API process, the 9th is a 429."""
    import contextlib

    with stack.client("acme") as client:
        job = client.post("/v1/learn", json={"adapter": "sse-cap", "documents": [DOC]}).json()
        try:
            with contextlib.ExitStack() as streams:
                for _ in range(8):
                    r = streams.enter_context(client.stream("GET", f"/v1/learn/{job['id']}/events"))
                    assert r.status_code == 200
                assert_error(client.get(f"/v1/learn/{job['id']}/events"), 429, code="too_many_event_streams")
                with stack.client("globex") as other:  # another tenant's budget is its own
                    other_job = other.post("/v1/learn", json={"adapter": "sse-cap", "documents": [DOC]}).json()
                    with other.stream("GET", f"/v1/learn/{other_job['id']}/events") as r:
                        assert r.status_code == 200
                    other.post(f"/v1/learn/{other_job['id']}/cancel")
            # Closed streams give their places back (once the server notices the disconnects).
            deadline = time.monotonic() + 30
            while True:
                client.post(f"/v1/learn/{job['id']}/cancel")
                with client.stream("GET", f"/v1/learn/{job['id']}/events") as r:
                    if r.status_code == 200:
                        break
                assert time.monotonic() < deadline, "the closed streams were never released"
                time.sleep(1)
        finally:
            client.post(f"/v1/learn/{job['id']}/cancel")


def test_long_documents_are_split_into_passages_not_truncated(stack):
    paragraph = ("The Larkspur ferry leaves Quayhaven at dawn and crosses the grey strait in forty minutes. "
                 "Its captain, Ida Venn, has sailed the route for twenty years. ") * 12
    text = "\n\n".join(f"Part {i}. {paragraph}" for i in range(4))  # ~1,500 tokens
    probes = [{"question": "Who captains the Larkspur ferry?", "answer": "Ida Venn"}]
    with stack.client() as client:
        r = client.post("/v1/learn", json={"adapter": "long-doc", "documents": [{"title": "Larkspur", "text": text,
                                                                                   "probes": probes}]})
        assert r.status_code == 202, r.text
        job = r.json()
        client.post(f"/v1/learn/{job['id']}/cancel")
    assert job["documents"] >= 4
    assert any("split into" in e["message"] for e in job["events"])
    with session_scope(stack.db_url) as s:
        stored = s.scalars(select(Document).where(Document.job_id == job["id"]).order_by(Document.position)).all()
        assert " ".join(" ".join(d.text for d in stored).split()) == " ".join(text.split())  # no word lost
        assert sum(len(d.probes) for d in stored) == 1 and all(d.title == "Larkspur" for d in stored)
    with stack.client() as client:  # the budget counts passages: one long document cannot sneak past it
        huge = text * 25  # ~180k characters, ~100 passages: 1,000 passage-epochs at 10 epochs, budget 640
        r = client.post("/v1/learn", json={"adapter": "long-doc", "documents": [{"text": huge}],
                                           "options": {"epochs": 10}})
        if r.status_code == 202:
            client.post(f"/v1/learn/{r.json()['id']}/cancel")
        assert_error(r, 400, code="learn_cost_too_high")
