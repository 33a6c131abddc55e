"""Continual learning through the real service: four documents into one adapter, the gate, rollback, sleep.

One stream is built once (module fixture) and every test reads from it, so the expensive part (four
learn jobs on a 2-core CPU) runs once.

The documents state facts the base model already knows, with probes it already answers, learned at a
gentle learning rate: under the strict gate (at most 1 of 24 canary answers lost) every fictional
passage the bundled 135M model learns costs it 5-9 canary answers and is rejected (docs/RESULTS.md),
so a stream of fictional passages would test nothing but rejections. These learns pass the same
gate honestly, and the stream's mechanics (replay, lineage, rollback, consolidation) are what is
under test here; what a learn teaches is tested in test_learn_e2e.py and measured in bench/learn.py.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.config import Settings
from tests.api.test_adapters_serving import wait_for_model
from tests.conftest import BASE_MODEL, wait_job
from workers.seal import contains_answer
from workers.seal.continual import load_canary

# The module fixture (four learn jobs) counts toward the first test's time limit.
pytestmark = pytest.mark.timeout(3600)

ADAPTER = "stream"
PASSAGES = range(4)
GENTLE = {"lr": 3e-4, "epochs": 2}
KNOWN = [  # facts and questions the base model answers (the canary set's questions are not among them)
    {"title": "Capitals of Scandinavia", "context": "Oslo is the capital of Norway. Stockholm is the capital of Sweden.",
     "questions": [{"question": "What is the capital of Norway?", "answer": "Oslo"},
                   {"question": "What is the capital of Sweden?", "answer": "Stockholm"}]},
    {"title": "Chemical symbols", "context": "The chemical symbol for gold is Au. The chemical symbol for iron is Fe.",
     "questions": [{"question": "What is the chemical symbol for gold?", "answer": "Au"},
                   {"question": "What is the chemical symbol for iron?", "answer": "Fe"}]},
    {"title": "Languages", "context": "The primary language spoken in Mexico is Spanish. The official language of "
                                      "France is French.",
     "questions": [{"question": "What is the primary language spoken in Mexico?", "answer": "Spanish"},
                   {"question": "What is the official language of France?", "answer": "French"}]},
    {"title": "Currencies", "context": "The currency used in Germany is the euro. The currency of the United Kingdom "
                                       "is the pound.",
     "questions": [{"question": "What is the currency used in Germany?", "answer": "euro"},
                   {"question": "What is the currency of the United Kingdom?", "answer": "pound"}]},
]


def answers(stack, model: str, questions: list[dict]) -> list[bool]:
    """Closed-book: only the question in the prompt, with the 48-token budget a user gets.

    Asked concurrently, as real clients would: the engine batches them (LoRA decoding is slow on CPU).
    """
    client = stack.openai()

    def ask(q: dict) -> bool:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q["question"]}],
                                               max_tokens=48, temperature=0)
        return contains_answer(reply.choices[0].message.content, q["answer"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(ask, questions))


def replies(stack, model: str, questions: list[dict]) -> list[str]:
    """Greedy reply texts, one question at a time (so batching cannot change a reply)."""
    client = stack.openai()
    return [client.chat.completions.create(model=model, messages=[{"role": "user", "content": q["question"]}],
                                           max_tokens=32, temperature=0).choices[0].message.content
            for q in questions]


def learn(stack, passage: dict, *, probes: bool = True, **options) -> dict:  # noqa: ANN003
    doc = {"title": passage["title"], "text": passage["context"]}
    if probes:
        doc["probes"] = passage["questions"]
    with stack.client() as client:
        # The single-stream layout: replay, warm starts and whole-stream consolidation live there
        # (knowledge bases, the default, are tests/workers/test_knowledge_base.py).
        r = client.post("/v1/learn", json={"adapter": ADAPTER, "options": {"layout": "stream", **options},
                                           "documents": [doc]})
        assert r.status_code == 202, r.text
    return wait_job(stack, r.json()["id"], timeout=1500)


@pytest.fixture(scope="module")
def stream(stack, workers) -> list[dict]:
    """Learn the four known documents one after another into one adapter; returns the finished jobs.

    Each ends published or rejected by the gate; refusing a learn that costs too much is the gate's job.
    """
    # Fixed seeds: these gentle learns sit near the canary's edge, and with seeds read from the jobs' ids
    # the same box published 1 of 4 in one run and 3 of 4 in the next (2026-12-07). The verdicts are not
    # under test here; the stream's mechanics are, and they need published versions.
    jobs = [learn(stack, KNOWN[i], seed=i, **GENTLE) for i in PASSAGES]
    for i, job in enumerate(jobs):
        assert job["status"] in ("published", "rejected"), (i, job["status"], job["error"])
    return jobs


def published(stream: list[dict]) -> list[dict]:
    return [j for j in stream if j["status"] == "published"]


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    return [q for i in PASSAGES for q in KNOWN[i]["questions"]]


@pytest.mark.slow
def test_sequential_learning_grows_the_stream_within_the_gate(stack, stream):
    done = published(stream)
    assert stream[0]["status"] == "published" and len(done) >= 2, [j["status"] for j in stream]
    assert [j["version"] for j in done] == sorted(j["version"] for j in done)
    margin = Settings().gate_canary_margin
    for job in done:  # every published version kept the promises the gate checked
        gate = job["metrics"]["documents"][0]["gate"]["numbers"]
        assert gate["new_after"] > gate["new_before"] or gate["new_before"] == 1.0
        assert gate["canary_margin"] == margin
        assert gate["canary_before"] - gate["canary_after"] <= margin + 1e-9
        if "old_before" in gate:  # the effective margin: never finer than one earlier probe
            assert gate["old_before"] - gate["old_after"] <= gate["old_margin"] + 1e-9
    # The last job rebuilt from the base weights on every sequence the served version had absorbed, or,
    # past the replay cap, warm-started from it with a replay sample.
    absorbed_before_last = sum(j["metrics"]["documents"][0]["new_sequences"] for j in stream[:-1]
                               if j["status"] == "published")
    replayed = stream[-1]["metrics"]["documents"][0]["replayed_sequences"]
    cap = Settings().replay_max_sequences
    assert replayed == absorbed_before_last or (absorbed_before_last > cap and 0 < replayed <= cap)
    with stack.client() as client:
        adapter = client.get(f"/v1/adapters/{ADAPTER}").json()
    assert adapter["current_version"] == done[-1]["version"]
    # Lineage: each version names the version that was serving when it was trained.
    versions = {v["version"]: v for v in adapter["versions"]}
    serving = None
    for job in stream:
        version = job["version"] if job["status"] == "published" else job["metrics"]["rejected_version"]
        assert versions[version]["parent_version"] == serving, (version, versions[version])
        serving = job["version"] if job["status"] == "published" else serving
    # Closed book through the API, over the passages the served version absorbed.
    absorbed = [q for i, job in zip(PASSAGES, stream, strict=True) if job["status"] == "published"
                for q in KNOWN[i]["questions"]]
    graded, base = answers(stack, ADAPTER, absorbed), answers(stack, BASE_MODEL, absorbed)
    # The gate promised no earlier answer lost; serving decodes with vLLM where the gate scored with
    # peft, so one greedy answer may differ.
    assert sum(graded) >= sum(base) - 1, f"{sum(graded)}/{len(absorbed)} vs base {sum(base)}"


@pytest.mark.slow
def test_canary_set_stays_within_the_gate_margin(stack, stream):
    """Served through the API, the final version keeps the canary score the gate promised.

    The margin is the strict one every model gets (app/config.py): at most 1 of the 24 canaries.
    """
    canary = [{"question": p.question, "answer": p.answer} for p in load_canary()]
    base, adapted = sum(answers(stack, BASE_MODEL, canary)), sum(answers(stack, ADAPTER, canary))
    allowed = Settings().gate_canary_margin * len(canary)
    # The gate scored with peft on CPU, serving decodes with vLLM: greedy answers may differ by one.
    assert adapted >= base - allowed - 1, f"canary: base {base}/{len(canary)}, adapter {adapted}/{len(canary)}"


@pytest.mark.slow
def test_destructive_learn_is_rejected_and_serving_is_unchanged(stack, stream, fictional, questions):
    before = answers(stack, ADAPTER, questions[:8])
    # A learning rate that wrecks the weights in one epoch (and in the two of the job's second recipe).
    job = learn(stack, fictional[5], probes=False, lr=0.5, epochs=1)
    assert job["status"] == "rejected", job["status"]
    gate = job["metrics"]["documents"][0]["gate"]
    assert not gate["accepted"] and gate["numbers"]["canary_after"] < gate["numbers"]["canary_before"]
    assert job["metrics"]["stage_seconds"]["evaluating"] > 0, "the gate's time counts though it ended the job"
    with stack.client() as client:
        adapter = client.get(f"/v1/adapters/{ADAPTER}").json()
    newest = adapter["versions"][-1]  # the stream's own learns may have had candidates rejected before
    assert newest["version"] == job["metrics"]["rejected_version"] and newest["status"] == "rejected"
    assert adapter["current_version"] == published(stream)[-1]["version"]
    assert answers(stack, ADAPTER, questions[:8]) == before


@pytest.mark.slow
def test_rollback_serves_the_older_version(stack, stream, fictional):
    first, last = published(stream)[0]["version"], published(stream)[-1]["version"]
    # Questions no version knows the answer to: their greedy replies follow any change in the weights.
    late = [fictional[i]["questions"][0] for i in PASSAGES]
    with stack.client() as client:
        r = client.post(f"/v1/adapters/{ADAPTER}/rollback", json={"version": first})
        assert r.status_code == 200 and r.json()["current_version"] == first
    wait_for_model(stack, ADAPTER, first)
    try:
        # By name the alias now replies exactly like the pinned first version, not like the last one.
        served, older, newer = (replies(stack, m, late) for m in (ADAPTER, f"{ADAPTER}@v{first}", f"{ADAPTER}@v{last}"))
        assert served == older and served != newer
    finally:
        with stack.client() as client:
            client.post(f"/v1/adapters/{ADAPTER}/rollback", json={"version": last})
        wait_for_model(stack, ADAPTER, last)


@pytest.mark.slow
def test_consolidation_retrains_from_base_under_the_same_gate(stack, workers, stream):
    with stack.client() as client:
        r = client.post(f"/v1/adapters/{ADAPTER}/consolidate")
        assert r.status_code == 202, r.text
        again = client.post(f"/v1/adapters/{ADAPTER}/consolidate")  # one at a time per adapter
        assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    job = wait_job(stack, r.json()["id"], timeout=1500)
    assert job["kind"] == "consolidate"
    time.sleep(3)  # the worker records the job's metrics right after it ends; that once crashed it
    assert workers.alive(), "the worker keeps serving after a consolidation"
    assert job["metrics"]["documents"] == len(published(stream))
    assert {"training", "evaluating"} <= job["metrics"]["stage_seconds"].keys()
    gate = job["metrics"]["gate"]
    with stack.client() as client:
        adapter = client.get(f"/v1/adapters/{ADAPTER}").json()
    newest = adapter["versions"][-1]
    assert newest["source"] == "consolidate" and newest["parent_version"] == published(stream)[-1]["version"]
    if job["status"] == "published":
        assert gate["accepted"] and adapter["current_version"] == newest["version"]
    else:  # the same gate as a learn may refuse it; then the stream keeps serving its last version
        assert job["status"] == "rejected" and not gate["accepted"] and newest["status"] == "rejected"
        assert adapter["current_version"] == published(stream)[-1]["version"]
