"""Fair dispatch: a tenant's backlog waits in the registry; another tenant's learn goes first."""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.config import Settings
from app.dispatch import dispatch, plan
from app.queue import fetch_rq_job, get_queue
from app.registry import lifecycle, queries
from app.registry.db import session_scope
from app.registry.models import JobStatus, LearnJob, utcnow


def settings_for(db: str, **quotas) -> Settings:  # noqa: ANN003
    return Settings(database_url=db, tenant_quotas=quotas)


def submit(db: str, tenant: str, n: int = 1) -> list[str]:
    ids = []
    with session_scope(db) as session:
        for i in range(n):
            job_id = str(uuid.uuid4())
            queries.create_learn_job(session=session, job_id=job_id, adapter=f"{tenant}~kb", tenant=tenant,
                                     documents=[{"text": f"fact {i}"}], options={}, idempotency_key=None,
                                     request_hash=None)
            # Distinct, increasing submit times: the order a burst of POSTs has.
            session.get(LearnJob, job_id).created_at = utcnow() - timedelta(seconds=1000 - len(ids))
            ids.append(job_id)
    return ids


def planned(db: str, settings: Settings, workers: int) -> list[str]:
    with session_scope(db) as session:
        return plan(session, settings, workers=workers)


def test_a_backlog_waits_and_another_tenants_learn_goes_first(database) -> None:
    db = database
    settings = settings_for(db)
    acme = submit(db, "acme", 5)
    assert planned(db, settings, workers=1) == acme[:1]  # one worker: one of acme's jobs in flight
    assert planned(db, settings, workers=2) == acme[:2]
    with session_scope(db) as session:
        session.get(LearnJob, acme[0]).dispatched_at = utcnow()
    globex = submit(db, "globex")
    # acme has its worker's worth in flight; globex's single learn goes next, not behind acme's four.
    assert planned(db, settings, workers=1) == globex
    # With room for more, the tenant with fewer jobs in flight goes first, then the oldest job.
    assert planned(db, settings, workers=3) == [globex[0], acme[1], acme[2]]


def test_the_concurrent_jobs_quota_caps_what_runs(database) -> None:
    db = database
    settings = settings_for(db, tiny={"concurrent_jobs": 1})
    tiny = submit(db, "tiny", 3)
    assert planned(db, settings, workers=4) == tiny[:1]


def test_dispatch_enqueues_once_and_the_next_job_when_one_ends(database, scratch_redis) -> None:
    db = database
    settings = settings_for(db)
    first, second = submit(db, "acme", 2)
    assert dispatch(scratch_redis, settings) == [first]  # no worker registered: as if one
    assert dispatch(scratch_redis, settings) == []  # idempotent
    assert get_queue(scratch_redis).job_ids == [first] and fetch_rq_job(scratch_redis, second) is None
    with session_scope(db) as session:
        job = session.get(LearnJob, first)
        lifecycle.finish(session, job, JobStatus.published, "published")
    assert dispatch(scratch_redis, settings) == [second]
    with session_scope(db) as session:
        assert session.get(LearnJob, second).dispatched_at is not None
        # It waited (its submit time is in the past): its events say so, the first one's do not.
        assert [e.message for e in queries.events_after(session=session, job_id=second, after_id=0)][-1].startswith(
            "dispatched to the queue after")
