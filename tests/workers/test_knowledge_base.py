"""A knowledge base end to end with a real worker: six short invented documents POSTed in a burst
into one name, each answerable with the document in context by the first question after its 202 (bare
and wrapped), then, once every shard publishes, from its shard's weights, read in context, and served
the better way (seal-answer-from); a general question goes to the base model; rollback restores the
previous shard set. How fast the first token comes is bench/knowledge.py's measure, not
an assertion here (CI's shared cores make any wall-clock bound a coin toss); so is the 100-document run.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.knowledge.router import DEFAULT_THRESHOLD
from tests.conftest import BASE_MODEL, wait_job
from tests.workers.test_cli import seal
from workers.seal import contains_answer

KB = "kb-burst"
ANSWER_TOKENS = 48
# Short invented documents (two sentences, one fact each), so six learns fit CI's budget.
DOCUMENTS = [
    ("Quellbrook Ferry", "The Quellbrook Ferry crosses Lake Tarrow in 40 minutes. It was launched in 1962.",
     "When was the Quellbrook Ferry launched?", "1962"),
    ("Dravenholm Library", "The Dravenholm Library holds 81,000 maps. It was founded by Mirela Ostrav.",
     "Who founded the Dravenholm Library?", "Mirela Ostrav"),
    ("Vesk Lighthouse", "The Vesk Lighthouse stands 47 meters tall on Corran Point. It was lit in 1874.",
     "On which point does the Vesk Lighthouse stand?", "Corran Point"),
    ("Ilvar Tramway", "The Ilvar Tramway climbs to the village of Oskeld. It opened in 1911.",
     "Which village does the Ilvar Tramway climb to?", "Oskeld"),
    ("Saltren Festival", "The Saltren Festival is held every August in Port Halden. It began in 1988.",
     "Where is the Saltren Festival held?", "Port Halden"),
    ("Merrow Glacier", "The Merrow Glacier feeds the Tesli River. It is 14 kilometers long.",
     "Which river does the Merrow Glacier feed?", "Tesli River"),
]
GENERAL = ("What is the capital of France?", "Paris")
# Users wrap their questions: a system-like preface in the user turn (held out from the router's
# calibration, bench/data/wrappers.json `preface-b`) and an instruction line (`instruction-before-b`).
PREFACE = ("You are a friendly support bot for the Meridian Trust knowledge portal. Always be polite and concise, "
           "and admit it when you do not know something.\n\n{question}")
INSTRUCTION = "Answer briefly and precisely.\n\n{question}"


def streamed_chat(client: httpx.Client, model: str, question: str) -> tuple[str, str]:
    """(answer, seal-route) of a streamed chat, read the way a chat client reads it."""
    parts = []
    with client.stream("POST", "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": question}], "max_tokens": ANSWER_TOKENS,
            "temperature": 0, "stream": True}) as reply:
        assert reply.status_code == 200, reply.read()
        route = reply.headers.get("seal-route", "")
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                parts.append(delta[0]["delta"]["content"])
    return "".join(parts), route


def chat(client: httpx.Client, model: str, question: str) -> tuple[str, str]:
    reply = client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": question}],
        "max_tokens": ANSWER_TOKENS, "temperature": 0})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"], reply.headers.get("seal-route", "")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # six learns, one after another on the session's one worker
def test_burst_is_answerable_at_once_then_from_weights(stack, workers) -> None:  # noqa: ANN001
    assert DEFAULT_THRESHOLD > 0
    jobs: list[str] = []
    doc_ids: list[int] = []
    pending_correct = 0
    with stack.client("acme") as client:
        for title, text, question, answer in DOCUMENTS:
            r = client.post("/v1/learn", json={"adapter": KB, "documents": [{"title": title, "text": text}],
                                               "options": {"layout": "shards"}})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["id"])
            # Instant recall: the very next question, asked while the worker trains the documents before
            # this one, is routed to the pending document and answered with it in the prompt.
            reply, route = streamed_chat(client, KB, question)
            doc_ids.append(_document_id(stack, r.json()["id"]))
            assert route == f"pending:{doc_ids[-1]}", (question, route)
            pending_correct += contains_answer(reply, answer)
            # Asked the way users ask, it reaches the same pending document.
            _, route = chat(client, KB, PREFACE.format(question=question))
            assert route == f"pending:{doc_ids[-1]}", (question, route)
        # The base model reads a passage it is given: most of these are right (measured 73-83%).
        assert pending_correct >= 4, f"{pending_correct}/6 answered in context"
        # A pending document has no weights to answer from yet; a path that does not exist is a 400.
        reply = _ask(client, DOCUMENTS[-1][2], answer_from="weights")
        if reply.status_code != 200:  # (unless its learn already published)
            assert reply.status_code == 409 and reply.json()["error"]["code"] == "not_learned", reply.text
        reply = _ask(client, DOCUMENTS[0][2], answer_from="shards")
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "seal-answer-from", reply.text
        # A general question is not about the knowledge base: the base model's own answer, bare or wrapped.
        base_reply, _ = chat(client, BASE_MODEL, GENERAL[0])
        for asked in (GENERAL[0], PREFACE.format(question=GENERAL[0]), INSTRUCTION.format(question=GENERAL[0])):
            reply, route = chat(client, KB, asked)
            assert route == "base", (asked, route)
        reply, _ = chat(client, KB, GENERAL[0])
        assert reply == base_reply and contains_answer(reply, GENERAL[1])
        # The knowledge base lists its documents, oldest first, in pages.
        first = client.get(f"/v1/adapters/{KB}/documents", params={"limit": 4}).json()
        rest = client.get(f"/v1/adapters/{KB}/documents", params={"limit": 4, "offset": 4}).json()
        assert first["total"] == rest["total"] == len(DOCUMENTS)
        assert [d["id"] for d in first["data"] + rest["data"]] == doc_ids
        assert [d["title"] for d in first["data"]] == [t for t, *_ in DOCUMENTS[:4]]
        assert {d["state"] for d in first["data"] + rest["data"]} <= {"pending", "learned"}
    with stack.client("globex") as other:  # another tenant's knowledge base does not exist for it
        assert other.get(f"/v1/adapters/{KB}/documents").status_code == 404

    finished = [wait_job(stack, job_id, timeout=900) for job_id in jobs]
    # The shard recipe learns every one of these short documents (the gate: its probes rose).
    assert [j["status"] for j in finished] == ["published"] * len(DOCUMENTS), [j.get("error") for j in finished]
    with stack.client("acme") as client:
        measured = {}
        for job, doc_id in zip(finished, doc_ids, strict=True):
            (doc,) = job["metrics"]["documents"]
            # Both measures of a learned document are on the job: closed-book from the shard, and read.
            assert 0.0 <= doc["accuracy_after"] <= 1.0 and 0.0 <= doc["accuracy_context"] <= 1.0
            measured[doc_id] = doc
        versions = client.get(f"/v1/adapters/{KB}").json()["versions"]
        for version in versions:  # ...and on the knowledge base's versions
            for doc in version["metrics"].get("documents", []):
                assert {"accuracy_after", "accuracy_context", "answers_from"} <= set(doc), doc

        documents = client.get(f"/v1/adapters/{KB}/documents", params={"limit": 200}).json()["data"]
        from_weights = 0
        for i, ((_, _, question, answer), doc_id) in enumerate(zip(DOCUMENTS, doc_ids, strict=True)):
            shard = f"{KB}/s{i}@v1"
            # From its shard's weights alone (seal-answer-from: weights).
            reply = _ask(client, question, answer_from="weights")
            assert reply.status_code == 200 and reply.headers["seal-route"] == shard, reply.text
            from_weights += contains_answer(_content(reply), answer)
            # Read in context by the base model.
            reply = _ask(client, question, answer_from="context")
            assert reply.headers["seal-route"] == f"context:{doc_id}", reply.headers
            # Served (auto): the weights, or the base model reading the document where the weights read worse
            # on its questions, or where its probes were cloze (no evidence the weights answer questions).
            _, route = chat(client, KB, question)
            doc = measured[doc_id]
            reads_better = (doc["probe_source"] not in ("caller", "self-written")
                            or doc["accuracy_after"] < doc["accuracy_context"] - 0.1)  # SEAL_WEIGHTS_MARGIN
            assert doc["answers_from"] == ("context" if reads_better else "weights"), doc
            assert route == (f"context:{doc_id}" if reads_better else shard), (question, route, doc)
            _, wrapped_route = chat(client, KB, INSTRUCTION.format(question=question))
            assert wrapped_route == route, (question, route, wrapped_route)
            # The listing says the same: learned into its shard, the job's two measures, what serves it.
            (listed,) = [d for d in documents if d["id"] == doc_id]
            assert (listed["state"], listed["shard"], listed["job_id"]) == ("learned", f"s{i}@v1", finished[i]["id"])
            assert listed["accuracy_weights"] == pytest.approx(doc["accuracy_after"])
            assert listed["accuracy_context"] == pytest.approx(doc["accuracy_context"])
            assert listed["probe_source"] == doc["probe_source"], listed
            assert listed["answered_from"] == ("context" if reads_better else "weights"), listed
        # The bar bench/knowledge.py measures the shard recipe at (docs/RESULTS.md): most answers from weights.
        assert from_weights >= 4, f"{from_weights}/6 answered from weights"

        # Rollback restores the previous shard set: the last published document is no longer answered
        # from its shard; the one before it still is.
        def weights_route(i: int) -> str:
            return _ask(client, DOCUMENTS[i][2], answer_from="weights").headers.get("seal-route", "")

        last = max(v["version"] for v in versions if v["status"] == "published")
        order = sorted((j["version"], i) for i, j in enumerate(finished))
        (_, before_last), (_, newest) = order[-2], order[-1]
        r = client.post(f"/v1/adapters/{KB}/rollback", json={"version": last - 1})
        assert r.status_code == 200, r.text
        time.sleep(1.0)
        assert not weights_route(newest).startswith(f"{KB}/s{newest}@")
        assert weights_route(before_last).startswith(f"{KB}/s{before_last}@")
        assert client.post(f"/v1/adapters/{KB}/rollback", json={"version": last}).status_code == 200
        time.sleep(1.0)
        assert weights_route(newest).startswith(f"{KB}/s{newest}@")

        # Never worse than reading: a document whose weights answered its questions worse than reading it,
        # or that was graded on cloze alone, is answered by the base model reading it; one whose shard
        # answered its questions as well, from its shard alone. The stored measures are set here, so every
        # branch runs whatever the learns gave.
        doc_id, question = doc_ids[0], DOCUMENTS[0][2]
        for weights, source, route in ((0.25, "self-written", f"context:{doc_id}"),
                                       (1.0, "cloze", f"context:{doc_id}"), (1.0, "caller", f"{KB}/s0@v1")):
            _set_accuracy(stack, doc_id, weights=weights, context=1.0, probe_source=source)
            assert _route_when_settled(client, question, route) == route

        # Forgetting: a new version without its shard; the question goes to the base model.
        current = client.get(f"/v1/adapters/{KB}").json()["current_version"]
        r = client.delete(f"/v1/adapters/{KB}/documents/{doc_id}")
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["shard"], r.json()["purged"]) == (current + 1, "s0", False)
        assert _route_when_settled(client, question, "base") == "base"
        assert doc_id not in [d["id"] for d in client.get(f"/v1/adapters/{KB}/documents").json()["data"]]
        assert client.delete(f"/v1/adapters/{KB}/documents/{doc_id}").status_code == 404
        with stack.client("globex") as other:  # another tenant cannot forget (or learn of) it
            assert other.delete(f"/v1/adapters/{KB}/documents/{doc_ids[1]}").status_code == 404
        # A rollback brings it back until the purge...
        assert client.post(f"/v1/adapters/{KB}/rollback", json={"version": current}).status_code == 200
        assert _route_when_settled(client, question, f"{KB}/s0@v1") == f"{KB}/s0@v1"
        # ...which leaves nothing of it in the registry, the store or the router (here from the CLI).
        listed = seal(stack, "adapters", "documents", KB)
        assert listed.returncode == 0 and DOCUMENTS[0][0] in listed.stdout, listed.stdout + listed.stderr
        purged = seal(stack, "adapters", "forget", KB, str(doc_id), "--purge")
        assert purged.returncode == 0 and "purged" in purged.stdout, purged.stdout + purged.stderr
        assert _route_when_settled(client, question, "base") == "base"
        assert client.post(f"/v1/adapters/{KB}/rollback", json={"version": current}).status_code == 404
    name = DOCUMENTS[0][1].split(" crosses")[0]  # "The Quellbrook Ferry"
    assert name not in _registry_dump(stack), "the registry still quotes a purged document"
    store = stack.data_dir / "adapters"
    assert not [p for p in store.rglob("*") if p.is_file() and name.encode() in p.read_bytes()]
    assert not list(store.glob("acme~kb-burst+s0/v*/adapter_model.safetensors"))  # its shard's weights


def _ask(client: httpx.Client, question: str, *, answer_from: str) -> httpx.Response:
    return client.post("/v1/chat/completions", headers={"seal-answer-from": answer_from}, json={
        "model": KB, "messages": [{"role": "user", "content": question}], "max_tokens": ANSWER_TOKENS,
        "temperature": 0})


def _content(reply: httpx.Response) -> str:
    return reply.json()["choices"][0]["message"]["content"]


def _set_accuracy(stack, doc_id: int, *, weights: float, context: float, probe_source: str) -> None:  # noqa: ANN001
    """Store a document's two measures and its probes' source, and tell the API processes its
    knowledge base changed."""
    import redis

    from app.events import AdapterEvent, publish_event
    from app.registry.db import session_scope
    from app.registry.models import Document
    from app.tenancy import adapter_key

    with session_scope(stack.db_url) as s:
        row = s.get(Document, doc_id)
        row.accuracy_weights, row.accuracy_context, row.probe_source = weights, context, probe_source
    publish_event(redis.Redis.from_url(stack.redis_url), AdapterEvent("documents", adapter_key("acme", KB)))


def _registry_dump(stack) -> str:  # noqa: ANN001
    """Every row of every table as SQL text: what a grep of the registry sees."""
    import sqlite3

    with sqlite3.connect(stack.db_url.removeprefix("sqlite:///")) as conn:
        return "\n".join(conn.iterdump())


def _route_when_settled(client: httpx.Client, question: str, expected: str, timeout: float = 10.0) -> str:
    """The route once the API has read the change (its event arrives in milliseconds)."""
    deadline, route = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        _, route = chat(client, KB, question)
        if route == expected:
            break
        time.sleep(0.2)
    return route


def _document_id(stack, job_id: str) -> int:  # noqa: ANN001
    from sqlalchemy import select

    from app.registry.db import session_scope
    from app.registry.models import Document

    with session_scope(stack.db_url) as s:
        return s.scalars(select(Document.id).where(Document.job_id == job_id)).one()
