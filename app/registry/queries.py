"""Registry queries: keyword-only functions over one session; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import false, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from app.registry.models import (
    Adapter,
    AdapterKind,
    AdapterVersion,
    Document,
    JobEvent,
    JobStatus,
    LearnJob,
    Tenant,
    VersionStatus,
    as_utc,
)

# --- adapters ------------------------------------------------------------------------------------


def get_adapter(*, session: Session, name: str, lock: bool = False) -> Adapter | None:
    stmt = select(Adapter).where(Adapter.name == name)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get_or_create_adapter(*, session: Session, name: str, tenant: str | None, shared: bool = False,
                          kind: str = AdapterKind.lora) -> Adapter:
    """The adapter row for key `name`, created (owned by `tenant`) when missing.

    Two sessions creating the same key race on the unique name; the loser's flush raises
    IntegrityError and its caller retries, finding the winner's row.
    """
    adapter = get_adapter(session=session, name=name)
    if adapter is None:
        adapter = Adapter(name=name, tenant=tenant, shared=shared, kind=kind)
        session.add(adapter)
        session.flush()
    return adapter


def current_version(*, session: Session, name: str) -> AdapterVersion | None:
    """The version a live adapter serves: None when it is unknown, retired or never published."""
    adapter = get_adapter(session=session, name=name)
    if adapter is None or adapter.current_version is None or adapter.retired_at is not None:
        return None
    return get_version(session=session, name=name, version=adapter.current_version)


def shards_of(*, session: Session, kb: Adapter) -> Sequence[Adapter]:
    return session.scalars(select(Adapter).where(Adapter.kb_id == kb.id).order_by(Adapter.id)).all()


def list_adapters(*, session: Session, tenant: str | None = None, include_retired: bool = False) -> Sequence[Adapter]:
    stmt = select(Adapter).where(Adapter.kind != AdapterKind.shard).order_by(Adapter.name)
    if tenant is not None:
        stmt = stmt.where(Adapter.tenant == tenant)
    if not include_retired:
        stmt = stmt.where(Adapter.retired_at.is_(None))
    return session.scalars(stmt).all()


def serving_versions(*, session: Session) -> list[tuple[Adapter, AdapterVersion]]:
    """The version every live adapter should serve: what an API process loads at start-up."""
    stmt = (
        select(Adapter, AdapterVersion)
        .join(AdapterVersion, (AdapterVersion.adapter_id == Adapter.id) & (AdapterVersion.version == Adapter.current_version))
        .where(Adapter.retired_at.is_(None), Adapter.kind == AdapterKind.lora)
        .order_by(Adapter.name)
    )
    return [(a, v) for a, v in session.execute(stmt).all()]


def get_version(*, session: Session, name: str, version: int) -> AdapterVersion | None:
    stmt = (
        select(AdapterVersion)
        .join(Adapter)
        .where(Adapter.name == name, AdapterVersion.version == version)
        .options(selectinload(AdapterVersion.adapter))
    )
    return session.scalars(stmt).one_or_none()


def get_version_for_job(*, session: Session, job_id: str) -> AdapterVersion | None:
    return session.scalars(select(AdapterVersion).where(AdapterVersion.job_id == job_id)).one_or_none()


def reserve_version(
    *, session: Session, adapter: Adapter, path_for: Any, job_id: str | None, parent_version: int | None,
    metrics: dict[str, Any], source: str = "learn",
) -> AdapterVersion:
    """Insert the next version number as a candidate, under a row lock on the adapter.

    `path_for(version) -> str` names the immutable directory the version will live in.
    """
    # A no-op write, not SELECT ... FOR UPDATE: it row-locks on PostgreSQL and takes SQLite's write
    # lock (which ignores FOR UPDATE), so two publishers never read the same last number; on SQLite
    # they used to, and the loser of each round retried on the unique index.
    session.execute(update(Adapter).where(Adapter.id == adapter.id).values(current_version=Adapter.current_version)
                    .execution_options(synchronize_session=False))
    last = session.scalar(select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == adapter.id))
    number = (last or 0) + 1
    row = AdapterVersion(
        adapter_id=adapter.id, version=number, path=path_for(number), status=VersionStatus.candidate,
        parent_version=parent_version, job_id=job_id, metrics=metrics, source=source,
    )
    session.add(row)
    session.flush()
    return row


def mark_published(*, session: Session, version: AdapterVersion) -> None:
    """Route the adapter to `version` unconditionally: an operator's rollback or an import."""
    version.status = VersionStatus.published
    session.execute(
        update(Adapter).where(Adapter.id == version.adapter_id).values(current_version=version.version, retired_at=None)
    )


