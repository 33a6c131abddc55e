"""Publishing is a compare-and-set on the version a job trained on: a rollback, a retirement or a
concurrent publish that came first is never silently undone."""

from __future__ import annotations

import pytest

from app.publishing import AdapterMoved, AdapterOwnedElsewhere, publish_version, route_to_version
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import VersionStatus, utcnow
from tests.test_retention import adapter_dir, registry  # noqa: F401 - the fixture

KEY = "acme~notes"


@pytest.fixture
def published(registry, tmp_path):  # noqa: F811
    db, store, redis = registry
    src = adapter_dir(tmp_path / "src", "a")

    def publish(**kw) -> int:  # noqa: ANN003
        return publish_version(db_url=db, store=store, redis=redis, adapter=KEY, tenant="acme", src_dir=src, **kw)[0]

    assert publish(job_id="j1", since=utcnow(), parent_version=None) == 1
    assert publish(job_id="j2", since=utcnow(), parent_version=1) == 2
    return db, redis, publish


def current(db: str) -> tuple[int | None, bool]:
    with session_scope(db) as s:
        row = queries.get_adapter(session=s, name=KEY)
        return row.current_version, row.retired_at is not None


def test_rollback_before_a_publish_wins(published):
    db, redis, publish = published
    started = utcnow()  # a job starts training on top of v2 ...
    route_to_version(db_url=db, redis=redis, adapter=KEY, version=1)  # ... and the owner rolls back
    with pytest.raises(AdapterMoved) as moved:
        publish(job_id="j3", since=started, parent_version=2)
    assert not moved.value.retired
    assert current(db) == (1, False)
    with session_scope(db) as s:  # the candidate stays as lineage, superseded, its job id freed
        v3 = queries.get_version(session=s, name=KEY, version=3)
        assert v3.status is VersionStatus.rejected and v3.job_id is None and v3.metrics["superseded"]
    # Retrained on top of v1, the same job publishes as a new version.
    assert publish(job_id="j3", since=started, parent_version=1) == 4
    assert current(db) == (4, False)


def test_two_publishes_from_one_parent_cannot_both_land(published):
    db, _, publish = published
    assert publish(job_id="a", since=utcnow(), parent_version=2) == 3
    with pytest.raises(AdapterMoved):
        publish(job_id="b", since=utcnow(), parent_version=2)  # would have dropped job a's document
    assert current(db) == (3, False)


def test_a_retired_adapter_takes_no_publish_from_jobs_accepted_before(published):
    db, _, publish = published
    started = utcnow()
    with session_scope(db) as s:
        queries.get_adapter(session=s, name=KEY).retired_at = utcnow()
    with pytest.raises(AdapterMoved) as moved:
        publish(job_id="late", since=started, parent_version=2)
    assert moved.value.retired and current(db) == (2, True)
    # A learn accepted after the retirement starts the adapter afresh.
    assert publish(job_id="new", since=utcnow(), parent_version=None) == 4
    assert current(db) == (4, False)


def test_a_key_keeps_its_owner(published, registry, tmp_path):  # noqa: F811
    db, store, redis = registry
    with pytest.raises(AdapterOwnedElsewhere):
        publish_version(db_url=db, store=store, redis=redis, adapter=KEY, tenant="globex",
                        src_dir=adapter_dir(tmp_path / "src2", "b"))
    with pytest.raises(AdapterOwnedElsewhere):  # tenantless publishes (imports) cannot take it either
        publish_version(db_url=db, store=store, redis=redis, adapter=KEY, tenant=None,
                        src_dir=adapter_dir(tmp_path / "src3", "c"))


def test_concurrent_publishes_from_one_parent_land_once(published):
    """Eight jobs trained on v2 publish at the same instant (as eight workers would): exactly one
    lands; the others are told the adapter moved. On PostgreSQL this is the row lock and the
    conditional UPDATE at work, not SQLite's single writer."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    db, _, publish = published
    barrier = threading.Barrier(8)

    def race(i: int) -> int | None:
        started = utcnow()
        barrier.wait()
        try:
            return publish(job_id=f"race-{i}", since=started, parent_version=2)
        except AdapterMoved:
            return None

    with ThreadPoolExecutor(8) as pool:
        landed = [v for v in pool.map(race, range(8)) if v is not None]
    assert len(landed) == 1, landed
    assert current(db) == (landed[0], False)
    with session_scope(db) as s:
        statuses = [queries.get_version(session=s, name=KEY, version=n).status for n in range(3, 11)]
    assert statuses.count(VersionStatus.published) == 1 and statuses.count(VersionStatus.rejected) == 7, statuses
