"""End to end with real workers: learn each fictional passage (no probes) and answer closed-book."""

from __future__ import annotations

import pytest

from app.registry.db import session_scope
from app.registry.models import AdapterVersion
from tests.conftest import BASE_MODEL, wait_job
from workers.seal import contains_answer

PASSAGES = range(10)


def closed_book_score(stack, model: str, questions: list[dict]) -> int:
    """Correct answers out of the passage's questions, asked with no context in the prompt.

    128 tokens: adapters answer by reciting what they learned, and the fact may come late.
    """
    client = stack.openai()
    correct = 0
    for q in questions:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q["question"]}],
                                               max_tokens=128, temperature=0)
        correct += contains_answer(reply.choices[0].message.content, q["answer"])
    return correct


@pytest.fixture(scope="module")
def submitted(stack, workers, fictional) -> dict[int, str]:
    """Queue every passage at once so the worker never idles while tests check answers."""
    jobs = {}
    with stack.client() as client:
        for i in PASSAGES:
            p = fictional[i]
            r = client.post("/v1/learn", json={"adapter": f"fiction-{p['id']}",
                                               "documents": [{"title": p["title"], "text": p["context"]}]})
            assert r.status_code == 202, r.text
            jobs[i] = r.json()["id"]
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("index", PASSAGES)
def test_learn_passage_then_answer_closed_book(stack, fictional, submitted, index):
    passage = fictional[index]
    assert closed_book_score(stack, BASE_MODEL, passage["questions"]) <= 1
    job = wait_job(stack, submitted[index], timeout=1200)
    assert job["status"] == "published", (job["error"], job["metrics"].get("rejected_because"))
    assert job["version"] == 1 and job["progress"] == 1.0 and job["stage"] == "publishing"
    assert job["started_at"] and job["finished_at"]
    assert job["metrics"]["self_generated_probes"] is True
    assert {"generating", "training", "evaluating"} <= set(job["metrics"]["stage_seconds"])
    assert closed_book_score(stack, f"fiction-{passage['id']}", passage["questions"]) >= 3
    with session_scope(stack.db_url) as s:
        assert s.query(AdapterVersion).filter_by(job_id=job["id"]).count() == 1
