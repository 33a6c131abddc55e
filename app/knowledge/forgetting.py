"""Forgetting a knowledge base's document: out of the weights and the router at once, out of the
registry and the store at its purge.

A document's knowledge lives in one shard (K = 1, the shipped recipe), so forgetting it publishes a
knowledge-base version without that shard: no fine-tuning, and its weights are served by nothing.
A shard that holds other documents too (K > 1) leaves the set with it; its other documents are
answered in context from then on (never lost) until a consolidation learns them again.

Until the purge, an owner can roll back to a version that holds the shard and answer it again. The
purge (at once when asked, else once `removed_at` is SEAL_ADAPTER_RETENTION_DAYS old) deletes the
files of every shard version trained on it and blanks its text, title, probes and training data,
and every job record or version metric that quotes it, so the registry and the store keep nothing
of it but its id. Versions that held one of those shard versions cannot be rolled back to after it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from app.errors import Conflict, NotFound
from app.events import AdapterEvent, publish_event
from app.knowledge.shards import kb_version, served_state, shard_label, shard_sets
from app.publishing import AdapterMoved, publish_shard_set
from app.registry.db import session_scope
from app.registry.models import (
    Adapter,
    AdapterVersion,
    Document,
    DocumentState,
    JobEvent,
    LearnJob,
    VersionStatus,
    as_utc,
    utcnow,
)
from app.store import AdapterStore
from workers.seal.facts import split_sentences

logger = logging.getLogger(__name__)

PURGED = "[purged]"
MIN_NEEDLE_CHARS = 12  # shorter strings ("1962", "Lake Tarrow") are no proof a record quotes this document


@dataclass(frozen=True)
class Forgotten:
    document_id: int
    version: int | None  # the knowledge-base version published without it (None: it was in no shard)
    shard: str | None  # the shard that left the set (`s3`)
    read_in_context: tuple[int, ...]  # the shard's other documents, answered in context from now on
    purged: bool


def forget_document(*, db_url: str, store: AdapterStore, redis: Any, kb: str, document_id: int,
                    purge: bool = False) -> Forgotten:
    """Forget document `document_id` of knowledge base `kb` (a registry key); purge it too if asked.

    A document already forgotten is a 404, unless a rollback serves it again (it is forgotten again)
    or the call asks for the purge that has not happened yet.
    """
    with session_scope(db_url) as session:
        doc = session.get(Document, document_id)
        if doc is None or doc.adapter != kb or doc.purged_at is not None:
            raise _not_found(document_id)
        ref = kb_version(session, kb).shard_of(doc.id)
        state = served_state(ref, doc.job.status, doc.state)
        if state is None and not (purge and doc.state == DocumentState.removed):
            raise _not_found(document_id)  # forgotten already, or answered by nothing (a cancelled job)
        if state == DocumentState.pending:
            raise Conflict(f"Document {document_id} is being learned (job {doc.job_id}); cancel the job or forget "
                           "the document once it finishes.", param="document_id", code="document_pending",
                           retry_after=30)
        tenant = session.scalar(select(Adapter.tenant).where(Adapter.name == kb))
        companions = tuple(d for d in (ref.document_ids if ref else ()) if d != doc.id)
        for other in session.scalars(select(Document).where(Document.id.in_(companions))):
            other.state = DocumentState.context  # answerable in context the moment the shard leaves
    number = None
    if ref is not None:
        try:
            number = publish_shard_set(db_url=db_url, store=store, redis=redis, kb=kb, tenant=tenant, job_id=None,
                                       trained={}, expected={ref.shard: ref.version}, dropped=[ref.shard],
                                       metrics={"forgot": [document_id]}, source="forget")
        except AdapterMoved as moved:
            raise Conflict("The knowledge base changed while forgetting the document; retry.", code="kb_moved",
                           retry_after=1) from moved
    if state is not None:
        with session_scope(db_url) as session:
            doc = session.get(Document, document_id)
            doc.state, doc.removed_at = DocumentState.removed, utcnow()
        if number is None:  # no new version to announce: the router drops it on the documents event
            publish_event(redis, AdapterEvent("documents", kb))
        logger.info("forgot document %d of %s%s", document_id, kb, f" (v{number} drops {ref.shard})" if ref else "")
    if purge:
        purge_document(db_url=db_url, store=store, redis=redis, document_id=document_id)
    return Forgotten(document_id, number, shard_label(ref.shard) if ref else None, companions, purge)


def _not_found(document_id: int) -> NotFound:
    return NotFound(f"No document {document_id} in this knowledge base.", param="document_id",
                    code="document_not_found")


def purge_document(*, db_url: str, store: AdapterStore, redis: Any, document_id: int) -> None:
    """Delete everything a forgotten document left: shard files, text, probes, quotes in records."""
    with session_scope(db_url) as session:
        doc = session.get(Document, document_id)
        if doc is None or doc.purged_at is not None:
            return
        needles = _Needles(_quotes(doc), doc.title)
        shards = _purge_shard_versions(session, store, doc)
        _retire_versions_holding(session, doc.adapter, shards)
        for job in session.scalars(select(LearnJob).where(LearnJob.adapter == doc.adapter)):
            job.metrics = _scrub(job.metrics, needles)
            job.error = _scrub(job.error, needles)
        for event in session.scalars(select(JobEvent).join(LearnJob).where(LearnJob.adapter == doc.adapter)):
            event.message, event.data = _scrub(event.message, needles), _scrub(event.data, needles)
        for row in session.scalars(select(AdapterVersion).join(Adapter).where(Adapter.name == doc.adapter)):
            row.metrics = _scrub(row.metrics, needles)
        doc.title, doc.text, doc.probes, doc.memory = None, "", [], {}
        doc.accuracy_weights = doc.accuracy_context = doc.probe_source = None
        doc.purged_at = utcnow()
        kb = doc.adapter
    for shard in shards:
        publish_event(redis, AdapterEvent("retired", shard))  # API processes unload what they hold of it
    publish_event(redis, AdapterEvent("documents", kb))
    logger.info("purged document %d of %s (%d shard versions' files)", document_id, kb, len(shards))


def purge_forgotten(*, db_url: str, store: AdapterStore, redis: Any, retention_days: float) -> list[int]:
    """Purge every document forgotten more than `retention_days` ago (the retention sweep)."""
    cutoff = utcnow() - timedelta(days=retention_days)
    with session_scope(db_url) as session:
        due = [d.id for d in session.scalars(select(Document).where(
            Document.removed_at.is_not(None), Document.purged_at.is_(None))) if as_utc(d.removed_at) <= cutoff]
    for document_id in due:
        purge_document(db_url=db_url, store=store, redis=redis, document_id=document_id)
    return due


def _purge_shard_versions(session: Any, store: AdapterStore, doc: Document) -> list[str]:
    """Delete the files of every shard version trained on `doc` (published, rejected or superseded);
    returns the shards they belong to. A shard left with no other document is retired."""
    touched: dict[str, list[AdapterVersion]] = {}
    if doc.shard is None:
        return []
    for row in session.scalars(select(AdapterVersion).join(Adapter).where(Adapter.name == doc.shard)):
        ids = (row.metrics or {}).get("document_ids") or ()
        if doc.id in ids or not ids:  # a candidate with no record of its documents may hold it too
            touched.setdefault(doc.shard, []).append(row)
    for shard, rows in touched.items():
        for row in rows:
            if row.purged_at is None:
                store.delete_version(row.path)
                row.purged_at = utcnow()
            if row.status is VersionStatus.published:
                row.status, row.status_changed_at = VersionStatus.retired, utcnow()
        others = session.scalars(select(Document.id).where(Document.shard == shard, Document.id != doc.id,
                                                           Document.state != DocumentState.removed)).first()
        if others is None:
            adapter = session.scalar(select(Adapter).where(Adapter.name == shard))
            adapter.retired_at = adapter.retired_at or utcnow()
    return list(touched)


def _retire_versions_holding(session: Any, kb: str, shards: list[str]) -> None:
    """Knowledge-base versions whose shard set names a purged shard version can no longer be served."""
    purged = {(r.adapter.name, r.version) for r in session.scalars(
        select(AdapterVersion).join(Adapter).where(Adapter.name.in_(shards), AdapterVersion.purged_at.is_not(None)))}
    sets = shard_sets(session, kb)
    for row in session.scalars(select(AdapterVersion).join(Adapter).where(Adapter.name == kb)):
        if any((s, v) in purged for s, v in sets.get(row.version, {}).items()) and row.purged_at is None:
            row.purged_at = utcnow()  # route_to_version refuses a purged version


@dataclass(frozen=True)
class _Needles:
    """What marks a record as quoting the document: any of `quotes` inside a string, or a string
    that is its title (a short title inside other text proves nothing)."""

    quotes: tuple[str, ...]
    title: str | None

    def found_in(self, text: str) -> bool:
        return text == self.title or any(q in text for q in self.quotes)


def _quotes(doc: Document) -> tuple[str, ...]:
    """The document's title, sentences and probe questions (self-written ones quote its names)."""
    memory = doc.memory if isinstance(doc.memory, dict) else json.loads(doc.memory or "{}")
    questions = [p.get("question", "") for p in [*(doc.probes or []), *memory.get("probes", [])] if isinstance(p, dict)]
    candidates = [doc.title or "", *split_sentences(doc.text), *questions]
    return tuple(sorted({c.strip() for c in candidates if len(c.strip()) >= MIN_NEEDLE_CHARS}, key=len, reverse=True))


def _scrub(value: Any, needles: _Needles) -> Any:
    """`value` with every string that quotes the document replaced, and every object holding one
    dropped down to `{"purged": true}` (a probe's record: its question, its answers, its grade)."""
    if isinstance(value, str):
        return PURGED if needles.found_in(value) else value
    if isinstance(value, list):
        return [_scrub(v, needles) for v in value]
    if isinstance(value, dict):
        if any(isinstance(v, str) and needles.found_in(v) for v in value.values()):
            return {"purged": True}
        return {k: _scrub(v, needles) for k, v in value.items()}
    return value
