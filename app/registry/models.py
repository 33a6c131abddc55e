"""SQLAlchemy 2 tables. API shapes live in app/api, never here."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(at: datetime) -> datetime:
    """A stored time, zone-aware: SQLite hands datetimes back naive, and every stored time is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    published = "published"
    rejected = "rejected"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.published, JobStatus.rejected, JobStatus.failed, JobStatus.cancelled})


class JobStage(str, enum.Enum):
    generating = "generating"
    training = "training"
    evaluating = "evaluating"
    publishing = "publishing"


class VersionStatus(str, enum.Enum):
    candidate = "candidate"
    published = "published"
    rejected = "rejected"
    retired = "retired"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native ENUM type) so adding a value needs no DDL.
    return Enum(cls, native_enum=False, length=16, validate_strings=True)


class AdapterKind:
    lora = "lora"
    kb = "kb"
    shard = "shard"


class DocumentState:
    """Where a knowledge base's document stands (app/knowledge): what the router answers it with."""

    pending = "pending"  # accepted, not learned yet: answered with the document in context
    learned = "learned"  # in a published shard version: answered from the weights
    context = "context"  # the gate rejected its learning (or it failed): answered in context, never lost
    removed = "removed"  # forgotten (app/knowledge/forgetting.py): answered by no version that lacks its shard


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(primary_key=True)
    # A key (app/tenancy.py): `<tenant>~<name>`, or the bare name of an operator's adapter.
    name: Mapped[str] = mapped_column(String(128), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    # A tenantless adapter is served to admins only, unless an operator marks it shared.
    shared: Mapped[bool] = mapped_column(default=False, server_default=false())
    # "lora": one adapter, each version a LoRA (imports, policies, the single-stream layout);
    # "kb": a knowledge base, each version a set of shard versions; "shard": one LoRA of a kb.
    kind: Mapped[str] = mapped_column(String(8), default=AdapterKind.lora, server_default=AdapterKind.lora)
    kb_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"), index=True)  # a shard's knowledge base
    current_version: Mapped[int | None]
    retired_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    versions: Mapped[list[AdapterVersion]] = relationship(
        back_populates="adapter", order_by="AdapterVersion.version"
    )


class AdapterVersion(Base):
    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    version: Mapped[int]
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[VersionStatus] = mapped_column(_enum(VersionStatus))
    parent_version: Mapped[int | None]
    # At most one version per job: a retried job finds its version instead of publishing twice.
    job_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(16), default="learn", server_default="learn")  # learn|consolidate|import
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime | None]  # when it was rejected or retired: the retention clock
    purged_at: Mapped[datetime | None]  # files deleted after the retention period; the row stays as lineage
    adapter: Mapped[Adapter] = relationship(back_populates="versions")


class LearnJob(Base):
    __tablename__ = "learn_jobs"
    __table_args__ = (
        UniqueConstraint("tenant_key", "idempotency_key"),
        Index("ix_learn_jobs_adapter_status", "adapter", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="learn")
    adapter: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str | None] = mapped_column(String(128))
    # NULL never equals NULL in a unique index, so the open (tenant-less) mode uses "".
    tenant_key: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    stage: Mapped[JobStage | None] = mapped_column(_enum(JobStage))
    progress: Mapped[float] = mapped_column(default=0.0)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # When app/dispatch.py sent it to the queue; a queued job without it waits in its tenant's backlog.
    dispatched_at: Mapped[datetime | None]
    documents: Mapped[list[Document]] = relationship(back_populates="job", order_by="Document.position")
    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("learn_jobs.id"), index=True)
    adapter: Mapped[str] = mapped_column(String(128), index=True)
    position: Mapped[int]
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    probes: Mapped[list[Any]] = mapped_column(default=list)
    # Knowledge bases only: the shard key the document is learned into, its state, and what its
    # learning produced ({"probes", "sequences", "results"}), which the shard's next retrain and
    # the gate read back. Versions refer to documents by id (a shard version's `document_ids`).
    shard: Mapped[str | None] = mapped_column(String(160), index=True)
    state: Mapped[str] = mapped_column(String(8), default=DocumentState.pending, server_default=DocumentState.pending)
    memory: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    # Its probes answered closed-book by the shard version that learned it, and by the base model
    # reading it in the prompt: the router answers it from weights only when they are not worse.
    accuracy_weights: Mapped[float | None]
    accuracy_context: Mapped[float | None]
    # What those probes were (workers/seal/probes.py): the caller's, self-written questions, or cloze.
    # Cloze numbers cannot show the weights answer questions as well as reading does.
    probe_source: Mapped[str | None] = mapped_column(String(24))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]  # forgotten; purged SEAL_ADAPTER_RETENTION_DAYS later
    purged_at: Mapped[datetime | None]  # its text, probes and shard files are gone
    job: Mapped[LearnJob] = relationship(back_populates="documents")


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("learn_jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(8), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    job: Mapped[LearnJob] = relationship(back_populates="events")


class Tenant(Base):
    """One row per tenant that has submitted work: the row its quota checks lock."""

    __tablename__ = "tenants"

    tenant_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    touched_at: Mapped[datetime | None]
