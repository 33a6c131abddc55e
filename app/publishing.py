"""Publishing adapter versions: registry row, immutable files, then the swap event.

Used by the learn worker, `seal adapters import`, rollback, and tests, so there is exactly
one way a version becomes servable.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.events import AdapterEvent, publish_event
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import VersionStatus, utcnow
from app.store import AdapterStore

logger = logging.getLogger(__name__)


class AdapterOwnedElsewhere(Exception):
    """The adapter key belongs to another tenant."""


class AdapterMoved(Exception):
    """The adapter no longer serves the version a job trained on (a rollback, a retirement, or
    another publish came first). Publishing would silently undo that, so the job must start over
    from what the adapter serves now, or stop."""

    def __init__(self, adapter: str, expected: int | None, retired: bool):
        super().__init__(f"{adapter} moved away from v{expected}" + (" (retired)" if retired else ""))
        self.retired = retired


def publish_version(
    *, db_url: str, store: AdapterStore, redis: Any, adapter: str, tenant: str | None, src_dir: Path,
    job_id: str | None = None, metrics: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
    parent_version: int | None = None, source: str = "learn", since: datetime | None = None, shared: bool = False,
) -> tuple[int, str]:
    """Publish `src_dir` as the next version of adapter key `adapter`; returns (version, path).

    Idempotent per job: a retried job that already reserved or published a version reuses it,
    so a worker killed anywhere in here never produces two versions.

    A job's publish (`since` = when the job was accepted) is a compare-and-set on `parent_version`:
    it raises AdapterMoved instead of overwriting a rollback, a retirement or a concurrent publish.
    An import (`since` None) routes to the new version unconditionally, as an operator's command.
    """
    number, path = _store_version(db_url=db_url, store=store, adapter=adapter, tenant=tenant, src_dir=src_dir,
                                  job_id=job_id, metrics=metrics, metadata=metadata,
                                  parent_version=parent_version, source=source, shared=shared)
    with session_scope(db_url) as session:
        version = queries.get_version(session=session, name=adapter, version=number)
        if version.status is not VersionStatus.published:
            if since is None:
                queries.mark_published(session=session, version=version)
            elif not queries.publish_if_current(session=session, version=version, parent=parent_version, since=since):
                retired = version.adapter.retired_at is not None
                # The candidate stays as lineage; freeing its job id lets the retrained one take a new number.
                version.status, version.status_changed_at, version.job_id = VersionStatus.rejected, utcnow(), None
                version.metrics = {**(version.metrics or {}), "superseded": True, "job_id": job_id}
                session.commit()
                raise AdapterMoved(adapter, parent_version, retired)
    publish_event(redis, AdapterEvent("published", adapter, number))
    logger.info("published %s@v%d", adapter, number)
    return number, path


def record_rejected(
    *, db_url: str, store: AdapterStore, adapter: str, tenant: str | None, src_dir: Path, job_id: str,
    metrics: dict[str, Any], parent_version: int | None, source: str = "learn",
) -> int:
    """Keep a gate-rejected candidate as a `rejected` version: lineage, numbers and files to inspect.

    Nothing is routed to it; its files go after the retention period.
    """
    number, _ = _store_version(db_url=db_url, store=store, adapter=adapter, tenant=tenant, src_dir=src_dir,
                               job_id=job_id, metrics=metrics, metadata={"source": source, "rejected": True},
                               parent_version=parent_version, source=source)
    with session_scope(db_url) as session:
        version = queries.get_version(session=session, name=adapter, version=number)
        if version.status is VersionStatus.candidate:
            version.status = VersionStatus.rejected
            version.status_changed_at = utcnow()
    logger.info("recorded rejected candidate %s@v%d", adapter, number)
    return number


def _store_version(
    *, db_url: str, store: AdapterStore, adapter: str, tenant: str | None, src_dir: Path, job_id: str | None,
    metrics: dict[str, Any] | None, metadata: dict[str, Any] | None, parent_version: int | None, source: str,
    shared: bool = False,
) -> tuple[int, str]:
    """Reserve the next version number (or the job's own, on a retry) and write its files."""
    for attempt in range(5):
        try:
            with session_scope(db_url) as session:
                row = queries.get_or_create_adapter(session=session, name=adapter, tenant=tenant, shared=shared)
                if row.tenant != tenant:
                    raise AdapterOwnedElsewhere(adapter)
                version = queries.get_version_for_job(session=session, job_id=job_id) if job_id else None
                if version is None:
                    version = queries.reserve_version(
                        session=session, adapter=row, path_for=lambda n: store.path_for(adapter, n),
                        job_id=job_id, parent_version=parent_version, metrics=metrics or {}, source=source,
                    )
                number, path = version.version, version.path
            break
        except IntegrityError:
            # Two publishers raced for the same number (SQLite has no row locks); take the next.
            logger.info("version number race on %s, retrying (%d)", adapter, attempt + 1)
    else:
        raise RuntimeError(f"could not reserve a version of {adapter}")

    meta = {"adapter": adapter, "version": number, "job_id": job_id, "parent_version": parent_version,
            "metrics": metrics or {}, **(metadata or {})}
    store.write_version(adapter, number, src_dir, meta)
    return number, path


def route_to_version(*, db_url: str, redis: Any, adapter: str, version: int) -> None:
    """Make an existing published version current again (rollback).

    It takes the adapter's row lock, so it orders cleanly against a job's compare-and-set
    publish: whichever commits second sees the other's result.
    """
    with session_scope(db_url) as session:
        queries.get_adapter(session=session, name=adapter, lock=True)
        row = queries.get_version(session=session, name=adapter, version=version)
        if row is None or row.status not in (VersionStatus.published, VersionStatus.retired):
            raise LookupError(f"{adapter}@v{version} is not a published version")
        if row.purged_at is not None:
            raise LookupError(f"{adapter}@v{version}'s files were deleted after the retention period")
        queries.mark_published(session=session, version=row)
    publish_event(redis, AdapterEvent("rolled_back", adapter, version))


def shard_version_job(job_id: str, shard: str) -> str:
    """The job id a shard version is recorded under: one version per (job, shard), in the 36
    characters the column holds, so a retried job finds its version instead of making another."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job_id}/{shard}"))


def publish_shard(
    *, db_url: str, store: AdapterStore, redis: Any, kb: str, shard: str, tenant: str | None, src_dir: Path,
    job_id: str, parent_version: int | None, document_ids: list[int], metrics: dict[str, Any],
    metadata: dict[str, Any] | None = None, source: str = "learn",
) -> tuple[int, int]:
    """Publish a retrained shard and, atomically with it, the knowledge-base version that holds it.

    The shard version is stored like any adapter version (idempotent per job and shard). Then, in
    one transaction under the kb's row lock: a compare-and-set on the shard version the job
    trained from (a rollback or another learn into the shard raises AdapterMoved, as for an
    adapter), the shard version becomes published, and a new kb version records the whole shard
    set with this shard's entry replaced. Returns (kb version, shard version).
    """
    from app.knowledge.shards import kb_version

    version_job = shard_version_job(job_id, shard)
    number, _ = _store_version(
        db_url=db_url, store=store, adapter=shard, tenant=tenant, src_dir=src_dir, job_id=version_job,
        metrics={**metrics, "document_ids": list(document_ids), "job_id": job_id}, metadata=metadata,
        parent_version=parent_version, source=source)
    with session_scope(db_url) as session:
        kb_row = queries.get_adapter(session=session, name=kb, lock=True)
        shard_version = queries.get_version(session=session, name=shard, version=number)
        if kb_row is None or kb_row.retired_at is not None:
            raise AdapterMoved(kb, kb_row.current_version if kb_row else None, retired=True)
        current = kb_version(session, kb)
        shards = {ref.shard: ref.version for ref in current.shards.values()}
        if shards.get(shard) == number:  # a retry after this publish committed
            return current.version, number
        if shards.get(shard) != parent_version:
            shard_version.status, shard_version.status_changed_at = VersionStatus.rejected, utcnow()
            shard_version.job_id = None  # the retrained candidate takes a new number
            shard_version.metrics = {**(shard_version.metrics or {}), "superseded": True}
            session.commit()
            raise AdapterMoved(shard, parent_version, retired=False)
        queries.mark_published(session=session, version=shard_version)
        kb_version_row = queries.reserve_version(
            session=session, adapter=kb_row, path_for=lambda n: store.path_for(kb, n), job_id=None,
            parent_version=kb_row.current_version, source=source,
            metrics={"job_id": job_id, "changed": {shard: number}})
        queries.mark_published(session=session, version=kb_version_row)
        kb_number = kb_version_row.version
    publish_event(redis, AdapterEvent("published", kb, kb_number))
    logger.info("published %s@v%d (%s@v%d)", kb, kb_number, shard, number)
    return kb_number, number


def publish_shard_set(
    *, db_url: str, store: AdapterStore, redis: Any, kb: str, tenant: str | None, job_id: str | None,
    trained: dict[str, tuple[Path, list[int]]], expected: dict[str, int], dropped: list[str],
    metrics: dict[str, Any], source: str = "consolidate",
) -> int:
    """Publish a re-pack (or a forget: nothing trained, one shard dropped, no job) as one
    knowledge-base version: every newly trained shard (`trained`: shard → (files, document ids))
    joins, every `dropped` shard leaves, the rest stay as they are.

    A compare-and-set on `expected` (the shard versions the re-pack was planned on): if a learn or a
    rollback moved any of them meanwhile, AdapterMoved, and the re-pack is planned again.
    """
    from app.knowledge.shards import delta, kb_version

    numbers = {}
    for shard, (src_dir, document_ids) in trained.items():
        numbers[shard], _ = _store_version(
            db_url=db_url, store=store, adapter=shard, tenant=tenant, src_dir=src_dir,
            job_id=shard_version_job(job_id, shard), parent_version=None, source=source,
            metrics={"document_ids": list(document_ids), "job_id": job_id}, metadata={"source": source})
    with session_scope(db_url) as session:
        kb_row = queries.get_adapter(session=session, name=kb, lock=True)
        if kb_row is None or kb_row.retired_at is not None:
            raise AdapterMoved(kb, None, retired=True)
        current = {ref.shard: ref.version for ref in kb_version(session, kb).shards.values()}
        if {s: current.get(s) for s in expected} != expected:
            for shard, number in numbers.items():  # kept as lineage, never served
                stale = queries.get_version(session=session, name=shard, version=number)
                stale.status, stale.status_changed_at, stale.job_id = VersionStatus.rejected, utcnow(), None
                stale.metrics = {**(stale.metrics or {}), "superseded": True}
            session.commit()
            raise AdapterMoved(kb, kb_row.current_version, retired=False)
        for shard, number in numbers.items():
            queries.mark_published(session=session, version=queries.get_version(session=session, name=shard,
                                                                                 version=number))
        shards = {s: v for s, v in current.items() if s not in dropped} | numbers
        row = queries.reserve_version(
            session=session, adapter=kb_row, path_for=lambda n: store.path_for(kb, n), job_id=None,
            parent_version=kb_row.current_version, source=source,
            metrics={**metrics, "job_id": job_id, **delta(current, shards)})
        queries.mark_published(session=session, version=row)
        number = row.version
    publish_event(redis, AdapterEvent("published", kb, number))
    logger.info("re-packed %s@v%d: %d shards trained, %d dropped", kb, number, len(numbers), len(dropped))
    return number
