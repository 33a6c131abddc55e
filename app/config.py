"""Service settings: the only module that reads the environment.

Everything else receives a `Settings` (or plain values taken from it), so tests can
build `Settings(...)` with explicit values and `workers/seal` never sees `os.environ`.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from app.knowledge.router import RouterConfig
    from workers.seal.recipes import Recipe

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Scope(str, enum.Enum):
    infer = "infer"
    learn = "learn"
    admin = "admin"


class ApiKey(BaseModel):
    """One configured API key. Only the SHA-256 digest is ever kept in memory."""

    tenant: str
    scopes: frozenset[Scope] = frozenset({Scope.infer, Scope.learn})
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="before")
    @classmethod
    def hash_plaintext_key(cls, data: Any) -> Any:
        # Plaintext keys are accepted for convenience (e.g. a k8s Secret) and hashed at once.
        if isinstance(data, dict) and "key" in data:
            data = dict(data)
            data["sha256"] = hashlib.sha256(data.pop("key").encode()).hexdigest()
        return data


class TenantQuota(BaseModel):
    """Per-tenant limits; unset fields fall back to the global quota settings."""

    documents_per_day: int | None = Field(None, ge=0)
    concurrent_jobs: int | None = Field(None, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEAL_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Model cache, Valkey files, SQLite and the adapter store.")
    model: str | None = Field(None, description="Base model: a local HF directory or Hub id. Default: bundled SmolLM2-135M-Instruct.")
    served_model_name: str | None = Field(None, description="Model id clients send for the base model. Default: the model directory's name.")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "SEAL_DATABASE_URL"),
        description="SQLAlchemy URL. Default: SQLite in the data dir.",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "SEAL_REDIS_URL"),
        description="Redis/Valkey URL. Default: an embedded Valkey in the data dir.",
    )
    adapter_store_url: str | None = Field(None, description="Adapter store: file:// path. Default: <data_dir>/adapters.")

    # --- HTTP ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address; non-loopback requires API keys.")
    port: int = Field(8000, description="HTTP port.")
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(
        default_factory=list,
        description='JSON list of {"tenant", "scopes", "sha256" | "key"}. Empty: open, loopback only.',
    )
    max_request_bytes: int = Field(16 * 1024 * 1024, description="Bodies above this are refused with 413 before parsing.")
    max_document_chars: int = Field(200_000, description="Longest accepted learn document.")
    max_passage_tokens: int = Field(
        400, ge=64,
        description="Learn documents longer than this many tokens are split into passages at submit (never truncated): each must fit a training sequence and a probe prompt.")

    # --- engine --------------------------------------------------------------------------
    device: Device = Field(Device.auto, description="auto | cpu | cuda.")
    dtype: str = Field("auto", description="auto = float32 on CPU (no native bf16 here), bfloat16 on GPU.")
    max_model_len: int = Field(2048, description="Context window (prompt + completion) in tokens.")
    max_num_seqs: int = Field(64, description="Engine batch size; requests are batched, never serialised.")
    max_loras: int = Field(4, description="Adapters that can share one batch.")
    max_cpu_loras: int = Field(16, description="Adapters kept loaded (current versions, pinned ones, hot knowledge-base shards); vLLM evicts the least recently used, and a cold shard loads on its next question.")
    max_lora_rank: int | None = Field(
        None,
        description="The LoRA rank every served adapter may reach (one of 8/16/32/64/128/256): the engines reserve it for every adapter, and every request pays for it (on CPU a batch of 8 LoRA answers took 3.2x as long at 64 as at 16). Default: the smallest that covers what the model's recipe trains, shards and the ReST-EM policy included (16 for the bundled model). A learn asking for more is refused.")
    kv_cache_gib: int = Field(1, ge=1, description="CPU only: KV cache GiB (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(0.85, description="API process: vLLM's share of the GPU.")
    swap_drain_timeout_s: float = Field(300.0, description="How long a swap waits for requests on the old version.")

    # --- learning ------------------------------------------------------------------------
    learn_job_timeout_s: int = Field(3600, description="Hard limit for one learn attempt.")
    learn_retries: int = Field(3, description="Attempts after the first when a learn job fails or its worker dies.")
    worker_gpu_memory_utilization: float = Field(0.45, description="GPU worker: vLLM's share; training uses the rest.")
    train_threads: int | None = Field(None, description="torch threads for training; default: cores - 1 on CPU.")
    train_lent_threads: int | None = Field(
        None, ge=0,
        description="CPU only: torch threads a worker's training, teacher pass and scoring add while nothing else on the host uses CPU (checked before every step: a request that arrives gets its core back within a step, and it is lent again after 10 quiet seconds). Default: under `seal up` with one worker, the API engine's cores; otherwise 0 (never).")
    train_bf16_autocast: bool | None = Field(
        None,
        description="Let a recipe that asks for them (none bundled) train a float32 model with bf16 matrix products. Default: on where the CPU computes bf16 natively (AVX-512 BF16 or AMX). Measured on the 135M shard recipe: the same recall, 0.73x the training time on an AMD EPYC, 1.09x on an Intel Xeon. A bf16 model (GPU) needs none.")
    policy: str | None = Field(None, description="Policy adapter (store name or directory) that writes self-edits. Default: the base model.")
    policies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated adapter keys any tenant may name as a learn's `policy`; a tenant may always name its own adapters.")
    max_learn_cost: int = Field(
        640, ge=1,
        description="Per learn request: the most passages × self-edit candidates (k) × epochs it may ask for (long documents count each passage). The defaults cost 10 per passage.")
    recipe_dir: Path | None = Field(
        None, description="Per-model inner-loop recipes (<model>.json): `seal eval` writes them, workers read them before each job. Default: <data_dir>/recipes.")

    # --- knowledge bases (app/knowledge) -------------------------------------------------
    router_threshold: float | None = Field(
        None, ge=0, le=1,
        description="The router's confidence (the share of the question's information, words weighed by how rare they are in English and names 3x, found in the best document) from which a knowledge base's question is answered by that document's shard. Default: the router's calibrated value (app/knowledge/router.py RouterConfig, 0.5).")
    router_floor: float | None = Field(
        None, ge=0, le=1,
        description="Below the threshold and from this confidence on, the question is answered by the base model with the best document in the prompt; below it, by the base model alone. Default: the threshold (no such band): with the bundled model, general questions read beside an unrelated document lost their answers (app/knowledge/router.py RouterConfig.floor).")

    weights_margin: float = Field(
        0.1, ge=0, le=1,
        description="A learned document answers from its shard's weights alone when they answered its probes at least as well as the base model reading it, within this margin; otherwise the base model answers reading the document (seal-route `context:<id>`), the better of the two the job measured.")

    # --- continual learning --------------------------------------------------------------
    warm_start: bool = Field(
        False, description="Train version N+1 from version N's weights (true), or rebuild it from the base weights on the whole stream (false; measured better on the bundled model).")
    replay_ratio: float = Field(8.0, ge=0, description="Earlier training sequences replayed per new sequence (0 disables replay).")
    replay_max_sequences: int = Field(64, ge=0, description="Cap on replayed sequences per training run.")
    anchor_sequences: int | None = Field(
        None, ge=0,
        description="Base-model answers to general prompts trained beside every document, so general behaviour survives (0 disables). Default: the model's recipe (8 for the bundled model); set, it overrides every recipe.")
    # One strict gate for every model: a recipe that damages the model is fixed, not let through.
    # Evaluation noise is handled by asking more questions, never by a wider margin.
    gate_old_margin: float = Field(
        0.10, ge=0, le=1,
        description="Largest allowed accuracy drop on earlier documents' probes: at most 1 question in 10. The same for every model.")
    gate_canary_margin: float = Field(
        0.05, ge=0, le=1,
        description="Largest allowed accuracy drop on the canary set vs the base model: at most 1 of the 24 canary questions. The same for every model.")
    gate_max_old_probes: int = Field(32, ge=1, description="Earlier probes the gate re-asks; above this a fixed-seed sample.")
    consolidate_every: str | None = Field(
        None, description="Consolidate each adapter after this many absorbed documents (an integer) or on a cron schedule.")
    adapter_retention_days: float = Field(7.0, ge=0, description="Days a retired adapter's or rejected version's files, and a forgotten document (its text, probes and shard files), are kept.")
    quota_documents_per_day: int = Field(1000, ge=0, description="Per tenant: documents accepted per rolling 24 h (0 = unlimited).")
    quota_concurrent_jobs: int = Field(16, ge=0, description="Per tenant: learn jobs running at once (also at most one per worker); the rest wait their turn, fairly across tenants (0 = unlimited).")
    tenant_quotas: Annotated[dict[str, TenantQuota], NoDecode] = Field(
        default_factory=dict, description='JSON {"tenant": {"documents_per_day": N, "concurrent_jobs": N}} overrides.')

    # --- CLI client (seal ask/learn/jobs/adapters talk to a running server) --------------
    url: str | None = Field(None, description="Server the CLI client commands call. Default: http://<host>:<port>.")
    api_key: str | None = Field(None, description="Bearer key the CLI client commands send.")

    # --- logging -------------------------------------------------------------------------
    log_level: str = Field("INFO", description="DEBUG | INFO | WARNING | ERROR.")
    log_format: str = Field("text", pattern="^(text|json)$", description="text, or json for log pipelines.")

    # --- ops ---
    # Remote adapter store (SEAL_ADAPTER_STORE_URL=s3://bucket/prefix): credentials come from the
    # usual AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an IAM role).
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for an s3:// adapter store (MinIO, Ceph, R2). Default: AWS.")
    adapter_cache_dir: Path | None = Field(None, description="Local copies of s3:// adapter versions, loaded by vLLM from here. Default: <data_dir>/adapter-cache.")
    worker_metrics_port: int = Field(9100, ge=0, le=65535, description="seal worker: Prometheus /metrics port; 0 disables.")
    # Metrics name adapters and show traffic per model: not for everyone who can reach the port.
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token that /metrics (API) and the worker metrics port require. Unset: open, as for probes.")
    metrics_max_adapters: int = Field(
        20, ge=0, description="Adapters with their own metrics label (the busiest ones); the rest are counted as \"other\".")
    worker_generator: str = Field(
        "vllm", pattern="^(vllm|hf)$",
        description="seal worker's generator: vllm (a warm engine), or hf (transformers on the trainer's weights: no second engine, for small CPU hosts and tests).",
    )

    @field_validator("data_dir", "recipe_dir")
    @classmethod
    def absolute_data_dir(cls, v: Path | None) -> Path | None:
        # vLLM treats a relative LoRA path that does not exist as a Hub id; keep every path absolute.
        return v.expanduser().resolve() if v is not None else None

    @field_validator("policies", mode="before")
    @classmethod
    def split_policies(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("api_keys", mode="before")
    @classmethod
    def parse_api_keys(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("tenant_quotas", mode="before")
    @classmethod
    def parse_tenant_quotas(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("consolidate_every")
    @classmethod
    def documents_or_cron(cls, v: str | None) -> str | None:
        if v is None or v.strip().isdigit():
            return v and v.strip()
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(f"consolidate_every={v!r} is neither a document count nor a cron expression")
        return v

    @model_validator(mode="after")
    def router_lines_in_order(self) -> Settings:
        if self.router_floor is not None and self.router_threshold is not None and self.router_floor > self.router_threshold:
            raise ValueError(f"router_floor={self.router_floor} is above router_threshold={self.router_threshold}")
        return self

    def router_config(self) -> RouterConfig:
        """The knowledge-base router's calibrated weighing with this deployment's lines."""
        from app.knowledge.router import router_config

        return router_config(self.router_threshold, self.router_floor)

    def quota_for(self, tenant: str | None) -> tuple[int, int]:
        """(documents per day, concurrent jobs) for `tenant`; 0 means unlimited."""
        override = self.tenant_quotas.get(tenant or "", TenantQuota())
        docs = override.documents_per_day if override.documents_per_day is not None else self.quota_documents_per_day
        jobs = override.concurrent_jobs if override.concurrent_jobs is not None else self.quota_concurrent_jobs
        return docs, jobs

    @property
    def consolidate_after_documents(self) -> int | None:
        v = self.consolidate_every
        return int(v) if v and v.isdigit() else None

    @field_validator("database_url")
    @classmethod
    def normalise_postgres_driver(cls, v: str | None) -> str | None:
        if v and v.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + v.split("://", 1)[1]
        return v

    @field_validator("max_lora_rank")
    @classmethod
    def supported_rank(cls, v: int | None) -> int | None:
        if v is not None and v not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank={v} is not one vLLM supports (8, 16, 32, 64, 128, 256, ...)")
        return v

    @computed_field
    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def client_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return (self.url or f"http://{host}:{self.port}").rstrip("/")

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def model_path(self) -> str:
        """Absolute model directory (or Hub id when SEAL_MODEL names one)."""
        if self.model is None:
            return str(self.model_dir / DEFAULT_MODEL_NAME)
        local = Path(self.model).expanduser()
        return str(local.resolve()) if local.exists() else self.model

    @property
    def base_model_id(self) -> str:
        return self.served_model_name or Path(self.model_path).name

    def resolved_recipe_dir(self) -> Path:
        return self.recipe_dir or self.data_dir / "recipes"

    def recipe(self) -> Recipe:
        """The configured model's inner-loop recipe (workers/seal/recipes.py), read again when its file changes."""
        from workers.seal.recipes import load_recipe_cached

        return load_recipe_cached(self.model_path, self.resolved_recipe_dir())

    def resolved_max_lora_rank(self) -> int:
        """SEAL_MAX_LORA_RANK when set, else the smallest rank vLLM supports that covers every adapter this
        deployment trains: the recipe's, its shard section's and the ReST-EM policy's. vLLM pads every
        adapter to this rank and computes at it, so a larger one costs every request and buys nothing."""
        if self.max_lora_rank is not None:
            return self.max_lora_rank
        from workers.seal.restem import PolicyTrainConfig

        recipe = self.recipe()
        trained = max(recipe.rank, recipe.for_shards().rank, PolicyTrainConfig().sft.rank)
        return min(r for r in VLLM_LORA_RANKS if r >= trained)

    def anchor_count(self, recipe: Recipe | None = None) -> int:
        """Anchor sequences per training run: SEAL_ANCHOR_SEQUENCES when set (an operator override), else the recipe's."""
        if self.anchor_sequences is not None:
            return self.anchor_sequences
        return (recipe or self.recipe()).anchors

    @property
    def adapter_root(self) -> Path:
        url = self.adapter_store_url
        if url is None:
            return self.data_dir / "adapters"
        if url.startswith("file://"):
            return Path(url.removeprefix("file://")).resolve()
        raise ValueError(f"unsupported adapter store URL {url!r}: use file://")

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'seal.db'}"

    def resolved_device(self) -> Device:
        if self.device is not Device.auto:
            return self.device
        import torch  # local: keeps `seal --help` fast

        return Device.cuda if torch.cuda.is_available() else Device.cpu

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        # Measured on this CPU (AVX, no bf16): float32 96 tok/s vs bfloat16 17 tok/s. GPUs want bf16.
        return "bfloat16" if self.resolved_device() is Device.cuda else "float32"

    def resolved_train_bf16_autocast(self) -> bool:
        if self.train_bf16_autocast is not None:
            return self.train_bf16_autocast
        if self.resolved_device() is not Device.cpu or self.resolved_dtype() != "float32":
            return False
        import torch

        # Native bf16 dot products only: AVX-512 without them emulates bf16 and gains nothing.
        native = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in native if check is not None)

    def check_bind_address(self, host: str | None = None) -> None:
        """Refuse to expose an unauthenticated service beyond loopback."""
        host = host or self.host
        if self.auth_enabled:
            return
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"refusing to bind {host}: no API keys are configured, so the service would be open "
                "to the network. Set SEAL_API_KEYS (see `seal keys create`) or bind 127.0.0.1."
            )


@functools.lru_cache
def get_settings() -> Settings:
    return Settings()
