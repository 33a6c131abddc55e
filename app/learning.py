"""Learn-job business rules: ownership, quotas, idempotency, durable submit, cancel."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.learn_schemas import JobEventOut, LearnJobOut, LearnRequest
from app.auth import Principal
from app.config import Settings
from app.dispatch import dispatch
from app.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, RateLimited
from app.events import AdapterEvent, publish_event
from app.knowledge.catalog import KnowledgeBases
from app.knowledge.shards import assign_shards, is_kb
from app.queue import cancel_rq_job
from app.registry import lifecycle, queries
from app.registry.models import Adapter, AdapterKind, LearnJob, VersionStatus, utcnow
from app.tenancy import is_tenant_key, key_for, public_name
from workers.seal.passages import assign_probes, split_passages
from workers.seal.types import Probe

logger = logging.getLogger(__name__)


def request_hash(body: LearnRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_learn(
    *, session: Session, redis: Redis, settings: Settings, principal: Principal, body: LearnRequest,
    idempotency_key: str | None, count_tokens: Callable[[str], int], kbs: KnowledgeBases | None = None,
) -> tuple[LearnJob, bool]:
    """Record the documents, then enqueue. Returns (job, created). The SQL commit comes first:
    if Redis is down the job stays `queued` and the reconciler enqueues it later.

    The adapter row is claimed for its owner in the same transaction as the job, so the job, its
    documents and the adapter's owner can never disagree, whatever else is submitted meanwhile.
    """
    check_learn_request(settings, body)
    documents, splits = to_passages(body, count_tokens, settings.max_passage_tokens)
    check_learn_cost(settings, body, len(documents))
    digest = request_hash(body)
    if idempotency_key:
        existing = queries.find_job_by_idempotency_key(session=session, tenant=principal.tenant, key=idempotency_key)
        if existing is not None:
            return _same_request_or_conflict(existing, digest), False
    key = _adapter_key(principal, body.adapter)
    options = body.options.model_dump(exclude_none=True)
    if body.options.policy is not None:
        options["policy"] = resolve_policy(session, settings, principal, body.options.policy)

    job_id = str(uuid.uuid4())
    try:
        queries.lock_tenant(session=session, tenant_key=principal.tenant or "")
        adapter = _claim_adapter(session, principal, key, body.adapter, layout=body.options.layout)
        check_quota(session, settings, principal.tenant, documents=len(body.documents))
        job = queries.create_learn_job(
            session=session, job_id=job_id, adapter=key, tenant=adapter.tenant, submitter=principal.tenant,
            documents=documents, options=options, idempotency_key=idempotency_key, request_hash=digest,
        )
        if is_kb(adapter):
            assign_shards(session, adapter, job.documents, settings.recipe().for_shards().shard_documents)
        for i, parts in splits:
            queries.add_event(session=session, job_id=job_id, message=f"documents[{i}] was split into {parts} passages "
                              f"of at most {settings.max_passage_tokens} tokens, each learned")
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        existing = queries.find_job_by_idempotency_key(session=session, tenant=principal.tenant, key=idempotency_key or "")
        if existing is None:
            raise
        return _same_request_or_conflict(existing, digest), False
    except BaseException:
        session.rollback()
        raise
    lifecycle.accepted(job)
    if kbs is not None:
        kbs.invalidate(key)  # answerable (in context) in this process from the 202 on
    if is_kb(adapter):
        publish_event(redis, AdapterEvent("documents", key))  # ...and in every other one
    dispatch(redis, settings)  # now, or behind the tenant's own backlog (app/dispatch.py)
    return job, True


def check_learn_request(settings: Settings, body: LearnRequest) -> None:
    """Refuse, before anything is recorded, a request that no worker could or should run."""
    for i, doc in enumerate(body.documents):
        if len(doc.text) > settings.max_document_chars:
            raise PayloadTooLarge(
                f"documents[{i}].text has {len(doc.text)} characters; the limit is {settings.max_document_chars}.",
                param=f"documents.{i}.text", code="document_too_large")
    rank, limit = body.options.rank, settings.resolved_max_lora_rank()
    if rank is not None and rank > limit:
        # The serving engine cannot load an adapter above its max_lora_rank: the job would publish
        # a version no API process can serve.
        raise InvalidRequest(f"options.rank={rank} is above this deployment's limit of {limit} "
                             "(SEAL_MAX_LORA_RANK).", param="options.rank", code="rank_too_large")


def to_passages(body: LearnRequest, count_tokens: Callable[[str], int],
                max_tokens: int) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The request's documents as stored passages: a document longer than `max_tokens` is split
    (never truncated), its probes going with the passage that answers them. Returns the passages
    and (document index, passages) for each document that was split."""
    passages: list[dict[str, Any]] = []
    splits: list[tuple[int, int]] = []
    for i, doc in enumerate(body.documents):
        texts = split_passages(doc.text, count_tokens, max_tokens)
        probes = assign_probes(texts, [Probe(p.question, p.answer) for p in doc.probes])
        passages += [{"title": doc.title, "text": text, "probes": [{"question": p.question, "answer": p.answer}
                                                                    for p in mine]}
                     for text, mine in zip(texts, probes, strict=True)]
        if len(texts) > 1:
            splits.append((i, len(texts)))
    return passages, splits


