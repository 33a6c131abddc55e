"""The job lifecycle: the one writer of a learn job's status, and its transitions."""

from __future__ import annotations

import pytest

from app.registry import lifecycle, queries
from app.registry.db import migrate, session_scope
from app.registry.models import JobStatus


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'seal.db'}"
    migrate(url)
    with session_scope(url) as s:
        for job_id in ("a", "b"):
            queries.create_learn_job(session=s, job_id=job_id, adapter="acme~kb", tenant="acme",
                                     documents=[{"text": "x"}], options={}, idempotency_key=None, request_hash=None)
    return url


def job(db: str, job_id: str = "a"):  # noqa: ANN201
    with session_scope(db) as s:
        row = queries.get_job(session=s, job_id=job_id, with_events=True)
        return row.status, row.attempts, [e.message for e in row.events], row


def test_attempts_retries_and_the_first_outcome_stands(db):
    with session_scope(db) as s:
        lifecycle.start_attempt(s, queries.get_job(session=s, job_id="a"))
    with session_scope(db) as s:
        lifecycle.requeue(s, queries.get_job(session=s, job_id="a"), "attempt failed; retrying")
    with session_scope(db) as s:
        lifecycle.start_attempt(s, queries.get_job(session=s, job_id="a"))
        lifecycle.report_progress(queries.get_job(session=s, job_id="a"), "training", 1.7)
    with session_scope(db) as s:
        lifecycle.publish(s, queries.get_job(session=s, job_id="a"), version=3, job_metrics={"x": 1},
                          message="published acme~kb@v3")
    with session_scope(db) as s:  # a reconciler that raced the worker cannot overwrite the outcome
        lifecycle.fail(s, queries.get_job(session=s, job_id="a"), "worker died")
    status, attempts, events, row = job(db)
    assert (status, attempts, row.version, row.progress, row.error) == (JobStatus.published, 2, 3, 1.0, None)
    assert events == ["queued", "attempt 1 started", "attempt failed; retrying", "attempt 2 started",
                      "published acme~kb@v3"]


def test_shutdown_hands_the_attempt_back(db):
    with session_scope(db) as s:
        lifecycle.start_attempt(s, queries.get_job(session=s, job_id="a"))
        lifecycle.requeue(s, queries.get_job(session=s, job_id="a"), "worker shutting down", give_back_attempt=True)
    status, attempts, _, row = job(db)
    assert (status, attempts, row.stage) == (JobStatus.queued, 0, None)


def test_cancel_ends_a_queued_job_and_flags_a_running_one(db):
    with session_scope(db) as s:
        lifecycle.start_attempt(s, queries.get_job(session=s, job_id="b"))
    with session_scope(db) as s:
        lifecycle.request_cancel(s, queries.get_job(session=s, job_id="a"))
        lifecycle.request_cancel(s, queries.get_job(session=s, job_id="b"), "the adapter was retired")
    assert job(db, "a")[0] is JobStatus.cancelled and job(db, "a")[3].finished_at is not None
    status, _, events, row = job(db, "b")
    assert status is JobStatus.running and row.cancel_requested
    assert events[-1] == "cancel requested: the adapter was retired"


def test_a_cancel_between_the_workers_read_and_its_start_stands(db):
    """A retire or cancel that lands after the worker read the job as queued is never overwritten by
    the start: the job stays cancelled and no attempt is counted (the suite once saw it run on)."""
    with session_scope(db) as worker:
        stale = queries.get_job(session=worker, job_id="a")
        assert stale.status is JobStatus.queued
        with session_scope(db) as api:
            lifecycle.request_cancel(api, queries.get_job(session=api, job_id="a"), "the adapter was retired")
        assert lifecycle.start_attempt(worker, stale) is False
    with session_scope(db) as worker:
        flagged = queries.get_job(session=worker, job_id="b")
        with session_scope(db) as api:
            queries.get_job(session=api, job_id="b").cancel_requested = True  # flagged while it was being retried
        assert lifecycle.start_attempt(worker, flagged) is False
    status, attempts, events, _ = job(db)
    assert (status, attempts) == (JobStatus.cancelled, 0)
    assert events == ["queued", "cancelled before it started: the adapter was retired"]
    assert job(db, "b")[:2] == (JobStatus.queued, 0)


def test_a_cancelled_jobs_failure_ends_cancelled(db):
    with session_scope(db) as s:
        lifecycle.fail(s, queries.get_job(session=s, job_id="a"), "killed", cancelled=True)
    status, _, events, row = job(db)
    assert status is JobStatus.cancelled and row.error == "killed" and events[-1] == "cancelled: killed"
