"""Publishing adapter versions: registry row, immutable files, then the swap event.

Used by the learn worker, `seal adapters import`, rollback, and tests, so there is exactly
one way a version becomes servable.
"""

from __future__ import annotations

import logging
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