def check_learn_cost(settings: Settings, body: LearnRequest, passages: int) -> None:
    # The layout is settled only when the adapter is claimed: a request must fit either recipe's cost.
    recipe = settings.recipe()
    cost = max(body.options.cost(passages, recipe), body.options.cost(passages, recipe.for_shards()))
    if cost > settings.max_learn_cost:
        raise InvalidRequest(
            f"This request asks for {cost} passage-epochs of training ({passages} passages after splitting long "
            f"documents × k × epochs); the limit per request is {settings.max_learn_cost}. Send less text per "
            "request, or lower k or epochs.", param="options", code="learn_cost_too_high")


def _adapter_key(principal: Principal, name: str) -> str:
    key = key_for(principal, name)
    if key is None:
        raise _adapter_not_found(name)
    return key


def _adapter_not_found(name: str) -> NotFound:
    return NotFound(f"The adapter '{name}' does not exist.", param="adapter", code="adapter_not_found")


def _claim_adapter(session: Session, principal: Principal, key: str, name: str, *, layout: str | None = None) -> Adapter:
    """The adapter row `key`, created for the caller's namespace when this is its first learn: a
    knowledge base, unless the request asks for the single-stream `layout`."""
    adapter = queries.get_adapter(session=session, name=key)
    if adapter is None:
        if is_tenant_key(key) and principal.is_admin:
            # An admin addresses a tenant's adapter by its key; it cannot invent one for a tenant.
            raise _adapter_not_found(name)
        try:
            with session.begin_nested():
                adapter = queries.get_or_create_adapter(
                    session=session, name=key, tenant=None if principal.is_admin else principal.tenant,
                    kind=AdapterKind.lora if layout == "stream" else AdapterKind.kb)
        except IntegrityError:
            # The same tenant's concurrent first learn into this name created it.
            adapter = queries.get_adapter(session=session, name=key)
    if adapter is None or not principal.can_see(adapter.tenant) or adapter.kind == AdapterKind.shard:
        raise _adapter_not_found(name)
    return adapter


def resolve_policy(session: Session, settings: Settings, principal: Principal, name: str) -> str:
    """The adapter key a learn's `policy` names: the caller's own adapter, or one on the operator's list.

    Anything else (another tenant's adapter, a directory, a name that does not exist) gets the
    same answer, so the option reveals nothing about what exists.
    """
    own = key_for(principal, name)
    if own is not None:
        row = queries.get_adapter(session=session, name=own)
        if (row is not None and row.kind == AdapterKind.lora and principal.can_see(row.tenant)
                and queries.current_version(session=session, name=own)):
            return own  # a knowledge base's version is a set of shards, not one LoRA to sample from
    if name in settings.policies and queries.current_version(session=session, name=name) is not None:
        return name
    raise NotFound(f"The policy adapter '{name}' does not exist or has no published version.",
                   param="options.policy", code="policy_not_found")


