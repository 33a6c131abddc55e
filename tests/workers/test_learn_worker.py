"""Worker behaviour: probes drive selection, cancel in every stage.

A worker SIGKILLed mid-training (the job is retried and publishes one version) is tested under
`seal up` by tests/ops/test_up.py, which also restarts the worker.

Sequential versions of one adapter (v2 trained after v1, parent 1) are tested by test_continual.py."""

from __future__ import annotations

import pytest

from app.registry.db import session_scope
from app.registry.models import Adapter, AdapterVersion
from app.tenancy import adapter_key
from tests.conftest import wait_job


def submit(stack, adapter: str, passage: dict, *, probes: bool = False, who: str = "acme", **options) -> str:  # noqa: ANN003
    doc = {"title": passage["title"], "text": passage["context"]}
    if probes:
        doc["probes"] = [{"question": q["question"], "answer": q["answer"]} for q in passage["questions"]]
    with stack.client(who) as client:
        r = client.post("/v1/learn", json={"adapter": adapter, "documents": [doc], "options": options})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def versions_of(stack, adapter: str, tenant: str = "acme") -> list[AdapterVersion]:
    with session_scope(stack.db_url) as s:
        row = s.query(Adapter).filter_by(name=adapter_key(tenant, adapter)).one_or_none()
        return list(row.versions) if row else []


@pytest.mark.slow
def test_probes_drive_selection_and_metrics(stack, workers, fictional):
    # A sampled self-edit format, so the two candidates differ and selection has something to choose.
    job = wait_job(stack, submit(stack, "probed", fictional[1], probes=True, format="recite", k=2, epochs=6, lr=2e-3),
                   timeout=900)
    # Published, or rejected by the strict canary rule (which the bundled model's learns break): the
    # selection among candidates happens before the gate either way.
    assert job["status"] in ("published", "rejected"), job["error"]
    m = job["metrics"]
    assert m["self_generated_probes"] is False and m["probes"] == 4
    assert m["accuracy_after"] > m["accuracy_before"]
    doc = m["documents"][0]
    assert len(doc["candidates"]) == 2 and doc["probe_source"] == "caller"
    best = max(c["accuracy"] for c in doc["candidates"])
    assert doc["candidates"][doc["best_candidate"]]["accuracy"] == best == m["accuracy_after"]
    assert any(e["type"] == "metrics" for e in job["events"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["generating", "training", "evaluating"])
def test_cancel_in_each_stage(stack, workers, fictional, stage):
    # One epoch: the stages are what is under test, and the job must not finish before the cancel lands.
    # The stream layout: its gate decodes the whole canary, so "evaluating" lasts long enough to cancel in;
    # a knowledge-base shard's gate asks only what the router sends it (often nothing: ~0.03 s).
    job_id = submit(stack, f"cancel-{stage}", fictional[2], epochs=1, layout="stream")
    job = wait_job(stack, job_id, until=lambda j: j["stage"] == stage or j["status"] not in ("queued", "running"),
                   timeout=900)
    assert job["status"] == "running", f"job reached {job['status']} before stage {stage}"
    with stack.client() as client:
        assert client.post(f"/v1/learn/{job_id}/cancel").status_code == 200
    job = wait_job(stack, job_id, timeout=300)
    assert job["status"] == "cancelled"
    assert versions_of(stack, f"cancel-{stage}") == []
