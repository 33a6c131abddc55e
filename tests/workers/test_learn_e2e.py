"""End to end with a real worker: fictional passages posted without probes, then closed-book answers
the way a user asks (48 answer tokens, no passage in the prompt).

The promise under test is the gate's: a version publishes only when the adapter costs the model at
most 1 of its 24 canary answers, and what publishes answers at least 3 of each passage's 4 questions.
A rejection must say why, with the numbers, and must never come from bad probes: every probe's gold
answer is stated in the passage. On the bundled 135M model no recipe measured so far meets the canary
rule while learning a passage (docs/RESULTS.md), so these learns are expected to end rejected there;
with a model that can, the same assertions hold the published branch to the product's promise.
These learn into the single-LoRA `stream` layout, the path whose one adapter answers every question
(and so must keep the canary itself); knowledge bases, the default, route general questions to the
base model and are tested end to end by test_knowledge_base.py. Two passages, each into a fresh
adapter: one through the CLI, one by POST. The rest of the dev set runs in bench/learn.py, which
reports every passage's verdict; a test needs only enough learns to hold each path to the promise.
"""

from __future__ import annotations

import json

import pytest

from app.registry.db import session_scope
from app.registry.models import AdapterVersion
from tests.conftest import BASE_MODEL, wait_job
from tests.workers.test_cli import seal
from workers.seal import contains_answer, normalize_answer

PASSAGE = 5
POSTED = 8  # a second passage, posted over HTTP without probes
ANSWER_TOKENS = 48  # what a user's short question gets; the gate grades with the same budget
CANARY_QUESTIONS = 24


def closed_book_score(stack, model: str, questions: list[dict], who: str = "acme") -> int:
    """Correct answers out of the passage's questions, asked with no context in the prompt."""
    client = stack.openai(who)
    correct = 0
    for q in questions:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q["question"]}],
                                               max_tokens=ANSWER_TOKENS, temperature=0)
        correct += contains_answer(reply.choices[0].message.content, q["answer"])
    return correct


def canary_drop(job: dict) -> int:
    """Canary questions the published adapter lost against the base model, from the job's own gate."""
    numbers = job["metrics"]["documents"][0]["gate"]["numbers"]
    return round((numbers["canary_before"] - numbers["canary_after"]) * CANARY_QUESTIONS)


def check_verdict(stack, job: dict, passage: dict, adapter: str, who: str = "acme") -> None:
    """A verdict kept its promise: published -> it answers and kept the canary; rejected -> it says why."""
    document = job["metrics"]["documents"][0]
    gate = document["gate"]
    # Why it ended this way is on record: every probe, with the parent's and the adapter's answer.
    assert document["predictions"], document
    assert all({"question", "answer", "prediction", "before"} <= p.keys() for p in document["predictions"])
    # Probes are gradeable: each gold answer is something the passage states.
    text = normalize_answer(passage["context"])
    assert all(normalize_answer(p["answer"]) in text for p in document["predictions"]), document["predictions"]
    assert document["probe_source"] in ("self-written", "self-written+cloze", "cloze")
    assert job["metrics"]["recipe"]["format"]
    if job["status"] == "published":
        assert gate["accepted"] and canary_drop(job) <= 1, gate
        learned = closed_book_score(stack, adapter, passage["questions"], who)
        assert learned >= 3, f"{passage['title']}: {learned}/4 closed-book at {ANSWER_TOKENS} tokens"
        return
    assert job["status"] == "rejected", (job["status"], job.get("error"))
    assert not gate["accepted"] and job["error"]
    numbers = gate["numbers"]
    broke_canary = canary_drop(job) > 1
    no_gain = "new_after" in numbers and not (numbers["new_after"] > numbers["new_before"]
                                              or numbers["new_before"] == 1.0)
    assert broke_canary or no_gain or numbers.get("old_drop", 0) > numbers.get("old_margin", 1), numbers
    if broke_canary:
        assert "canary accuracy dropped" in job["error"]
    if no_gain:  # a second recipe was tried first, and the error names what the probes got wrong
        assert len(document["candidates"]) >= 2 and "expected" in job["error"]
    # A rejected learn serves nothing new.
    with stack.client(who) as client:
        assert client.get("/v1/models").json()["data"] and all(
            m["id"] != adapter for m in client.get("/v1/models").json()["data"])


@pytest.mark.slow
def test_learn_with_the_cli_then_answer_closed_book(stack, workers, fictional, tmp_path):
    passage = fictional[PASSAGE]
    adapter = f"fiction-{passage['id']}"
    base = closed_book_score(stack, BASE_MODEL, passage["questions"])
    assert base <= 1
    doc = tmp_path / "doc.jsonl"
    doc.write_text(json.dumps({"title": passage["title"], "context": passage["context"]}) + "\n")  # no probes

    # A seed, so the learn takes the same path (one recipe or two) on every run on this kind of CPU.
    result = seal(stack, "learn", str(doc), "--adapter", adapter, "--layout", "stream", "--seed", "0", "--wait",
                  timeout=1500)
    with stack.client() as client:
        job = client.get("/v1/learn", params={"adapter": adapter}).json()["data"][0]
    # `seal learn --wait` exits 0 only for a published version, and always prints the verdict's numbers.
    assert result.returncode == (0 if job["status"] == "published" else 1), result.stdout + result.stderr
    assert job["status"] in result.stdout and "accuracy_after" in result.stdout and "training (s)" in result.stdout
    jobs = seal(stack, "jobs", "--adapter", adapter)
    assert jobs.returncode == 0 and job["status"] in jobs.stdout
    assert job["started_at"] and job["finished_at"] and job["options"]["seed"] == 0
    assert job["metrics"]["self_generated_probes"] is True
    assert {"generating", "training", "evaluating"} <= set(job["metrics"]["stage_seconds"])
    with session_scope(stack.db_url) as s:
        assert s.query(AdapterVersion).filter_by(job_id=job["id"]).count() == 1
    if job["status"] == "published":
        assert f"{adapter}@v1" in result.stdout and job["version"] == 1 and job["progress"] == 1.0
        shown = seal(stack, "adapters", "show", adapter)
        assert shown.returncode == 0 and adapter in shown.stdout
    check_verdict(stack, job, passage, adapter)


@pytest.mark.slow
def test_a_passage_posted_without_probes_gets_an_honest_verdict(stack, workers, fictional):
    """Posted without probes: it publishes keeping the promise, or is rejected saying why."""
    passage = fictional[POSTED]
    adapter = f"posted-{passage['id']}"
    with stack.client() as client:
        r = client.post("/v1/learn", json={"adapter": adapter, "options": {"layout": "stream"},
                                           "documents": [{"title": passage["title"], "text": passage["context"]}]})
    assert r.status_code == 202, r.text
    check_verdict(stack, wait_job(stack, r.json()["id"], timeout=1500), passage, adapter)