def check_quota(session: Session, settings: Settings, tenant: str | None, *, documents: int) -> None:
    """The documents a tenant may submit per rolling 24 h: 429 when over. (Its concurrent-jobs quota
    limits how many of its jobs run at once, not how many wait: app/dispatch.py.)"""
    docs_per_day, _ = settings.quota_for(tenant)
    if docs_per_day and documents:
        now = utcnow()
        used = queries.documents_since(session=session, tenant=tenant, since=now - timedelta(days=1))
        if used + documents > docs_per_day:
            # The window rolls: room opens when the oldest document in it is 24 hours old.
            oldest = queries.oldest_document_since(session=session, tenant=tenant, since=now - timedelta(days=1))
            wait = (oldest + timedelta(days=1) - now).total_seconds() if oldest is not None else 60
            raise RateLimited(f"This request would bring the tenant to {used + documents} documents in 24 hours; "
                              f"the limit is {docs_per_day}.", code="quota_documents_per_day", retry_after=wait)


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
    lifecycle.accepted(job)
    dispatch(redis, settings)
    return job, True


def _same_request_or_conflict(existing: LearnJob, digest: str) -> LearnJob:
    if existing.request_hash != digest:
        raise Conflict("This Idempotency-Key was already used with a different request body.",
                       code="idempotency_key_reused")
    return existing


def cancel_job(*, session: Session, redis: Redis, job: LearnJob, reason: str | None = None) -> LearnJob:
    """Queued jobs are cancelled at once; running ones stop at the worker's next checkpoint."""
    if job.status.terminal:
        return job
    lifecycle.request_cancel(session, job, reason)
    session.commit()
    try:
        publish_event(redis, AdapterEvent("documents", job.adapter))  # a knowledge base re-reads its documents
        cancel_rq_job(redis, job.id)
    except RedisError:
        logger.warning("could not cancel RQ job %s; the worker will see the registry flag", job.id)
    return job


def retire(*, session: Session, redis: Redis, adapter: Adapter) -> None:
    """Stop serving `adapter` and cancel its active jobs.

    A job already past its last cancel check cannot publish either: publishing is a
    compare-and-set that refuses an adapter retired after the job was accepted.
    """
    adapter.retired_at = utcnow()
    for row in [adapter, *queries.shards_of(session=session, kb=adapter)]:
        row.retired_at = adapter.retired_at
        for version in row.versions:
            if version.status is VersionStatus.published:
                version.status = VersionStatus.retired
                version.status_changed_at = adapter.retired_at
    active = queries.active_jobs(session=session, adapter=adapter.name)
    session.commit()
    for job in active:
        cancel_job(session=session, redis=redis, job=job, reason="the adapter was retired")
    publish_event(redis, AdapterEvent("retired", adapter.name))


def get_visible_job(session: Session, principal: Principal, job_id: str, *, with_events: bool = False) -> LearnJob:
    job = queries.get_job(session=session, job_id=job_id, with_events=with_events)
    if job is None or not principal.can_see(job.tenant):
        raise NotFound(f"No learn job with id '{job_id}'.", param="id", code="job_not_found")
    return job


def job_out(job: LearnJob, principal: Principal, *, events: bool = True) -> LearnJobOut:
    """The job as this caller sees it: adapter names in the caller's own namespace."""
    data: dict[str, Any] = {c: getattr(job, c) for c in (
        "id", "kind", "status", "stage", "progress", "created_at", "started_at", "finished_at",
        "version", "metrics", "error")}
    data["adapter"] = public_name(principal, job.adapter)
    data["options"] = dict(job.options)
    if "policy" in data["options"]:
        data["options"]["policy"] = public_name(principal, data["options"]["policy"])
    data["documents"] = len(job.documents)
    data["events"] = [JobEventOut.model_validate(e, from_attributes=True) for e in job.events] if events else []
    return LearnJobOut(**data)
