"""A real passage through the service (issue 29): two Wikipedia paragraphs (SQuAD v1.1 dev, article
"Normans", with its own questions), POSTed with no probes into a knowledge base of their own, as a new
user would. Every learning test before this one used three-sentence invented passages.

The test holds the service to what it promises on any text: the passage is answerable in context at
once; the learn finishes; a published shard answers the passage's question from its weights alone,
with both of the job's measures (closed-book and read) recorded; a rejected one says why in the job's
own words and stays answerable in context. How *well* weights answer real text is bench/knowledge.py
--source squad's measure (docs/RESULTS.md), not an assertion here: on this model it is far below reading.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import wait_job
from tests.workers.test_knowledge_base import ANSWER_TOKENS, _content, _document_id

KB = "kb-normans"
TITLE = "Normans"
TEXT = (
    "Norman architecture typically stands out as a new stage in the architectural history of the regions they "
    "subdued. They spread a unique Romanesque idiom to England and Italy, and the encastellation of these regions "
    "with keeps in their north French style fundamentally altered the military landscape. Their style was "
    "characterised by rounded arches, particularly over windows and doorways, and massive proportions.\n\n"
    "In England, the period of Norman architecture immediately succeeds that of the Anglo-Saxon and precedes the "
    "Early Gothic. In southern Italy, the Normans incorporated elements of Islamic, Lombard, and Byzantine "
    "building techniques into their own, initiating a unique style known as Norman-Arab architecture within the "
    "Kingdom of Sicily."
)
QUESTION = "What kind of arches does Norman architecture have?"  # SQuAD's answer: "rounded"


def _ask(client: httpx.Client, question: str, *, answer_from: str) -> httpx.Response:
    return client.post("/v1/chat/completions", headers={"seal-answer-from": answer_from}, json={
        "model": KB, "messages": [{"role": "user", "content": question}], "max_tokens": ANSWER_TOKENS,
        "temperature": 0})


@pytest.mark.slow
@pytest.mark.timeout(1500)  # one short learn of a real passage: 2.5-3 minutes on this box, more on CI's cores
def test_a_real_passage_is_learned_or_rejected_for_a_stated_reason(stack, workers) -> None:  # noqa: ANN001
    with stack.client("acme") as client:
        # Two epochs, not the recipe's six: this checks what the service does with real text (the bench
        # measures how well it recalls), and the suite's 45 minutes have little room for a full learn of real text.
        r = client.post("/v1/learn", json={"adapter": KB, "documents": [{"title": TITLE, "text": TEXT}],
                                           "options": {"epochs": 2}})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        doc_id = _document_id(stack, job_id)
        reply = _ask(client, QUESTION, answer_from="auto")
        assert reply.status_code == 200 and reply.headers["seal-route"] == f"pending:{doc_id}", reply.headers

    job = wait_job(stack, job_id, timeout=1400)
    assert job["status"] in ("published", "rejected"), (job["status"], job.get("error"))
    (doc,) = job["metrics"]["documents"]
    # Both measures are recorded, and the probes' source is reported (self-written questions or cloze).
    assert 0.0 <= doc["accuracy_after"] <= 1.0 and 0.0 <= doc["accuracy_context"] <= 1.0, doc
    assert doc["probe_source"], doc
    # The teacher read the real paragraph: it answered questions, and what it left out is counted.
    assert doc["teacher_answers"] > 0 and doc["teacher_dropped"] >= 0, doc
    # Whatever the gate decided, the shard learned the passage: its training loss fell (a learn that
    # trained on nothing, or learned nothing, fails here on either branch below).
    best = doc["candidates"][doc["best_candidate"]]
    assert best["sequences"] > 0 and best["train_loss"] < 0.8 * best["first_loss"], best
    with stack.client("acme") as client:
        if job["status"] == "published":
            reply = _ask(client, QUESTION, answer_from="weights")
            assert reply.status_code == 200, reply.text
            assert reply.headers["seal-route"] == f"{KB}/s0@v1", reply.headers  # its shard's first version
            assert _content(reply).strip(), "the shard answered nothing"
        else:
            # The gate said why, in words a user can act on, and the passage is still read in context.
            assert job["error"] and len(job["error"]) > 20, job["error"]
            reply = _ask(client, QUESTION, answer_from="auto")
            assert reply.status_code == 200 and reply.headers["seal-route"] == f"context:{doc_id}", reply.headers
            reply = _ask(client, QUESTION, answer_from="weights")
            assert reply.status_code == 409 and reply.json()["error"]["code"] == "not_learned", reply.text
