"""Retention: delete the files of versions nobody can route to any more, after a grace period.

Kept forever: every registry row (lineage and metrics), and the files of every version of a
live adapter that was ever published (rollback targets). Purged after `adapter_retention_days`:
the files of rejected candidates, and of every version of a retired (DELETEd) adapter.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.registry.db import session_scope
from app.registry.models import Adapter, AdapterVersion, VersionStatus, as_utc, utcnow
from app.store import Store

logger = logging.getLogger(__name__)


def purge_expired(*, db_url: str, store: Store, retention_days: float) -> list[str]:
    """Delete expired version files; returns the purged `name@vN`s."""
    cutoff = utcnow() - timedelta(days=retention_days)
    purged: list[str] = []
    with session_scope(db_url) as session:
        stmt = (select(AdapterVersion).join(Adapter).where(AdapterVersion.purged_at.is_(None))
                .options(selectinload(AdapterVersion.adapter)))
        for version in session.scalars(stmt):
            adapter = version.adapter
            if adapter.retired_at is not None:
                expired = as_utc(adapter.retired_at) <= cutoff
            elif version.status is VersionStatus.rejected:
                expired = as_utc(version.status_changed_at or version.created_at) <= cutoff
            else:
                expired = False
            if not expired:
                continue
            try:
                store.delete_version(version.path)
            except (OSError, ValueError):
                logger.warning("could not purge %s@v%d at %s", adapter.name, version.version, version.path,
                               exc_info=True)
                continue
            version.purged_at = utcnow()
            purged.append(f"{adapter.name}@v{version.version}")
    if purged:
        logger.info("retention: purged the files of %s", ", ".join(purged))
    return purged
