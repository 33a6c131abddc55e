"""Wire models for /v1/learn and /v1/adapters (our own API: unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from app.api.limits import MAX_INT32, check_text
from app.registry.models import JobStage, JobStatus
from app.tenancy import ADAPTER_NAME_PATTERN
from workers.seal.config import SELF_EDIT_FORMATS, SelfEditConfig, TrainConfig
from workers.seal.recipes import Recipe
from workers.seal.types import ProbeSource

MAX_DOCUMENTS = 32
MAX_PROBES = 64


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProbeIn(Strict):
    question: str = Field(min_length=1, max_length=2000)
    answer: str = Field(min_length=1, max_length=2000)

    @field_validator("question", "answer")
    @classmethod
    def not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return check_text(v.strip(), allow_nul=False)


class DocumentIn(Strict):
    title: str | None = Field(None, max_length=500)
    # The upper bound is enforced against settings.max_document_chars in the router.
    text: str = Field(min_length=1)
    probes: list[ProbeIn] = Field(default_factory=list, max_length=MAX_PROBES)

    @field_validator("text")
    @classmethod
    def not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("document text must not be blank")
        return check_text(v, allow_nul=False)

    @field_validator("title")
    @classmethod
    def check_title(cls, v: str | None) -> str | None:
        # PostgreSQL text columns refuse NUL; SQLite would store it and the worker's prompts would carry it.
        return check_text(v, allow_nul=False)


class LearnOptions(Strict):
    """Per-request overrides of the inner loop, within server-side limits."""

    format: str | None = Field(None, description=f"Self-edit format: one of {', '.join(SELF_EDIT_FORMATS)}.")
    k: int | None = Field(None, ge=1, le=8, description="Self-edit candidates to sample and train.")
    epochs: int | None = Field(None, ge=1, le=50)
    lr: float | None = Field(None, gt=0, le=1.0)
    rank: Literal[8, 16, 32, 64] | None = None
    policy: str | None = Field(None, pattern=ADAPTER_NAME_PATTERN,
                               description="Policy adapter for self-edits: one of yours, or one the operator allows.")
    layout: Literal["shards", "stream"] | None = Field(
        None, description="How a new adapter holds what it learns, set by the learn that creates it: `shards` "
        "(default) makes it a knowledge base of routed LoRA shards; `stream` is one LoRA retrained per document "
        "(the earlier design, kept for comparison). Ignored for an adapter that exists.")
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Makes the learn repeatable: the same seed, documents and options "
        "draw the same replay anchors and the same sample of earlier questions for the gate (the verdict may "
        "still differ across CPU or GPU kinds). Default: a seed drawn from the job's id.")


    @field_validator("format")
    @classmethod
    def check_format(cls, v: str | None) -> str | None:
        if v is not None and v not in SELF_EDIT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(SELF_EDIT_FORMATS)}")
        return v

    def to_inner_configs(self, recipe: Recipe | None = None) -> tuple[SelfEditConfig, TrainConfig]:
        """The inner loop's configs: what this request sets, then the model's recipe (Settings.recipe()),
        then the built-in defaults when no recipe is given."""
        recipe = recipe or Recipe()
        selfedit = recipe.selfedit_config(**self.model_dump(include={"format", "k"}, exclude_none=True))
        train = self.model_dump(include={"epochs", "lr", "rank"}, exclude_none=True)
        if "rank" in train:
            # Keep the recipe's alpha / rank (the paper's 2): the LoRA scale its lr was chosen for.
            train["alpha"] = max(1, round(recipe.alpha * train["rank"] / recipe.rank))
        return selfedit, recipe.train_config(**train)

    def cost(self, documents: int, recipe: Recipe | None = None) -> int:
        """Training work this request asks for, in document-epochs per candidate: documents × k × epochs."""
        selfedit, train = self.to_inner_configs(recipe)
        return documents * selfedit.k * train.epochs


class LearnRequest(Strict):
    adapter: str = Field(pattern=ADAPTER_NAME_PATTERN)
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    options: LearnOptions = Field(default_factory=LearnOptions)


class JobEventOut(BaseModel):
    id: int
    at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = None

    @field_serializer("at")
    def utc(self, v: datetime) -> str:
        return _iso(v)


class LearnJobOut(BaseModel):
    id: str
    object: Literal["learn.job"] = "learn.job"
    kind: str
    adapter: str
    status: JobStatus
    stage: JobStage | None
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int | None
    metrics: dict[str, Any]
    error: str | None
    options: dict[str, Any]
    documents: int = 0
    events: list[JobEventOut] = Field(default_factory=list)

    @field_serializer("created_at", "started_at", "finished_at")
    def utc(self, v: datetime | None) -> str | None:
        return _iso(v) if v else None


class LearnJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LearnJobOut]
    total: int
    limit: int
    offset: int


class AdapterVersionOut(BaseModel):
    version: int
    status: str
    source: str = Field(description="learn | consolidate | import")
    parent_version: int | None
    job_id: str | None
    created_at: datetime
    files_purged: bool = False
    metrics: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def from_row(cls, data: Any) -> Any:
        if hasattr(data, "purged_at"):  # an AdapterVersion row
            data = {k: getattr(data, k) for k in ("version", "status", "source", "parent_version", "job_id",
                                                  "created_at", "metrics")} | {"files_purged": data.purged_at is not None}
        return data

    @field_serializer("created_at")
    def utc(self, v: datetime) -> str:
        return _iso(v)


class AdapterOut(BaseModel):
    name: str
    object: Literal["adapter"] = "adapter"
    kind: Literal["adapter", "knowledge_base"] = Field(
        "adapter", description="adapter: one LoRA (mode=stream); knowledge_base: routed LoRA shards.")
    tenant: str | None
    current_version: int | None
    documents: int | None = Field(None, description="A knowledge base's documents that its current version "
                                                    "answers (learned, pending or in context).")
    shards: int | None = Field(None, description="The shards a knowledge base's current version serves.")
    retired: bool
    created_at: datetime
    versions: list[AdapterVersionOut] = Field(default_factory=list)

    @field_serializer("created_at")
    def utc(self, v: datetime) -> str:
        return _iso(v)


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterOut]


class KbDocumentOut(BaseModel):
    """One document of a knowledge base, as its current version answers it."""

    id: int
    object: Literal["knowledge_base.document"] = "knowledge_base.document"
    title: str | None
    characters: int
    state: Literal["pending", "learned", "context"] = Field(
        description="pending: its learn is queued or running; learned: in a shard of the current version; "
                    "context: its learning was rejected or failed. Pending and context documents are "
                    "answered by the base model reading them.")
    answered_from: Literal["weights", "context"] = Field(
        description="What answers a question about it by default: its shard's weights, or the base model "
                    "reading it (not learned, its weights answered its probes worse, or its probes were cloze).")
    shard: str | None = Field(description="The shard version that learned it: `s3@v2`.")
    job_id: str
    job_status: JobStatus
    accuracy_weights: float | None = Field(description="Its probes answered from its shard's weights alone.")
    accuracy_context: float | None = Field(description="Its probes answered by the base model reading it.")
    probe_source: ProbeSource | None = Field(
        description="What those probes were: the caller's, questions the model wrote and checked, or "
                    "cloze items filling in where too few questions checked out. A document graded on "
                    "cloze is answered by reading it: cloze cannot show that its weights answer questions.")
    created_at: datetime

    @field_serializer("created_at")
    def utc(self, v: datetime) -> str:
        return _iso(v)


class KbDocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KbDocumentOut]
    total: int
    limit: int
    offset: int


class KbDocumentDeleted(BaseModel):
    id: int
    object: Literal["knowledge_base.document.deleted"] = "knowledge_base.document.deleted"
    deleted: bool = True
    version: int | None = Field(description="The knowledge-base version published without it (null: it was in "
                                            "no shard, so only the router forgot it).")
    shard: str | None = Field(description="The shard that left the version with it.")
    read_in_context: list[int] = Field(description="That shard's other documents: answered in context from now on.")
    purged: bool = Field(description="Its text, probes and shard files are already deleted; else that happens "
                                     "SEAL_ADAPTER_RETENTION_DAYS from now, and a rollback can bring it back until then.")


class RollbackRequest(Strict):
    version: int = Field(ge=1, le=MAX_INT32)


def _iso(v: datetime) -> str:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).isoformat().replace("+00:00", "Z")
