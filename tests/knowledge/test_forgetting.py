"""Forgetting a knowledge base's document, and purging it, on a real registry, store and Redis."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.errors import Conflict, NotFound
from app.knowledge.forgetting import forget_document, purge_forgotten
from app.knowledge.shards import kb_documents, kb_version, shard_key
from app.publishing import publish_shard, route_to_version
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import Document, DocumentState, JobEvent, JobStatus, utcnow
from tests.knowledge.test_shards import KB, finish, submit
from tests.test_retention import adapter_dir, registry  # noqa: F401 - the fixture

SECRET = "The Quellbrook Ferry crosses Lake Tarrow in forty minutes."
OTHER = "The Dravenholm Library holds eighty-one thousand maps."


def learn(db: str, store, redis, tmp_path: Path, texts: list[str], capacity: int = 1,  # noqa: ANN001
          status: JobStatus = JobStatus.published) -> list[int]:
    """Submit `texts` as one job and, unless it is to stay queued or be rejected, publish each document's
    shard as a learn does, with a job record that quotes the document the way a real one does."""
    job_id, ids = submit(db, texts, capacity=capacity)
    if status is JobStatus.queued:
        return ids
    with session_scope(db) as s:
        docs = [s.get(Document, i) for i in ids]
        for d in docs:
            d.memory = {"probes": [{"question": f"What does the record say about {d.text[:24]}?", "answer": "x"}]}
        job = queries.get_job(session=s, job_id=job_id)
        job.metrics = {"documents": [{"title": d.title, "predictions": [{"question": d.text, "prediction": "?"}]}
                                     for d in docs]}
        s.add(JobEvent(job_id=job_id, message=f"learning {docs[0].text}", data={"sentence": docs[0].text}))
        shards = {d.shard: [o.id for o in docs if o.shard == d.shard] for d in docs}
    if status is JobStatus.published:
        for shard, members in shards.items():
            current = kb_version_number(db)
            publish_shard(db_url=db, store=store, redis=redis, kb=KB, shard=shard, tenant="acme",
                          src_dir=adapter_dir(tmp_path / f"src-{shard}-{current}", "lora"), job_id=job_id,
                          parent_version=None, document_ids=members,
                          metrics={"documents": [{"title": "T0", "accuracy_after": 1.0}]})
    finish(db, job_id, status)
    return ids


def kb_version_number(db: str) -> int | None:
    with session_scope(db) as s:
        return kb_version(s, KB).version


def states(db: str) -> dict[int, str]:
    with session_scope(db) as s:
        return {d.id: d.state for d in kb_documents(s, KB, kb_version(s, KB))}


def registry_dump(db: str) -> str:
    """Every row of every table (reflected from the database, not from our models): what a grep of
    the registry sees, on either backend."""
    from sqlalchemy import MetaData, select

    from app.registry.db import get_engine

    tables = MetaData()
    tables.reflect(get_engine(db))
    with get_engine(db).connect() as conn:
        return "\n".join(repr(tuple(row)) for table in tables.sorted_tables for row in conn.execute(select(table)))


def store_dump(root: Path) -> str:
    return "\n".join(f"{p}\n{p.read_bytes().decode('utf-8', 'replace')}" for p in root.rglob("*") if p.is_file())


def test_a_forgotten_document_leaves_the_weights_and_the_router_and_a_rollback_brings_it_back(
        registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    (secret,) = learn(db, store, redis, tmp_path, [SECRET])
    (other,) = learn(db, store, redis, tmp_path, [OTHER])
    before = kb_version_number(db)
    assert states(db) == {secret: DocumentState.learned, other: DocumentState.learned}

    done = forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret)
    # A new version without its shard: the other document keeps its own.
    assert (done.version, done.shard, done.read_in_context, done.purged) == (before + 1, "s0", (), False)
    assert states(db) == {other: DocumentState.learned}
    with session_scope(db) as s:
        assert shard_key(KB, 0) not in kb_version(s, KB).shards
    with pytest.raises(NotFound):  # forgotten already
        forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret)

    # Until the purge, the version before the forget serves it again.
    route_to_version(db_url=db, redis=redis, adapter=KB, version=before)
    assert states(db) == {secret: DocumentState.learned, other: DocumentState.learned}
    # Served again, it can be forgotten again; forgotten, it can still be purged.
    assert forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret).version == before + 2
    assert states(db) == {other: DocumentState.learned}
    assert forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret, purge=True).purged
    assert "Quellbrook" not in registry_dump(db)


def test_a_purge_leaves_nothing_of_the_document_in_the_registry_or_the_store(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    (secret,) = learn(db, store, redis, tmp_path, [SECRET])
    (other,) = learn(db, store, redis, tmp_path, [OTHER])
    before = kb_version_number(db)
    assert "Quellbrook" in registry_dump(db) and list(store.root.glob(f"{shard_key(KB, 0)}/v1/*"))

    forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret, purge=True)
    assert "Quellbrook" not in registry_dump(db) and "Tarrow" not in registry_dump(db)
    assert "Quellbrook" not in store_dump(store.root)
    assert not list(store.root.glob(f"{shard_key(KB, 0)}/v1/*"))  # its shard's files
    # The other document, its records and its shard are untouched.
    assert "Dravenholm" in registry_dump(db) and list(store.root.glob(f"{shard_key(KB, 1)}/v1/*"))
    assert states(db) == {other: DocumentState.learned}
    # No rollback can bring it back: the versions that held its shard are gone with it.
    with pytest.raises(LookupError):
        route_to_version(db_url=db, redis=redis, adapter=KB, version=before)


def test_retention_purges_a_forgotten_document_once_its_grace_period_passes(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    (secret,) = learn(db, store, redis, tmp_path, [SECRET])
    forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret)
    assert purge_forgotten(db_url=db, store=store, redis=redis, retention_days=7) == []
    assert "Quellbrook" in registry_dump(db)
    with session_scope(db) as s:
        s.get(Document, secret).removed_at = utcnow() - timedelta(days=8)
    assert purge_forgotten(db_url=db, store=store, redis=redis, retention_days=7) == [secret]
    assert "Quellbrook" not in registry_dump(db)


def test_a_shared_shard_leaves_with_it_and_its_other_documents_are_read_in_context(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    secret, other = learn(db, store, redis, tmp_path, [SECRET, OTHER], capacity=2)
    done = forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=secret)
    assert done.read_in_context == (other,)
    assert states(db) == {other: DocumentState.context}  # answered, never lost


def test_pending_rejected_and_unknown_documents(registry, tmp_path) -> None:  # noqa: F811
    db, store, redis = registry
    (pending,) = learn(db, store, redis, tmp_path, [SECRET], status=JobStatus.queued)
    with pytest.raises(Conflict) as conflict:
        forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=pending)
    assert conflict.value.code == "document_pending" and conflict.value.retry_after
    (rejected,) = learn(db, store, redis, tmp_path, [OTHER], status=JobStatus.rejected)
    assert states(db)[rejected] == DocumentState.context
    done = forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=rejected)
    assert done.version is None and rejected not in states(db)  # it was in no shard: the router forgets it
    with pytest.raises(NotFound):
        forget_document(db_url=db, store=store, redis=redis, kb=KB, document_id=10_000)
    with pytest.raises(NotFound):  # a document of another knowledge base
        forget_document(db_url=db, store=store, redis=redis, kb="acme~elsewhere", document_id=pending)
