"""Which accepted learn jobs go to the queue, and when: fairly across tenants.

The registry holds every accepted job; RQ holds only the jobs dispatched to it. A tenant has at most
`min(its concurrent-jobs quota, the learn workers)` jobs dispatched and unfinished at once, so its
backlog waits in the registry, and another tenant's learn is dispatched at once, behind no more
than the jobs that are already running: one team loading a thousand documents never starves
another team's single learn. Among tenants with room, the one with the fewest jobs in flight goes
first, then the oldest job.

Dispatch runs after every submit, after every job a worker ends, and in the workers' maintenance
(which also re-enqueues a dispatched job that Redis lost: app/queue.reconcile). One process
dispatches at a time (a Redis lock), so no cap is overshot by two processes planning at once.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict, deque
from typing import Any

from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import select, update

from app.config import Settings
from app.queue import LEARN_KINDS, enqueue_learn, get_queue
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import JobStatus, LearnJob, as_utc, utcnow

logger = logging.getLogger(__name__)

DISPATCH_LOCK = "seal:dispatch"
NOTED_WAIT_S = 5  # a job dispatched at its own submit waited milliseconds; one that waited longer says why


def dispatch(redis: Any, settings: Settings) -> list[str]:
    """Dispatch every job that has room now; returns their ids. Redis down: nothing (the job waits
    in the registry, and the next dispatch after Redis is back sends it)."""
    try:
        # Blocking: a dispatch that planned just before our commit would miss our job; ours must follow it.
        with redis.lock(DISPATCH_LOCK, timeout=60, blocking_timeout=30):
            workers = Worker.count(connection=redis, queue=get_queue(redis))
            with session_scope(settings.sqlalchemy_url) as session:
                picked = plan(session, settings, workers=max(1, workers))
                claimed = []
                for job_id in picked:  # a row another dispatcher (an older release) claimed stays its own
                    done = session.execute(update(LearnJob).where(LearnJob.id == job_id, LearnJob.dispatched_at.is_(None),
                                                                  LearnJob.status == JobStatus.queued)
                                           .values(dispatched_at=utcnow()))
                    if done.rowcount:
                        claimed.append(job_id)
                _note_waits(session, claimed)
                session.commit()
            queue = get_queue(redis)
            for job_id in claimed:
                enqueue_learn(queue, job_id, timeout_s=settings.learn_job_timeout_s, retries=settings.learn_retries)
    except RedisError as exc:
        # A claimed job whose enqueue failed is in flight without being in Redis: the reconciler
        # re-enqueues it once Redis is back, as it does for any dispatched job Redis lost.
        logger.warning("dispatch could not reach the queue (%s); accepted jobs wait in the registry", exc)
        return []
    if claimed:
        logger.info("dispatched %d learn jobs (%d workers)", len(claimed), workers)
    return claimed


def _note_waits(session: Any, job_ids: list[str]) -> None:
    """An event on each job that waited to be dispatched, so its owner sees why it started late."""
    now = utcnow()
    for job_id, created in session.execute(select(LearnJob.id, LearnJob.created_at).where(LearnJob.id.in_(job_ids))):
        waited = (now - as_utc(created)).total_seconds()
        if waited >= NOTED_WAIT_S:
            queries.add_event(session=session, job_id=job_id,
                              message=f"dispatched to the queue after {waited:.0f} s: the tenant's earlier jobs "
                                      "ran first, or the queue was unreachable")


def plan(session: Any, settings: Settings, *, workers: int) -> list[str]:
    """The held jobs to dispatch now, in order."""
    rows = session.execute(
        select(LearnJob.id, LearnJob.tenant_key, LearnJob.status, LearnJob.dispatched_at)
        .where(LearnJob.status.in_([JobStatus.queued, JobStatus.running]), LearnJob.kind.in_(LEARN_KINDS))
        .order_by(LearnJob.created_at, LearnJob.id)).all()
    in_flight: Counter[str] = Counter()
    held: dict[str, deque[str]] = defaultdict(deque)
    for job_id, tenant, status, dispatched_at in rows:
        if dispatched_at is not None:
            in_flight[tenant] += 1
        elif status == JobStatus.queued:
            held[tenant].append(job_id)
    order = {tenant: i for i, tenant in enumerate(held)}  # whose oldest held job is oldest

    def room(tenant: str) -> int:
        quota = settings.quota_for(tenant or None)[1]
        return min(quota or workers, workers) - in_flight[tenant]

    picked = []
    while True:
        ready = [t for t, jobs in held.items() if jobs and room(t) > 0]
        if not ready:
            return picked
        tenant = min(ready, key=lambda t: (in_flight[t], order[t]))
        picked.append(held[tenant].popleft())
        in_flight[tenant] += 1