def publish_if_current(*, session: Session, version: AdapterVersion, parent: int | None, since: Any) -> bool:
    """Compare-and-set: route the adapter to `version` only if it still serves `parent`.

    A learn trains on top of `parent`; if a rollback, another publish or a retirement moved the
    adapter meanwhile, publishing would silently undo that, so the caller is told (False) instead.
    A retired adapter counts as serving nothing, and only work accepted after the retirement
    (`since` = the job's creation) may bring it back.
    """
    live = Adapter.retired_at.is_(None) & (
        Adapter.current_version.is_(None) if parent is None else Adapter.current_version == parent)
    revived = Adapter.retired_at.is_not(None) & (Adapter.retired_at < since) if parent is None else false()
    result = session.execute(
        update(Adapter).where(Adapter.id == version.adapter_id, live | revived)
        .values(current_version=version.version, retired_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    version.status = VersionStatus.published
    return True


# --- tenants --------------------------------------------------------------------------------------


def lock_tenant(*, session: Session, tenant_key: str) -> None:
    """Serialise one tenant's quota check and insert until the transaction ends.

    Writing the tenant's row first takes a row lock on PostgreSQL and SQLite's write lock, so a
    concurrent submit of the same tenant waits here instead of reading the same counts.
    """
    stmt = update(Tenant).where(Tenant.tenant_key == tenant_key).values(touched_at=func.now())
    if session.execute(stmt).rowcount == 0:
        dialect = session.get_bind().dialect.name
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
        # A concurrent first submit may insert the row too; the update below then waits on its lock.
        session.execute(insert(Tenant).values(tenant_key=tenant_key).on_conflict_do_nothing())
        session.execute(stmt)


# --- learn jobs ----------------------------------------------------------------------------------


def create_learn_job(
    *, session: Session, job_id: str, adapter: str, tenant: str | None, documents: list[dict[str, Any]],
    options: dict[str, Any], idempotency_key: str | None, request_hash: str | None, kind: str = "learn",
    submitter: str | None = None,
) -> LearnJob:
    """`tenant` owns the adapter; `submitter` (default: the same) is whose quota and idempotency
    keys the job counts against; they differ only when an admin learns into a tenant's adapter."""
    job = LearnJob(
        id=job_id, kind=kind, adapter=adapter, tenant=tenant, tenant_key=submitter or tenant or "", options=options,
        idempotency_key=idempotency_key, request_hash=request_hash, status=JobStatus.queued,
    )
    session.add(job)
    for position, doc in enumerate(documents):
        session.add(Document(job_id=job_id, adapter=adapter, position=position, title=doc.get("title"),
                             text=doc["text"], probes=doc.get("probes") or []))
    session.add(JobEvent(job_id=job_id, message="queued"))
    session.flush()
    return job


def get_job(*, session: Session, job_id: str, with_events: bool = False) -> LearnJob | None:
    stmt = select(LearnJob).where(LearnJob.id == job_id)
    if with_events:
        stmt = stmt.options(selectinload(LearnJob.events))
    return session.scalars(stmt).one_or_none()


def find_job_by_idempotency_key(*, session: Session, tenant: str | None, key: str) -> LearnJob | None:
    stmt = select(LearnJob).where(LearnJob.tenant_key == (tenant or ""), LearnJob.idempotency_key == key)
    return session.scalars(stmt).one_or_none()


def list_jobs(
    *, session: Session, tenant: str | None, adapter: str | None, status: JobStatus | None, limit: int, offset: int,
) -> tuple[Sequence[LearnJob], int]:
    stmt = select(LearnJob)
    if tenant is not None:
        stmt = stmt.where(LearnJob.tenant == tenant)
    if adapter is not None:
        stmt = stmt.where(LearnJob.adapter == adapter)
    if status is not None:
        stmt = stmt.where(LearnJob.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(LearnJob.created_at.desc(), LearnJob.id).limit(limit).offset(offset)).all()
    return rows, total


def job_counts(*, session: Session, tenant: str | None = None) -> dict[JobStatus, int]:
    """Learn jobs by status: one tenant's, or everyone's (None). /metrics and /v1/operations read this."""
    stmt = select(LearnJob.status, func.count()).group_by(LearnJob.status)
    if tenant is not None:
        stmt = stmt.where(LearnJob.tenant == tenant)
    return dict(session.execute(stmt).all())  # type: ignore[arg-type]


def documents_since(*, session: Session, tenant: str | None, since: Any) -> int:
    """Documents a tenant submitted since `since` (cancelled jobs included: they were accepted)."""
    stmt = (select(func.count(Document.id)).join(LearnJob, Document.job_id == LearnJob.id)
            .where(LearnJob.tenant_key == (tenant or ""), Document.created_at >= since))
    return session.scalar(stmt) or 0


def oldest_document_since(*, session: Session, tenant: str | None, since: Any) -> Any:
    """When the tenant's oldest document since `since` was submitted, in UTC (None when there is none)."""
    stmt = (select(func.min(Document.created_at)).join(LearnJob, Document.job_id == LearnJob.id)
            .where(LearnJob.tenant_key == (tenant or ""), Document.created_at >= since))
    oldest = session.scalar(stmt)
    return as_utc(oldest) if oldest is not None else None


def active_jobs(*, session: Session, tenant: str | None = None, adapter: str | None = None,
                kind: str | None = None) -> Sequence[LearnJob]:
    """Queued or running jobs, optionally of one tenant, adapter or kind."""
    stmt = select(LearnJob).where(LearnJob.status.in_([JobStatus.queued, JobStatus.running]))
    if tenant is not None:
        stmt = stmt.where(LearnJob.tenant_key == tenant)
    if adapter is not None:
        stmt = stmt.where(LearnJob.adapter == adapter)
    if kind is not None:
        stmt = stmt.where(LearnJob.kind == kind)
    return session.scalars(stmt.order_by(LearnJob.created_at)).all()


def unfinished_jobs(*, session: Session) -> Sequence[LearnJob]:
    """Jobs the queue must hold: the reconciler re-enqueues any that Redis lost."""
    stmt = select(LearnJob).where(LearnJob.status.in_([JobStatus.queued, JobStatus.running])).order_by(LearnJob.created_at)
    return session.scalars(stmt).all()




def add_event(
    *, session: Session, job_id: str, message: str, level: str = "info", type_: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(job_id=job_id, message=message, level=level, type=type_, data=data)
    session.add(event)
    session.flush()
    return event


def events_after(*, session: Session, job_id: str, after_id: int) -> Sequence[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id).order_by(JobEvent.id)
    return session.scalars(stmt).all()
