"""One learn or consolidate job, run end to end inside a worker: load the job, hand it to its layout
(workers/kb_run.py for a knowledge base, workers/stream_run.py for a single stream), and turn what
stops it (a cancel, a retired adapter, a shutdown, an error) into the job's final state. Every state
change of the job goes through app.registry.lifecycle."""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job

from app.knowledge.shards import is_kb
from app.publishing import AdapterMoved, AdapterOwnedElsewhere
from app.registry import lifecycle, queries
from app.registry.db import session_scope
from app.registry.models import JobStatus
from workers.job_control import JobCancelled, JobInterrupted, JobReporter, PermanentJobError
from workers.learn_core import check_owner
from workers.main import WorkerContext

logger = logging.getLogger(__name__)


def run_job(ctx: WorkerContext, job_id: str) -> dict[str, Any]:
    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if job is None:
            logger.warning("learn job %s is not in the registry; dropping it", job_id)
            return {"status": "missing"}
        if job.status.terminal:
            return {"status": job.status.value, "version": job.version}  # a duplicate delivery
        adapter, tenant = job.adapter, job.tenant
        if job.cancel_requested:
            lifecycle.finish(session, job, JobStatus.cancelled, "cancelled before it started")
            return {"status": "cancelled"}
        knowledge_base = is_kb(queries.get_adapter(session=session, name=adapter))
        consolidation = job.kind == "consolidate"

    reporter = JobReporter(db, job_id)
    try:
        if knowledge_base:
            # Shards lock themselves: learns into other shards of the same kb run beside this one.
            check_owner(db, adapter, tenant)
            from workers.kb_run import run_kb_job, run_kb_repack

            return (run_kb_repack if consolidation else run_kb_job)(ctx, job_id, adapter, tenant, reporter)
        from workers.stream_run import run_stream_job

        return run_stream_job(ctx, job_id, adapter, tenant, reporter, consolidation=consolidation)
    except JobCancelled:
        _finish_cancelled(db, job_id, "cancelled")
        return {"status": "cancelled"}
    except AdapterMoved as exc:
        if not exc.retired:  # moved again on every retraining: let RQ's retry start afresh
            _record_failure(db, job_id, exc)
            raise
        _finish_cancelled(db, job_id, "cancelled: the adapter was retired")
        return {"status": "cancelled"}
    except JobInterrupted:
        _requeue_interrupted(db, job_id)
        raise
    except Exception as exc:
        _record_failure(db, job_id, exc)
        raise


def _finish_cancelled(db: str, job_id: str, message: str) -> None:
    with session_scope(db) as session:
        lifecycle.finish(session, queries.get_job(session=session, job_id=job_id), JobStatus.cancelled, message)


def _requeue_interrupted(db: str, job_id: str) -> None:
    """A shutdown is not a failure: give the attempt back, so RQ's retry hands the job to another worker."""
    rq_job = get_current_job()
    if rq_job is not None:
        rq_job.retries_left = (rq_job.retries_left or 0) + 1
    with session_scope(db) as session:
        lifecycle.requeue(session, queries.get_job(session=session, job_id=job_id),
                          "worker shutting down: job handed back to the queue", give_back_attempt=True)
    logger.warning("learn job %s interrupted by shutdown; requeued", job_id)


def _record_failure(db: str, job_id: str, exc: Exception) -> None:
    """Retry while RQ has attempts left; mark the job failed on the last one, or at once when
    no retry can help (a deterministic failure would only take a worker three more times)."""
    rq_job = get_current_job()
    # ValueError is how the inner loop and vLLM refuse an input (a prompt past the context window, a
    # malformed adapter): the same input fails the same way on every attempt.
    permanent = isinstance(exc, (PermanentJobError, AdapterOwnedElsewhere, ValueError))
    if permanent and rq_job is not None:
        rq_job.retries_left = 0
    retries_left = (rq_job.retries_left or 0) if rq_job is not None else 0
    message = f"{type(exc).__name__}: {exc}"[:500]
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if retries_left > 0:
            lifecycle.requeue(session, job, f"attempt failed ({message}); retrying")
        else:
            lifecycle.fail(session, job, message)
            adapter = job.adapter
    if retries_left <= 0:
        _documents_changed(adapter)
    logger.exception("learn job %s failed", job_id)


def _documents_changed(adapter: str) -> None:
    """A knowledge base answers a failed job's documents in context: tell every API process."""
    from app.events import AdapterEvent, publish_event
    from workers.main import get_context

    publish_event(get_context().redis, AdapterEvent("documents", adapter))  # never raises: a hint
