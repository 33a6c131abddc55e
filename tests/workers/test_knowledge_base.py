"""A knowledge base end to end with a real worker: six short invented documents POSTed in a burst
into one name, each answerable with the document in context by the first question after its 202,
then from a shard's weights once that shard publishes; a general question goes to the base model; rollback
restores the previous shard set. How fast the first token comes is bench/knowledge.py's measure, not
an assertion here (CI's shared cores make any wall-clock bound a coin toss); so is the 100-document run.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.knowledge.router import DEFAULT_THRESHOLD
from tests.conftest import BASE_MODEL, wait_job
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
            doc_id = _document_id(stack, r.json()["id"])
            assert route == f"pending:{doc_id}", (question, route)
            pending_correct += contains_answer(reply, answer)
            # Asked the way users ask, it reaches the same pending document.
            _, route = chat(client, KB, PREFACE.format(question=question))
            assert route == f"pending:{doc_id}", (question, route)
        # The base model reads a passage it is given: most of these are right (measured 73-83%).
        assert pending_correct >= 4, f"{pending_correct}/6 answered in context"
        # A general question is not about the knowledge base: the base model's own answer, bare or wrapped.
        base_reply, _ = chat(client, BASE_MODEL, GENERAL[0])
        for asked in (GENERAL[0], PREFACE.format(question=GENERAL[0]), INSTRUCTION.format(question=GENERAL[0])):
            reply, route = chat(client, KB, asked)
            assert route == "base", (asked, route)
        reply, _ = chat(client, KB, GENERAL[0])
        assert reply == base_reply and contains_answer(reply, GENERAL[1])

    finished = [wait_job(stack, job_id, timeout=900) for job_id in jobs]
    published = [j for j in finished if j["status"] == "published"]
    assert all(j["status"] in ("published", "rejected") for j in finished), [j.get("error") for j in finished]
    with stack.client("acme") as client:
        from_weights = 0
        for job, (_, _, question, answer) in zip(finished, DOCUMENTS, strict=True):
            reply, route = chat(client, KB, question)
            _, wrapped_route = chat(client, KB, INSTRUCTION.format(question=question))
            assert wrapped_route == route, (question, route, wrapped_route)
            if job["status"] == "published":
                # Answered by the shard the document was learned into, at the kb's shard version.
                assert route.startswith("kb-burst/s") and "@v" in route, (question, route)
                from_weights += contains_answer(reply, answer)
            else:  # rejected: never lost, answered in context
                assert route.startswith("context:"), (question, route)
        if published:
            # What the gate promised: each published shard raised its own probes; closed-book through
            # the router, most published documents answer their question from the weights.
            assert from_weights >= (len(published) + 1) // 2, f"{from_weights}/{len(published)} from weights"
            # The first document is still answered at the end (by its own shard, unchanged by later learns).
            if finished[0]["status"] == "published":
                _, route = chat(client, KB, DOCUMENTS[0][2])
                assert route == "kb-burst/s0@v1", route

        versions = client.get(f"/v1/adapters/{KB}").json()["versions"]
        published_versions = [v for v in versions if v["status"] == "published"]
        assert len(published_versions) == len(published)
        if len(published_versions) >= 2:
            # Rollback restores the previous shard set: the document of the last published version is
            # no longer answered from its shard; the one before it still is.
            last = max(v["version"] for v in published_versions)
            order = sorted((j["version"], i) for i, j in enumerate(finished) if j["status"] == "published")
            (_, before_last), (_, newest) = order[-2], order[-1]
            r = client.post(f"/v1/adapters/{KB}/rollback", json={"version": last - 1})
            assert r.status_code == 200, r.text
            time.sleep(1.0)
            _, route = chat(client, KB, DOCUMENTS[newest][2])
            assert not route.startswith(f"kb-burst/s{newest}@"), route
            _, route = chat(client, KB, DOCUMENTS[before_last][2])
            assert route.startswith(f"kb-burst/s{before_last}@"), route
            assert client.post(f"/v1/adapters/{KB}/rollback", json={"version": last}).status_code == 200
            _, route = chat(client, KB, DOCUMENTS[newest][2])
            assert route.startswith(f"kb-burst/s{newest}@"), route


def _document_id(stack, job_id: str) -> int:  # noqa: ANN001
    from sqlalchemy import select

    from app.registry.db import session_scope
    from app.registry.models import Document

    with session_scope(stack.db_url) as s:
        return s.scalars(select(Document.id).where(Document.job_id == job_id)).one()
