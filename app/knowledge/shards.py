"""A knowledge base's shards and versions in the registry: the one owner of which document lives
in which shard, and of which shard versions make up a knowledge-base version.

- A shard is an adapter row of kind `shard` (key `<kb key>+s<n>`, a name no client can send)
  whose versions are LoRA directories, so publishing, lineage and retention are the adapters'.
- A knowledge-base version is a version row of the kb whose metrics hold what changed against its
  parent version (`{"changed": {shard key: version}, "dropped": [shard key]}`), so N learns store
  O(N), not a whole set per version; its set is resolved along its lineage (`shard_sets`). Rows
  written before migration 0008 held the whole set (`"shards"`), which resolution still reads.
  Publishing one is app.publishing.publish_shard; rollback and pinning restore the whole set.
- A shard version's metrics name the documents it was trained on (`document_ids`), so the set of
  documents a kb version answers from its weights is exact for every version, old or current.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.registry import queries
from app.registry.models import (
    Adapter,
    AdapterKind,
    AdapterVersion,
    Document,
    DocumentState,
    JobStatus,
    LearnJob,
)
from workers.seal.types import ProbeSource

SHARD_SEP = "+s"  # '+' is outside the adapter-name alphabet: no client can address a shard by name
MANIFEST_FILE = "seal.json"


def shard_key(kb: str, index: int) -> str:
    return f"{kb}{SHARD_SEP}{index}"


def shard_label(shard: str) -> str:
    """`s3` for `<kb>+s3`: how routes and metrics name a shard."""
    return "s" + shard.rpartition(SHARD_SEP)[2]


@dataclass(frozen=True)
class ShardRef:
    """One shard version of a knowledge-base version."""

    shard: str
    version: int
    path: str
    document_ids: tuple[int, ...]


@dataclass(frozen=True)
class KbVersion:
    """A knowledge-base version: the shard versions it serves (empty before the first publish)."""

    kb: str
    version: int | None
    shards: dict[str, ShardRef] = field(default_factory=dict)

    def shard_of(self, document_id: int) -> ShardRef | None:
        return self._by_document.get(document_id)

    @cached_property
    def _by_document(self) -> dict[int, ShardRef]:
        # Listing or routing N documents asks once per document: a scan of every shard each time was O(N^2).
        index: dict[int, ShardRef] = {}
        for ref in self.shards.values():
            for doc_id in ref.document_ids:
                index.setdefault(doc_id, ref)  # the first shard holding it, as the scan answered
        return index


def is_kb(adapter: Adapter | None) -> bool:
    return adapter is not None and adapter.kind == AdapterKind.kb


def assign_shards(session: Session, kb: Adapter, documents: Sequence[Document], capacity: int) -> None:
    """Put each new document into the newest shard with room, else open a shard.

    Runs inside the submit transaction, after the tenant's row lock, so one tenant's concurrent
    submits fill shards in turn. A document whose learning was rejected keeps no place: it is
    answered in context and the shard's room goes to the next one.
    """
    newest = session.scalars(select(Adapter).where(Adapter.kb_id == kb.id).order_by(Adapter.id.desc()).limit(1)).first()
    used = _occupancy(session, newest.name) if newest is not None else capacity
    for doc in documents:
        if newest is None or used >= capacity:
            newest, used = open_shard(session, kb), 0
        doc.shard, doc.state = newest.name, DocumentState.pending
        used += 1
    session.flush()


def _occupancy(session: Session, shard: str) -> int:
    stmt = (select(func.count(Document.id)).join(LearnJob, Document.job_id == LearnJob.id)
            .where(Document.shard == shard, Document.state != DocumentState.context,
                   LearnJob.status != JobStatus.cancelled))
    return session.scalar(stmt) or 0


def open_shard(session: Session, kb: Adapter) -> Adapter:
    for _ in range(5):
        count = session.scalar(select(func.count(Adapter.id)).where(Adapter.kb_id == kb.id)) or 0
        try:
            with session.begin_nested():
                row = Adapter(name=shard_key(kb.name, count), tenant=kb.tenant, shared=kb.shared,
                              kind=AdapterKind.shard, kb_id=kb.id)
                session.add(row)
                session.flush()
            return row
        except IntegrityError:
            continue  # an admin's submit into the same kb opened this shard a moment ago
    raise RuntimeError(f"could not open a shard of {kb.name}")


def kb_version(session: Session, kb: str, version: int | None = None) -> KbVersion:
    """The shard set of `kb@v<version>` (the current version when None)."""
    adapter = queries.get_adapter(session=session, name=kb)
    number = version if version is not None else (adapter.current_version if adapter else None)
    if adapter is None or number is None:
        return KbVersion(kb, None)
    lineage = _lineage(session, kb)
    if number not in lineage:
        return KbVersion(kb, None)
    return KbVersion(kb, number, _shard_refs(session, _resolve(lineage, number, {})))


def shard_sets(session: Session, kb: str) -> dict[int, dict[str, int]]:
    """Every version of `kb` with its whole shard set (shard key → shard version)."""
    lineage = _lineage(session, kb)
    memo: dict[int, dict[str, int]] = {}
    return {number: _resolve(lineage, number, memo) for number in sorted(lineage)}


def delta(parent: dict[str, int], shards: dict[str, int]) -> dict[str, Any]:
    """What a version whose set is `shards` records against its parent's set `parent`."""
    return {"changed": {s: v for s, v in shards.items() if parent.get(s) != v},
            "dropped": sorted(s for s in parent if s not in shards)}


