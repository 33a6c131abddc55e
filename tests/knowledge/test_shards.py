"""A knowledge base in the registry: shard assignment, atomic kb versions, rollback, re-pack publishing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app.knowledge.shards import (
    assign_shards,
    kb_documents,
    kb_version,
    list_documents,
    reads_better,
    shard_key,
)
from app.publishing import AdapterMoved, publish_shard, publish_shard_set, route_to_version
from app.registry import lifecycle, queries
from app.registry.db import migrate, session_scope
from app.registry.models import AdapterKind, DocumentState, JobStatus, VersionStatus
from tests.test_retention import adapter_dir, registry  # noqa: F401 - the fixture

KB = "acme~kb"


def submit(db: str, texts: list[str], capacity: int) -> tuple[str, list[int]]:
    """A learn job into KB with one document per text, assigned to shards as the API does."""
    job_id = str(uuid.uuid4())
    with session_scope(db) as s:
        kb = queries.get_or_create_adapter(session=s, name=KB, tenant="acme", kind=AdapterKind.kb)
        job = queries.create_learn_job(session=s, job_id=job_id, adapter=KB, tenant="acme",
                                       documents=[{"title": f"T{i}", "text": t} for i, t in enumerate(texts)],
                                       options={}, idempotency_key=None, request_hash=None)
        assign_shards(s, kb, job.documents, capacity)
        return job_id, [d.id for d in job.documents]


def shards_of(db: str, ids: list[int]) -> list[str]:
    from app.registry.models import Document

    with session_scope(db) as s:
        return [s.get(Document, i).shard for i in ids]


def finish(db: str, job_id: str, status: JobStatus) -> None:
    with session_scope(db) as s:
        job = queries.get_job(session=s, job_id=job_id)
        lifecycle.finish(s, job, status, status.value)


def test_documents_fill_the_newest_shard_up_to_k(registry) -> None:  # noqa: F811
    db, _, _ = registry
    _, first = submit(db, ["a", "b", "c"], capacity=2)
    _, more = submit(db, ["d"], capacity=2)
    assert shards_of(db, first + more) == [shard_key(KB, 0), shard_key(KB, 0), shard_key(KB, 1), shard_key(KB, 1)]
    _, one_each = submit(db, ["e", "f"], capacity=1)
    assert shards_of(db, one_each) == [shard_key(KB, 2), shard_key(KB, 3)]
    with session_scope(db) as s:  # shards are adapters no listing shows
        assert [a.name for a in queries.list_adapters(session=s)] == [KB]


def test_a_kb_version_is_the_whole_shard_set_and_rollback_restores_it(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    job_a, (doc_a,) = submit(db, ["Quellbrook"], capacity=1)
    job_b, (doc_b,) = submit(db, ["Dravenholm"], capacity=1)
    s0, s1 = shard_key(KB, 0), shard_key(KB, 1)
    src = adapter_dir(tmp_path / "src", "lora")

    def publish(job_id: str, shard: str, ids: list[int], parent: int | None) -> tuple[int, int]:
        return publish_shard(db_url=db, store=store, redis=redis, kb=KB, shard=shard, tenant="acme", src_dir=src,
                             job_id=job_id, parent_version=parent, document_ids=ids, metrics={})

    assert publish(job_a, s0, [doc_a], None) == (1, 1)
    assert publish(job_a, s0, [doc_a], None) == (1, 1)  # a retried job finds its publish
    finish(db, job_a, JobStatus.published)
    # Job b is still running: its document is answered in context (pending), a's from s0's weights.
    with session_scope(db) as s:
        states = {d.id: (d.state, d.shard.shard if d.shard else None) for d in kb_documents(s, KB, kb_version(s, KB))}
    assert states == {doc_a: (DocumentState.learned, s0), doc_b: (DocumentState.pending, None)}

    assert publish(job_b, s1, [doc_b], None) == (2, 1)
    finish(db, job_b, JobStatus.published)
    with session_scope(db) as s:
        v2 = kb_version(s, KB)
        assert {k: r.version for k, r in v2.shards.items()} == {s0: 1, s1: 1}
        assert v2.shard_of(doc_b).shard == s1

    # A learn that trained s0 from v1 of the shard while another learn moved it cannot land.
    job_c, (doc_c,) = submit(db, ["Vesk"], capacity=1)
    with pytest.raises(AdapterMoved):
        publish(job_c, s1, [doc_b, doc_c], None)

    route_to_version(db_url=db, redis=redis, adapter=KB, version=1)
    with session_scope(db) as s:
        v1 = kb_version(s, KB)
        assert {k: r.version for k, r in v1.shards.items()} == {s0: 1}
        learned = {d.id: d.state for d in kb_documents(s, KB, v1)}
    # b's shard is not in v1: b is not answered from weights, nor in context (it was learned, then rolled back).
    assert learned[doc_a] == DocumentState.learned and doc_b not in learned
    assert learned[doc_c] == DocumentState.pending


def test_the_listing_says_what_the_router_answers_each_document_with(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    learned, (doc_a,) = submit(db, ["Quellbrook Ferry crosses Lake Tarrow."], capacity=1)
    rejected, (doc_b,) = submit(db, ["Dravenholm"], capacity=1)
    cancelled, (doc_c,) = submit(db, ["Vesk"], capacity=1)
    _, (doc_d,) = submit(db, ["Ilvar"], capacity=1)  # still queued
    publish_shard(db_url=db, store=store, redis=redis, kb=KB, shard=shard_key(KB, 0), tenant="acme",
                  src_dir=adapter_dir(tmp_path / "src", "lora"), job_id=learned, parent_version=None,
                  document_ids=[doc_a], metrics={})
    finish(db, learned, JobStatus.published)
    finish(db, rejected, JobStatus.rejected)
    finish(db, cancelled, JobStatus.cancelled)
    with session_scope(db) as s:
        version = kb_version(s, KB)
        listed = list_documents(s, KB, version)
        served = {d.id: d.state for d in kb_documents(s, KB, version)}
    # Rejected: answered in context, never lost. Cancelled: not accepted knowledge, not listed.
    assert {d.id: d.state for d in listed} == served == {
        doc_a: DocumentState.learned, doc_b: DocumentState.context, doc_d: DocumentState.pending}
    assert doc_c not in served
    first = listed[0]
    assert (first.title, first.characters, first.job_id, first.job_status) == (
        "T0", len("Quellbrook Ferry crosses Lake Tarrow."), learned, JobStatus.published)
    assert (first.shard.shard, first.shard.version) == (shard_key(KB, 0), 1)


@pytest.mark.parametrize(("weights", "context", "source", "read"), [
    (0.75, 0.75, "self-written", False),  # as good as reading, on questions: its weights
    (0.70, 0.75, "caller", False),  # within the margin
    (0.50, 0.75, "self-written", True),  # worse than reading by more than the margin
    (1.00, 0.50, "cloze", True),  # cloze cannot show the weights answer questions, however high
    (1.00, 0.50, "self-written+cloze", True),  # one or two questions among cloze items: still cloze
    (0.50, 0.75, None, True),  # learned before the source was recorded: the two measures decide
    (0.75, 0.75, None, False),
    (None, None, "cloze", False),  # never measured (learned before either was recorded): its weights
])
def test_a_document_is_read_where_its_weights_are_not_shown_as_good(weights, context, source, read) -> None:
    assert reads_better(weights, context, 0.1, source) is read


def test_a_repack_publishes_one_version_and_refuses_a_moved_plan(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    ids = []
    for text in ("Quellbrook ferry", "Quellbrook harbour"):
        job_id, (doc,) = submit(db, [text], capacity=1)
        shard = shard_key(KB, len(ids))
        publish_shard(db_url=db, store=store, redis=redis, kb=KB, shard=shard, tenant="acme",
                      src_dir=adapter_dir(tmp_path / f"src{doc}", "lora"), job_id=job_id, parent_version=None,
                      document_ids=[doc], metrics={})
        finish(db, job_id, JobStatus.published)
        ids.append(doc)
    s0, s1, s2 = shard_key(KB, 0), shard_key(KB, 1), shard_key(KB, 2)
    with session_scope(db) as s:
        from app.knowledge.shards import open_shard

        assert open_shard(s, queries.get_adapter(session=s, name=KB)).name == s2
    plan = {s0: 1, s1: 1}
    with pytest.raises(AdapterMoved):
        publish_shard_set(db_url=db, store=store, redis=redis, kb=KB, tenant="acme", job_id=str(uuid.uuid4()),
                          trained={s2: (adapter_dir(tmp_path / "x", "lora"), ids)}, expected={s0: 2, s1: 1},
                          dropped=[s0, s1], metrics={})
    version = publish_shard_set(db_url=db, store=store, redis=redis, kb=KB, tenant="acme", job_id=str(uuid.uuid4()),
                                trained={s2: (adapter_dir(tmp_path / "y", "lora"), ids)}, expected=plan,
                                dropped=[s0, s1], metrics={})
    assert version == 3
    with session_scope(db) as s:
        v3 = kb_version(s, KB)
        # The refused plan's shard version stays as superseded lineage; the re-planned one serves.
        assert {k: r.version for k, r in v3.shards.items()} == {s2: 2}
        assert queries.get_version(session=s, name=s2, version=1).status is VersionStatus.rejected
        assert v3.shard_of(ids[0]).shard == v3.shard_of(ids[1]).shard == s2
        assert queries.get_version(session=s, name=KB, version=3).source == "consolidate"
        assert queries.get_version(session=s, name=s2, version=2).status is VersionStatus.published


def test_versions_store_what_changed_and_old_whole_sets_convert(empty_database, tmp_path, scratch_redis) -> None:
    """Each kb version records its change against its parent (O(1) per learn, not the whole set);
    migration 0008 turns versions written whole into the same changes, and drops shard rows that
    never got a version or a document."""
    from app.knowledge.shards import shard_sets
    from app.registry.models import Adapter, AdapterVersion
    from app.store import AdapterStore

    db = empty_database
    migrate(db)  # today's code writes the versions; they are rewritten below the way 0007's code wrote them
    store = AdapterStore(tmp_path / "adapters")
    docs = [submit(db, [t], capacity=1) for t in ("Quellbrook", "Dravenholm", "Vesk")]

    def publish(i: int) -> int:
        job_id, ids = docs[i]
        return publish_shard(db_url=db, store=store, redis=scratch_redis, kb=KB, shard=shard_key(KB, i),
                             tenant="acme", src_dir=adapter_dir(tmp_path / f"src{i}", "lora"), job_id=job_id,
                             parent_version=None, document_ids=ids, metrics={})[0]

    publish(0), publish(1)
    route_to_version(db_url=db, redis=scratch_redis, adapter=KB, version=1)
    assert publish(2) == 3  # its parent is v1, not v2: lineage branches at a rollback
    s0, s1, s2 = (shard_key(KB, i) for i in range(3))
    expected = {1: {s0: 1}, 2: {s0: 1, s1: 1}, 3: {s0: 1, s2: 1}}
    with session_scope(db) as s:
        assert shard_sets(s, KB) == expected
        rows = {v.version: v for v in s.scalars(select(AdapterVersion).join(Adapter).where(Adapter.name == KB))}
        assert rows[3].metrics["changed"] == {s2: 1} and "shards" not in rows[3].metrics
    _downgrade(db, "0007")
    with session_scope(db) as s:
        rows = {v.version: v for v in s.scalars(select(AdapterVersion).join(Adapter).where(Adapter.name == KB))}
        for number, row in rows.items():  # as the release before 0008 wrote them
            row.metrics = {"shards": expected[number], "changed": {}}
        kb = queries.get_adapter(session=s, name=KB)
        s.add(Adapter(name=f"{KB}+s9", tenant="acme", kind=AdapterKind.shard, kb_id=kb.id))  # re-planned away

    migrate(db)
    with session_scope(db) as s:
        rows = {v.version: v.metrics for v in s.scalars(select(AdapterVersion).join(Adapter).where(Adapter.name == KB))}
        assert all("shards" not in m for m in rows.values())
        assert rows[3]["changed"] == {s2: 1} and rows[3]["dropped"] == []
        assert shard_sets(s, KB) == expected
        assert set(kb_version(s, KB, 3).shards) == {s0, s2}
        assert queries.get_adapter(session=s, name=f"{KB}+s9") is None
        assert queries.get_adapter(session=s, name=s2) is not None


def _downgrade(url: str, revision: str) -> None:
    """The schema taken back to `revision` (what a database of that release holds)."""
    from alembic import command
    from alembic.config import Config

    from app.registry.db import MIGRATIONS_DIR, get_engine

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
