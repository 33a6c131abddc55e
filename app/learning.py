"""Learn-job business rules: ownership, quotas, idempotency, durable submit, cancel."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import metrics
from app.api.learn_schemas import JobEventOut, LearnJobOut, LearnRequest
from app.auth import Principal
from app.config import Settings
from app.errors import Conflict, NotFound, PayloadTooLarge, RateLimited
from app.queue import cancel_rq_job, enqueue_learn, get_queue
from app.registry import queries
from app.registry.models import JobStatus, LearnJob, utcnow

logger = logging.getLogger(__name__)


def request_hash(body: LearnRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_adapter_visible(session: Session, principal: Principal, name: str) -> None:
    """404 (never 403) when the adapter exists but belongs to someone else, so names do not leak."""
    adapter = queries.get_adapter(session=session, name=name)
    if adapter is not None and not principal.can_see(adapter.tenant):
        raise NotFound(f"The adapter '{name}' does not exist.", param="adapter", code="adapter_not_found")


def submit_learn(
    *, session: Session, redis: Redis, settings: Settings, principal: Principal, body: LearnRequest,
    idempotency_key: str | None,
) -> tuple[LearnJob, bool]:
    """Record the documents, then enqueue. Returns (job, created). The SQL commit comes first:
    if Redis is down the job stays `queued` and the reconciler enqueues it later."""
    for i, doc in enumerate(body.documents):
        if len(doc.text) > settings.max_document_chars:
            raise PayloadTooLarge(
                f"documents[{i}].text has {len(doc.text)} characters; the limit is {settings.max_document_chars}.",
                param=f"documents.{i}.text", code="document_too_large")
    digest = request_hash(body)
    if idempotency_key:
        existing = queries.find_job_by_idempotency_key(session=session, tenant=principal.tenant, key=idempotency_key)
        if existing is not None:
            return _same_request_or_conflict(existing, digest), False
    check_adapter_visible(session, principal, body.adapter)
    check_quota(session, settings, principal.tenant, documents=len(body.documents))

    job_id = str(uuid.uuid4())
    try:
        job = queries.create_learn_job(
            session=session, job_id=job_id, adapter=body.adapter, tenant=principal.tenant,
            documents=[d.model_dump() for d in body.documents],
            options=body.options.model_dump(exclude_none=True), idempotency_key=idempotency_key,
            request_hash=digest,
        )
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        existing = queries.find_job_by_idempotency_key(session=session, tenant=principal.tenant, key=idempotency_key or "")
        if existing is None:
            raise
        return _same_request_or_conflict(existing, digest), False
    metrics.LEARN_JOBS.labels(status="queued").inc()
    try:
        enqueue_learn(get_queue(redis), job_id, timeout_s=settings.learn_job_timeout_s, retries=settings.learn_retries)
    except RedisError:
        logger.warning("queue unavailable; job %s stays queued in the registry for the reconciler", job_id)
    return job, True


def check_quota(session: Session, settings: Settings, tenant: str | None, *, documents: int) -> None:
    """Per-tenant limits: documents per rolling 24 h and concurrent (queued + running) jobs. 429 when over."""
    docs_per_day, concurrent = settings.quota_for(tenant)
    if concurrent:
        active = len(queries.active_jobs(session=session, tenant=tenant or ""))
        if active >= concurrent:
            raise RateLimited(f"This tenant already has {active} learn jobs queued or running; the limit is "
                              f"{concurrent}. Retry when one finishes.", code="quota_concurrent_jobs")
    if docs_per_day and documents:
        used = queries.documents_since(session=session, tenant=tenant, since=utcnow() - timedelta(days=1))
        if used + documents > docs_per_day:
            raise RateLimited(f"This request would bring the tenant to {used + documents} documents in 24 hours; "
                              f"the limit is {docs_per_day}.", code="quota_documents_per_day")


def submit_consolidation(
    *, session: Session, redis: Redis, settings: Settings, adapter: str, tenant: str | None, reason: str,
) -> tuple[LearnJob, bool]:
    """Queue a consolidation of `adapter` unless one is already queued or running. Returns (job, created)."""
    pending = queries.active_jobs(session=session, adapter=adapter, kind="consolidate")
    if pending:
        return pending[0], False
    job = queries.create_learn_job(session=session, job_id=str(uuid.uuid4()), adapter=adapter, tenant=tenant,
                                   documents=[], options={}, idempotency_key=None, request_hash=None,
                                   kind="consolidate")
    queries.add_event(session=session, job_id=job.id, message=f"consolidation requested: {reason}")
    session.commit()
    try:
        enqueue_learn(get_queue(redis), job.id, timeout_s=settings.learn_job_timeout_s, retries=settings.learn_retries)
    except RedisError:
        logger.warning("queue unavailable; consolidation %s stays queued for the reconciler", job.id)
    return job, True


def _same_request_or_conflict(existing: LearnJob, digest: str) -> LearnJob:
    if existing.request_hash != digest:
        raise Conflict("This Idempotency-Key was already used with a different request body.",
                       code="idempotency_key_reused")
    return existing


def cancel_job(*, session: Session, redis: Redis, job: LearnJob) -> LearnJob:
    """Queued jobs are cancelled at once; running ones stop at the worker's next checkpoint."""
    if job.status.terminal:
        return job
    job.cancel_requested = True
    if job.status is JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = utcnow()
        queries.add_event(session=session, job_id=job.id, message="cancelled before it started")
        metrics.LEARN_JOBS.labels(status="cancelled").inc()
    else:
        queries.add_event(session=session, job_id=job.id, message="cancel requested")
    session.commit()
    try:
        cancel_rq_job(redis, job.id)
    except RedisError:
        logger.warning("could not cancel RQ job %s; the worker will see the registry flag", job.id)
    return job


def get_visible_job(session: Session, principal: Principal, job_id: str, *, with_events: bool = False) -> LearnJob:
    job = queries.get_job(session=session, job_id=job_id, with_events=with_events)
    if job is None or not principal.can_see(job.tenant):
        raise NotFound(f"No learn job with id '{job_id}'.", param="id", code="job_not_found")
    return job


def job_out(job: LearnJob, *, events: bool = True) -> LearnJobOut:
    data: dict[str, Any] = {c: getattr(job, c) for c in (
        "id", "kind", "adapter", "status", "stage", "progress", "created_at", "started_at", "finished_at",
        "version", "metrics", "error", "options")}
    data["documents"] = len(job.documents)
    data["events"] = [JobEventOut.model_validate(e, from_attributes=True) for e in job.events] if events else []
    return LearnJobOut(**data)