Lineage = dict[int, tuple[int | None, dict[str, Any]]]  # version → (parent version, metrics)


def _lineage(session: Session, kb: str) -> Lineage:
    stmt = (select(AdapterVersion.version, AdapterVersion.parent_version, AdapterVersion.metrics)
            .join(Adapter, AdapterVersion.adapter_id == Adapter.id).where(Adapter.name == kb))
    return {number: (parent, metrics or {}) for number, parent, metrics in session.execute(stmt).all()}


def _resolve(lineage: Lineage, number: int, memo: dict[int, dict[str, int]]) -> dict[str, int]:
    """Version `number`'s set: its ancestors' changes applied oldest first (a parent is always an
    earlier version, so the walk ends); `memo` keeps the sets already resolved."""
    chain: list[int] = []
    at: int | None = number
    while at is not None and at not in memo and at in lineage:
        chain.append(at)
        parent = lineage[at][0]
        at = parent if parent is not None and parent < at else None
    shards = dict(memo[at]) if at is not None and at in memo else {}
    for n in reversed(chain):
        metrics = lineage[n][1]
        if "shards" in metrics:  # recorded whole (before migration 0008)
            shards = dict(metrics["shards"])
        shards.update(metrics.get("changed") or {})
        for dropped in metrics.get("dropped") or ():
            shards.pop(dropped, None)
        memo[n] = dict(shards)
    return dict(memo.get(number, shards))


def _shard_refs(session: Session, shards: dict[str, int]) -> dict[str, ShardRef]:
    if not shards:
        return {}
    stmt = (select(Adapter.name, AdapterVersion).join(AdapterVersion, AdapterVersion.adapter_id == Adapter.id)
            .where(Adapter.name.in_(list(shards))))
    refs: dict[str, ShardRef] = {}
    for name, row in session.execute(stmt).all():
        if shards.get(name) == row.version:
            refs[name] = ShardRef(name, row.version, row.path, tuple((row.metrics or {}).get("document_ids", ())))
    return refs


@dataclass(frozen=True)
class KbDocument:
    """A document of a knowledge base as the router sees it."""

    id: int
    title: str | None
    text: str
    probes: tuple[str, ...]
    state: str  # DocumentState: learned (from a shard of the version), pending, or context
    shard: ShardRef | None
    accuracy_weights: float | None = None  # its probes closed-book from the shard that learned it
    accuracy_context: float | None = None  # the same probes read in context by the base model
    probe_source: str | None = None  # what those probes were (workers/seal/probes.py): questions or cloze

    def reads_better(self, margin: float) -> bool:
        return reads_better(self.accuracy_weights, self.accuracy_context, margin, self.probe_source)


def reads_better(weights: float | None, context: float | None, margin: float,
                 probe_source: str | None = None) -> bool:
    """Whether the base model reading a document should answer it rather than its shard's weights:
    its probes were questions and reading answered them better by more than `margin`, or its probes
    were cloze, which cannot show the weights to be as good. Unmeasured (a document learned before
    either was recorded): no. The router, the job's verdict and the document listing all decide by this."""
    if weights is None or context is None:
        return False
    if probe_source is not None and not ProbeSource(probe_source).questions:
        # Cloze measures how a shard completes its sentences, not how it answers questions: on 20 SQuAD
        # paragraphs shards beat reading on their cloze probes and lost to it on the paragraphs' real
        # questions (docs/RESULTS.md, "Cloze is no evidence").
        return True
    return weights < context - margin


