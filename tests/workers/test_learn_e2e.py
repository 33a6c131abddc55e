"""End to end with a real worker: `seal learn --wait` on a fictional passage (no probes), then closed-book answers.

Passages 0-4 are learned one after another into one adapter by test_continual.py and 7 by
test_learn_worker.py; this one gets a fresh adapter. Every learn costs ~3 min on 2 cores, and CI's
90 minutes hold about 15 of them beside the rest of the suite, so the CLI's learn is this test's learn.
"""

from __future__ import annotations

import json

import pytest

from app.registry.db import session_scope
from app.registry.models import AdapterVersion
from tests.conftest import BASE_MODEL
from tests.workers.test_cli import seal
from workers.seal import contains_answer

PASSAGE = 5


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


@pytest.mark.slow
def test_learn_with_the_cli_then_answer_closed_book(stack, workers, fictional, tmp_path):
    passage = fictional[PASSAGE]
    adapter = f"fiction-{passage['id']}"
    base = closed_book_score(stack, BASE_MODEL, passage["questions"])
    assert base <= 1
    doc = tmp_path / "doc.jsonl"
    doc.write_text(json.dumps({"title": passage["title"], "context": passage["context"]}) + "\n")  # no probes

    result = seal(stack, "learn", str(doc), "--adapter", adapter, "--wait", timeout=1500)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published" in result.stdout and f"{adapter}@v1" in result.stdout
    assert "accuracy_after" in result.stdout and "training (s)" in result.stdout
    jobs = seal(stack, "jobs", "--adapter", adapter)
    assert jobs.returncode == 0 and "published" in jobs.stdout
    shown = seal(stack, "adapters", "show", adapter)
    assert shown.returncode == 0 and adapter in shown.stdout

    with stack.client() as client:
        job = client.get("/v1/learn", params={"adapter": adapter}).json()["data"][0]
    assert job["status"] == "published" and job["version"] == 1 and job["progress"] == 1.0
    assert job["started_at"] and job["finished_at"]
    assert job["metrics"]["self_generated_probes"] is True
    assert {"generating", "training", "evaluating"} <= set(job["metrics"]["stage_seconds"])
    with session_scope(stack.db_url) as s:
        assert s.query(AdapterVersion).filter_by(job_id=job["id"]).count() == 1
    # With the anchors that keep general answers intact, one passage teaches the bundled 135M model 2-4
    # of its 4 held-out questions (measured on passages 3 and 5-7); without them 3-4, at the cost of
    # most general knowledge. So: at least 2, and more than the base model knew.
    learned = closed_book_score(stack, adapter, passage["questions"])
    assert learned >= max(2, base + 1), f"{learned}/4 closed-book after learning, base {base}/4"
