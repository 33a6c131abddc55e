"""Retention: which version files are purged, and that the registry keeps the lineage."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from app.publishing import publish_version, record_rejected, route_to_version
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import VersionStatus, utcnow
from app.retention import purge_expired
from app.store import AdapterStore


def adapter_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return d


@pytest.fixture
def registry(database, tmp_path, scratch_redis):
    """A registry on each backend (tests/conftest.py's `database`), an adapter store and a Redis."""
    return database, AdapterStore(tmp_path / "adapters"), scratch_redis


def age(db: str, name: str, version: int, days: float, *, retired: bool = False) -> None:
    """Move a version's (or its adapter's) retention clock into the past."""
    with session_scope(db) as s:
        row = queries.get_version(session=s, name=name, version=version)
        past = utcnow() - timedelta(days=days)
        if retired:
            row.adapter.retired_at = past
        else:
            row.status_changed_at = past


def test_purges_rejected_and_retired_files_only_after_retention(registry, tmp_path):
    db, store, redis = registry
    src = adapter_dir(tmp_path / "src", "a")
    kw = {"db_url": db, "store": store, "tenant": "acme", "src_dir": src}
    publish_version(redis=redis, adapter="live", job_id="j1", **kw)
    publish_version(redis=redis, adapter="live", job_id="j2", parent_version=1, **kw)
    rejected = record_rejected(adapter="live", job_id="j3", metrics={"rejected_because": ["x"]}, parent_version=2, **kw)
    publish_version(redis=redis, adapter="gone", job_id="j4", **kw)
    with session_scope(db) as s:  # what DELETE /v1/adapters/gone does
        row = queries.get_adapter(session=s, name="gone")
        row.retired_at = utcnow()
        row.versions[0].status = VersionStatus.retired

    assert purge_expired(db_url=db, store=store, retention_days=7) == []  # nothing old enough yet

    age(db, "live", rejected, days=8)
    age(db, "gone", 1, days=8, retired=True)
    assert sorted(purge_expired(db_url=db, store=store, retention_days=7)) == ["gone@v1", f"live@v{rejected}"]
    assert not Path(store.path_for("live", rejected)).exists()
    assert not Path(store.path_for("gone", 1)).exists()
    # every version of the live adapter that was published stays: they are rollback targets
    assert Path(store.path_for("live", 1)).exists() and Path(store.path_for("live", 2)).exists()
    with session_scope(db) as s:  # rows stay as lineage
        versions = {v.version: v for v in queries.get_adapter(session=s, name="live").versions}
        assert versions[rejected].status is VersionStatus.rejected and versions[rejected].purged_at is not None
    assert purge_expired(db_url=db, store=store, retention_days=7) == []  # idempotent

    with pytest.raises(LookupError, match="retention"):
        route_to_version(db_url=db, redis=redis, adapter="gone", version=1)
    route_to_version(db_url=db, redis=redis, adapter="live", version=1)  # kept files: rollback works


def test_rejected_candidate_is_lineage_not_served(registry, tmp_path):
    db, store, redis = registry
    src = adapter_dir(tmp_path / "src", "a")
    publish_version(db_url=db, store=store, redis=redis, adapter="s", tenant=None, src_dir=src, job_id="p1")
    number = record_rejected(db_url=db, store=store, adapter="s", tenant=None, src_dir=src, job_id="r1",
                             metrics={"rejected_because": ["canary dropped"]}, parent_version=1)
    # a retried job records the same version, not a second one
    assert record_rejected(db_url=db, store=store, adapter="s", tenant=None, src_dir=src, job_id="r1",
                           metrics={}, parent_version=1) == number == 2
    with session_scope(db) as s:
        adapter = queries.get_adapter(session=s, name="s")
        assert adapter.current_version == 1
        assert [v.status for v in adapter.versions] == [VersionStatus.published, VersionStatus.rejected]
    with pytest.raises(LookupError):
        route_to_version(db_url=db, redis=redis, adapter="s", version=2)
