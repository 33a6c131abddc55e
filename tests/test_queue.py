"""The reconciler keeps Redis in line with the registry: accepted knowledge survives losing Redis."""

from __future__ import annotations

from datetime import timedelta

from app.queue import enqueue_learn, fetch_rq_job, get_queue, reconcile
from app.registry import queries
from app.registry.db import migrate, session_scope
from app.registry.models import JobStatus, LearnJob, utcnow


def make_job(db_url: str, job_id: str, age_s: int = 120, *, dispatched: bool = True) -> None:
    with session_scope(db_url) as session:
        queries.create_learn_job(session=session, job_id=job_id, adapter="a", tenant=None,
                                 documents=[{"text": "fact"}], options={}, idempotency_key=None, request_hash=None)
        row = session.get(LearnJob, job_id)
        row.created_at = utcnow() - timedelta(seconds=age_s)
        row.dispatched_at = row.created_at if dispatched else None


def test_lost_jobs_are_requeued_and_recent_ones_left_alone(tmp_path, scratch_redis):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(db)
    make_job(db, "lost-1")
    make_job(db, "fresh-1", age_s=1)  # its API process is about to enqueue it
    make_job(db, "held-1", dispatched=False)  # in its tenant's backlog: app/dispatch.py sends it
    scratch_redis.flushdb()  # Redis restarted without its data
    counts = reconcile(scratch_redis, db, timeout_s=60, retries=1)
    assert counts["requeued"] == 1
    assert fetch_rq_job(scratch_redis, "lost-1").get_status() == "queued"
    assert "fresh-1" not in get_queue(scratch_redis).job_ids
    assert fetch_rq_job(scratch_redis, "held-1") is None
    # Idempotent: a second pass finds nothing to do.
    assert reconcile(scratch_redis, db, timeout_s=60, retries=1) == {"requeued": 0, "failed": 0}


def test_exhausted_jobs_are_marked_failed(tmp_path, scratch_redis):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    migrate(db)
    make_job(db, "doomed-1")
    job = enqueue_learn(get_queue(scratch_redis), "doomed-1", timeout_s=60, retries=0)
    job.set_status("failed")
    counts = reconcile(scratch_redis, db, timeout_s=60, retries=0)
    assert counts["failed"] == 1
    with session_scope(db) as session:
        row = session.get(LearnJob, "doomed-1")
        assert row.status is JobStatus.failed and row.error and row.finished_at