def kb_documents(session: Session, kb: str, version: KbVersion) -> list[KbDocument]:
    """Every document `version` can answer: from its shards' weights, else in context.

    Pending documents (their job queued or running) and documents whose learning was rejected
    or failed are answered in context, so accepted knowledge is never lost. A document learned
    into a shard version this kb version does not hold (rolled back, or past a pinned version)
    and a cancelled job's documents are not answered at all.
    """
    # Only the probes of each document's memory: its training sequences are the shard's business.
    stmt = (select(Document.id, Document.title, Document.text, Document.state, Document.memory["probes"],
                   LearnJob.status, Document.accuracy_weights, Document.accuracy_context, Document.probe_source)
            .join(LearnJob, Document.job_id == LearnJob.id)
            .where(Document.adapter == kb, LearnJob.kind == "learn").order_by(Document.id))
    out: list[KbDocument] = []
    for doc_id, title, text, doc_state, learned_probes, status, weights, context, probe_source \
            in session.execute(stmt).all():
        ref = version.shard_of(doc_id)
        state = served_state(ref, status, doc_state)
        if state is None:
            continue
        if isinstance(learned_probes, str):  # SQLite hands a JSON fragment back as text
            learned_probes = json.loads(learned_probes)
        probes = tuple(p["question"] for p in learned_probes or () if isinstance(p, dict) and "question" in p)
        out.append(KbDocument(doc_id, title, text, probes, state, ref, weights, context, probe_source))
    return out


def served_state(ref: ShardRef | None, job_status: str, doc_state: str) -> str | None:
    """How a kb version answers a document (a DocumentState), or None when it does not answer it."""
    if ref is not None:
        return DocumentState.learned  # also a forgotten one, in a version from before it was forgotten
    if doc_state == DocumentState.removed:
        return None
    if job_status in (JobStatus.queued, JobStatus.running):
        return DocumentState.pending
    if job_status in (JobStatus.rejected, JobStatus.failed) or doc_state == DocumentState.context:
        return DocumentState.context
    return None


@dataclass(frozen=True)
class ListedDocument:
    """A row of a knowledge base's document listing (GET /v1/adapters/{kb}/documents)."""

    id: int
    title: str | None
    characters: int
    state: str  # DocumentState
    shard: ShardRef | None
    job_id: str
    job_status: str
    accuracy_weights: float | None
    accuracy_context: float | None
    probe_source: str | None
    created_at: Any


def list_documents(session: Session, kb: str, version: KbVersion) -> list[ListedDocument]:
    """The documents `version` answers, oldest first, as kb_documents decides, without their text."""
    stmt = (select(Document.id, Document.title, func.length(Document.text), Document.state, LearnJob.id,
                   LearnJob.status, Document.accuracy_weights, Document.accuracy_context, Document.probe_source,
                   Document.created_at)
            .join(LearnJob, Document.job_id == LearnJob.id)
            .where(Document.adapter == kb, LearnJob.kind == "learn").order_by(Document.id))
    out = []
    for doc_id, title, chars, doc_state, job_id, status, weights, context, probe_source, created \
            in session.execute(stmt).all():
        ref = version.shard_of(doc_id)
        state = served_state(ref, status, doc_state)
        if state is not None:
            out.append(ListedDocument(doc_id, title, chars or 0, state, ref, job_id, status, weights, context,
                                      probe_source, created))
    return out


def shard_documents(session: Session, shard: str, version: KbVersion) -> list[Document]:
    """The documents `shard` holds in `version` (what its next retrain starts from)."""
    ref = version.shards.get(shard)
    if ref is None or not ref.document_ids:
        return []
    return list(session.scalars(select(Document).where(Document.id.in_(ref.document_ids)).order_by(Document.id)))


def live_knowledge_bases(session: Session) -> Sequence[Adapter]:
    return session.scalars(select(Adapter).where(Adapter.kind == AdapterKind.kb, Adapter.retired_at.is_(None),
                                                 Adapter.current_version.is_not(None)).order_by(Adapter.name)).all()


def learns_since_repack(session: Session, kb: Adapter) -> int:
    """Knowledge-base versions published by learns since its last re-pack ran (what makes one due).

    A re-pack that found nothing to change publishes no version, so the clock is the last finished
    re-pack job, not the last re-packed version."""
    last = session.scalar(select(func.max(LearnJob.finished_at)).where(
        LearnJob.adapter == kb.name, LearnJob.kind == "consolidate", LearnJob.status == JobStatus.published))
    stmt = select(func.count(AdapterVersion.id)).where(AdapterVersion.adapter_id == kb.id,
                                                      AdapterVersion.source == "learn")
    if last is not None:
        stmt = stmt.where(AdapterVersion.created_at > last)
    return session.scalar(stmt) or 0


