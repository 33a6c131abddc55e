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
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


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

    # --- engine --------------------------------------------------------------------------
    device: Device = Field(Device.auto, description="auto | cpu | cuda.")
    dtype: str = Field("auto", description="auto = float32 on CPU (no native bf16 here), bfloat16 on GPU.")
    max_model_len: int = Field(2048, description="Context window (prompt + completion) in tokens.")
    max_num_seqs: int = Field(64, description="Engine batch size; requests are batched, never serialised.")
    max_loras: int = Field(4, description="Adapters that can share one batch.")
    max_cpu_loras: int = Field(16, description="Adapters kept loaded (current versions + pinned ones).")
    max_lora_rank: int = Field(64, description="Must cover every adapter trained; one of 8/16/32/64/128/256.")
    kv_cache_gib: int = Field(1, ge=1, description="CPU only: KV cache GiB (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(0.85, description="API process: vLLM's share of the GPU.")
    swap_drain_timeout_s: float = Field(300.0, description="How long a swap waits for requests on the old version.")

    # --- learning ------------------------------------------------------------------------
    learn_job_timeout_s: int = Field(3600, description="Hard limit for one learn attempt.")
    learn_retries: int = Field(3, description="Attempts after the first when a learn job fails or its worker dies.")
    worker_gpu_memory_utilization: float = Field(0.45, description="GPU worker: vLLM's share; training uses the rest.")
    train_threads: int | None = Field(None, description="torch threads for training; default: cores - 1 on CPU.")

    # --- CLI client (seal ask/learn/jobs/adapters talk to a running server) --------------
    url: str | None = Field(None, description="Server the CLI client commands call. Default: http://<host>:<port>.")
    api_key: str | None = Field(None, description="Bearer key the CLI client commands send.")

    # --- logging -------------------------------------------------------------------------
    log_level: str = Field("INFO", description="DEBUG | INFO | WARNING | ERROR.")
    log_format: str = Field("text", pattern="^(text|json)$", description="text, or json for log pipelines.")

    @field_validator("data_dir")
    @classmethod
    def absolute_data_dir(cls, v: Path) -> Path:
        # vLLM treats a relative LoRA path that does not exist as a Hub id; keep every path absolute.
        return v.expanduser().resolve()

    @field_validator("api_keys", mode="before")
    @classmethod
    def parse_api_keys(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("database_url")
    @classmethod
    def normalise_postgres_driver(cls, v: str | None) -> str | None:
        if v and v.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + v.split("://", 1)[1]
        return v

    @field_validator("max_lora_rank")
    @classmethod
    def supported_rank(cls, v: int) -> int:
        if v not in (8, 16, 32, 64, 128, 256, 320, 512):
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
