"""A learn job's life: the only code that writes a job's status, stage, progress, attempts,
timestamps, outcome, and the LEARN_JOBS metric.

    queued ──start──▶ running ──finish──▶ published | rejected | failed | cancelled
      ▲                  │
      └──requeue/retry───┘           (cancel: queued → cancelled at once; running → flag)

The API (submit, cancel), the worker (start, progress, outcome) and the queue reconciler all
call these functions inside their own transaction; none of them sets those fields itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from app import metrics
from app.registry import queries
from app.registry.models import JobStage, JobStatus, LearnJob, utcnow


def accepted(job: LearnJob) -> None:
    """A new job was recorded as queued (create_learn_job sets the initial state)."""
    metrics.LEARN_JOBS.labels(status=JobStatus.queued.value).inc()


def start_attempt(session: Session, job: LearnJob) -> bool:
    """The worker takes the job: running, one attempt more. False, and nothing written, when the job
    ended or was asked to cancel after the worker read it. A retire or cancel can land between that read
    and this write (the suite saw it: a job cancelled before it started ran on), so the write is one
    conditional UPDATE and never overwrites the API's cancel."""
    taken = session.execute(
        update(LearnJob)
        .where(LearnJob.id == job.id, LearnJob.status.in_([JobStatus.queued, JobStatus.running]),
               LearnJob.cancel_requested.is_(False))
        .values(status=JobStatus.running, started_at=func.coalesce(LearnJob.started_at, utcnow()),
                attempts=LearnJob.attempts + 1)
        .execution_options(synchronize_session=False)).rowcount
    session.refresh(job)
    if taken:
        queries.add_event(session=session, job_id=job.id, message=f"attempt {job.attempts} started")
    return bool(taken)


def report_progress(job: LearnJob, stage: str, progress: float) -> None:
    job.stage = JobStage(stage)
    job.progress = round(min(progress, 0.99), 4)  # 1.0 is reserved for a published job


def request_cancel(session: Session, job: LearnJob, reason: str | None = None) -> None:
    """Queued jobs end at once; a running one stops at its worker's next checkpoint."""
    if job.status.terminal:
        return
    job.cancel_requested = True
    suffix = f": {reason}" if reason else ""
    if job.status is JobStatus.queued:
        finish(session, job, JobStatus.cancelled, f"cancelled before it started{suffix}")
    else:
        queries.add_event(session=session, job_id=job.id, message=f"cancel requested{suffix}")


def requeue(session: Session, job: LearnJob, message: str, *, give_back_attempt: bool = False) -> None:
    """Back to the queue: a retry after a failure, or a hand-back on shutdown (which is no failed attempt)."""
    job.status, job.stage = JobStatus.queued, None
    if give_back_attempt:
        job.attempts = max(0, job.attempts - 1)
    queries.add_event(session=session, job_id=job.id, level="warning", message=message)


def publish(session: Session, job: LearnJob, *, version: int, job_metrics: dict[str, Any], message: str) -> None:
    job.version = version
    job.metrics = job_metrics
    job.progress = 1.0
    finish(session, job, JobStatus.published, message)


def reject(session: Session, job: LearnJob, *, job_metrics: dict[str, Any], error: str, message: str) -> None:
    job.metrics = job_metrics
    job.error = error
    finish(session, job, JobStatus.rejected, message, level="warning")


def fail(session: Session, job: LearnJob, error: str, *, cancelled: bool = False) -> None:
    """The last attempt failed (or a cancelled job's worker died: it ends cancelled, with the error kept)."""
    if job.status.terminal:
        return
    job.error = job.error or error
    status = JobStatus.cancelled if cancelled else JobStatus.failed
    finish(session, job, status, f"{status.value}: {error}", level="error")


def finish(session: Session, job: LearnJob, status: JobStatus, message: str, level: str = "info") -> None:
    if job.status.terminal:
        return  # a duplicate delivery or a reconciler that raced the worker: the first outcome stands
    job.status = status
    job.finished_at = utcnow()
    queries.add_event(session=session, job_id=job.id, message=message, level=level)
    metrics.LEARN_JOBS.labels(status=status.value).inc()
