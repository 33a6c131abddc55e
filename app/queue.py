"""RQ wiring: the only module that builds queues. Jobs get ids, never rows or tensors."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from app.registry import lifecycle, queries
from app.registry.db import session_scope
from app.registry.models import as_utc, utcnow

logger = logging.getLogger(__name__)

LEARN_QUEUE = "learn"
POLICY_QUEUE = "policy"
LEARN_FUNC = "workers.jobs.learn"
LEARN_KINDS = ("learn", "consolidate")  # the job kinds workers.jobs.learn runs
# A job committed to SQL is enqueued right after; give that moment room before the
# reconciler decides Redis lost it (a double enqueue is harmless, but noisy).
RECONCILE_GRACE = timedelta(seconds=30)
# Backoff between attempts of a failed learn (seconds).
RETRY_INTERVALS = [5, 30, 120]


# Jobs carry ids and plain JSON, never pickles: with RQ's default serializer, whoever can write to
# Redis could make every worker unpickle (run) code of their choosing.
SERIALIZER = JSONSerializer


def get_queue(connection: Redis, name: str = LEARN_QUEUE) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER)


def enqueue_learn(queue: Queue, job_id: str, *, timeout_s: int, retries: int) -> Job:
    """Enqueue learn job `job_id` (the RQ job id equals the registry id)."""
    return queue.enqueue(
        LEARN_FUNC, job_id,
        job_id=job_id,
        job_timeout=timeout_s,
        retry=Retry(max=retries, interval=RETRY_INTERVALS[:retries] or 0) if retries else None,
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        description=f"learn {job_id}",
    )


POLICY_FUNC = "workers.policy_jobs.train_policy"


def enqueue_policy(queue: Queue, request: dict[str, Any], *, timeout_s: int = 24 * 3600) -> Job:
    """Enqueue ReST-EM policy training on the `policy` queue (served by `seal worker -q policy`)."""
    return queue.enqueue(POLICY_FUNC, request, job_timeout=timeout_s, result_ttl=7 * 24 * 3600,
                         retry=Retry(max=3, interval=[30, 120, 600]), description=f"policy {request.get('name')}")


def fetch_rq_job(connection: Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return None


def cancel_rq_job(connection: Redis, job_id: str) -> None:
    job = fetch_rq_job(connection, job_id)
    if job is not None and job.get_status(refresh=True) in (RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED):
        job.cancel()


def reconcile(connection: Redis, db_url: str, *, timeout_s: int, retries: int) -> dict[str, int]:
    """Make Redis agree with the registry, which is the source of truth for accepted knowledge.

    - a dispatched queued/running job that Redis does not know (Redis restarted without its data) is
      enqueued again; jobs not dispatched yet wait for app/dispatch.py;
    - a job whose RQ attempts are exhausted is marked failed in the registry.
    """
    from rq.registry import StartedJobRegistry

    queue = get_queue(connection)
    # Moves jobs of dead workers out of `started` (and retries them when attempts remain).
    StartedJobRegistry(queue=queue).cleanup()
    counts = {"requeued": 0, "failed": 0}
    with session_scope(db_url) as session:
        for job in queries.unfinished_jobs(session=session):
            if job.kind not in LEARN_KINDS or job.dispatched_at is None:
                continue
            if utcnow() - as_utc(job.dispatched_at) < RECONCILE_GRACE:
                continue
            rq_job = fetch_rq_job(connection, job.id)
            status = rq_job.get_status(refresh=True) if rq_job else None
            if rq_job is None or (status in (RQStatus.CANCELED, RQStatus.STOPPED) and not job.cancel_requested):
                enqueue_learn(queue, job.id, timeout_s=timeout_s, retries=retries)
                queries.add_event(session=session, job_id=job.id, level="warning",
                                  message="re-enqueued: the queue had lost this job")
                counts["requeued"] += 1
            elif status == RQStatus.FAILED:
                lifecycle.fail(session, job, _last_error(rq_job), cancelled=job.cancel_requested)
                counts["failed"] += 1
    if any(counts.values()):
        logger.info("reconciled queue with registry: %s", counts)
    return counts


def _last_error(rq_job: Any) -> str:
    result = rq_job.latest_result() if hasattr(rq_job, "latest_result") else None
    text = getattr(result, "exc_string", None) or "the worker failed or was killed on every attempt"
    return text.strip().splitlines()[-1][:500]


def worker_states(connection: Redis) -> list[str]:
    """Each registered RQ worker's state (busy, idle, ...): the learn workers the queue feeds."""
    from rq import Worker

    return [str(w.get_state()) for w in Worker.all(connection=connection)]


def queue_depths(connection: Redis) -> dict[str, int]:
    return {name: len(get_queue(connection, name)) for name in (LEARN_QUEUE, POLICY_QUEUE)}
