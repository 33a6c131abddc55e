"""The vLLM engine wrapper and the adapter table it owns.

This is the only module in the API process that talks to vLLM. It knows nothing of HTTP:
it takes token ids, SamplingParams and a model name, and streams RequestOutputs.

Adapter rules (from the vLLM 0.32/0.33 source):
- each published version has its own immutable directory, a unique `lora_name`
  (`<adapter>@v<N>`) and a unique `lora_int_id` >= 1; LoRARequest equality uses the name;
- a swap is add_lora(new) → flip the alias → wait until no request uses the old version →
  remove_lora(old). add_lora stalls the engine loop briefly, so it happens before routing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import gc
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app import metrics
from app.errors import EngineUnavailable, InvalidRequest

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.outputs import RequestOutput

    from app.config import Settings

logger = logging.getLogger(__name__)

VERSION_SEP = "@v"


def version_name(adapter: str, version: int) -> str:
    return f"{adapter}{VERSION_SEP}{version}"


def parse_model_name(model: str) -> tuple[str, int | None]:
    """Split `name@vN` into (name, N); a bare name gives (name, None)."""
    name, sep, ver = model.rpartition(VERSION_SEP)
    if sep and name and ver.isdigit():
        return name, int(ver)
    return model, None


class AdapterState(str, enum.Enum):
    loading = "loading"
    ready = "ready"
    draining = "draining"
    removed = "removed"


@dataclass
class LoadedVersion:
    """One adapter version known to the engine."""

    adapter: str
    version: int
    path: str
    tenant: str | None
    request: LoRARequest
    shared: bool = False
    state: AdapterState = AdapterState.loading
    inflight: int = 0
    loaded_at: float = field(default_factory=time.time)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return version_name(self.adapter, self.version)


@dataclass(frozen=True)
class Route:
    """Where one request goes: the base model (version is None) or one adapter version."""

    model: str
    version: LoadedVersion | None = None
    label: str = ""  # a knowledge base's route (`kb/s3@v2`, `pending:17`, `base`) for the seal-route header

    @property
    def lora_request(self) -> LoRARequest | None:
        return self.version.request if self.version else None


class Engine:
    """An AsyncLLM plus the alias → current-version table for LoRA adapters."""

    def __init__(self, client: Any, *, base_model_id: str, max_model_len: int, drain_timeout_s: float,
                 localize: Callable[[str], str] | None = None):
        self.client = client
        # Registry paths may be s3:// URLs; vLLM loads local directories only (see app/store.py).
        self.localize = localize
        self.base_model_id = base_model_id
        self.max_model_len = max_model_len
        self.drain_timeout_s = drain_timeout_s
        self.tokenizer = client.get_tokenizer()
        self._tokenizer_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tokenizer")
        self.created = int(time.time())
        self._versions: dict[str, LoadedVersion] = {}  # "name@vN" → version
        self._current: dict[str, str] = {}  # adapter name → "name@vN"
        self._ids = itertools.count(1)  # lora_int_id must be unique and >= 1
        # A version keeps its id for the life of the process, even across unload/reload: re-adding
        # a lora_name under a new id left requests for it hanging in vLLM 0.32 (seen in the swap test).
        self._id_of: dict[str, int] = {}
        self._lock = asyncio.Lock()  # serialises add/flip/remove so swaps never interleave
        self.ready = True

    # --- construction ----------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def build(cls, settings: Settings) -> AsyncIterator[Engine]:
        """Start one AsyncLLM for this process; shut it down on exit."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        device = settings.resolved_device()
        if device.value == "cpu":
            # vLLM's CPU backend sizes its KV cache from this variable, not from
            # gpu_memory_utilization, and refuses to start when NUMA node 0 looks too small.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
        args = AsyncEngineArgs(
            model=settings.model_path,
            served_model_name=settings.base_model_id,
            dtype=settings.resolved_dtype(),
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.max_num_seqs,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enable_lora=True,
            max_loras=settings.max_loras,
            max_lora_rank=settings.resolved_max_lora_rank(),
            max_cpu_loras=settings.max_cpu_loras,
            enable_log_requests=False,
        )
        from app.store import open_store

        store = open_store(settings)
        client = AsyncLLM.from_engine_args(args)
        engine = cls(
            client,
            base_model_id=settings.base_model_id,
            max_model_len=settings.max_model_len,
            drain_timeout_s=settings.swap_drain_timeout_s,
            localize=store.localize,
        )
        try:
            yield engine
        finally:
            client.shutdown()
            # AsyncLLM.__del__ shuts down again. Left to the interpreter's exit, it ran after vLLM's
            # module globals were gone and logged a TypeError traceback on every stop: free it now.
            engine.client = client = None
            gc.collect()

    # --- prompts ---------------------------------------------------------------------------

    async def tokenize(self, text: str) -> list[int]:
        """encode_text off the event loop: a multi-megabyte prompt takes seconds to tokenize, and
        every other request on this process would wait. One thread, because a fast tokenizer is
        not safe to share between threads."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread, self.encode_text, text)

    async def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread, self.encode_chat, messages)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text`, counted on the tokenizer thread; for code running off the event loop
        (a sync route), which may block while it waits."""
        return len(self._tokenizer_thread.submit(self.encode_text, text, add_special_tokens=False).result())

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.encode_text(text, add_special_tokens=False)

    def encode_text(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def budget_max_tokens(self, prompt_len: int, requested: int | None) -> int:
        """Check prompt + completion against the context window; default to what is left."""
        room = self.max_model_len - prompt_len
        if room <= 0 or (requested is not None and requested > room):
            raise InvalidRequest(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {prompt_len + (requested or 0)} tokens ({prompt_len} in the prompt, "
                f"{requested or 0} for the completion). Please reduce the prompt or max_tokens.",
                param="max_tokens" if room > 0 else "messages",
                code="context_length_exceeded",
            )
        return requested if requested is not None else room

    # --- routing ---------------------------------------------------------------------------

    def lookup(self, adapter: str, version: int | None = None) -> LoadedVersion | None:
        """The loaded version `adapter@v<version>`, or the adapter's current one; None when not loaded.

        Who may use it is the catalog's question (app/catalog.py), not the engine's.
        """
        key = self._current.get(adapter) if version is None else version_name(adapter, version)
        loaded = self._versions.get(key) if key else None
        return None if loaded is None or loaded.state is AdapterState.removed else loaded

    def is_loaded(self, adapter: str, version: int) -> bool:
        loaded = self._versions.get(version_name(adapter, version))
        return loaded is not None and loaded.state is not AdapterState.removed

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, route: Route, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Stream outputs for one request; the version stays pinned until the stream ends.

        AsyncLLM.generate aborts the request on cancellation, so a client that disconnects
        frees its slot in the batch.
        """
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        version = route.version
        if version is not None:
            version.inflight += 1
            version.idle.clear()
        try:
            async for out in self.client.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), params, request_id, lora_request=route.lora_request
            ):
                yield out
        except EngineDeadError as exc:
            self.ready = False
            raise EngineUnavailable("The inference engine has stopped; retry shortly.") from exc
        finally:
            if version is not None:
                version.inflight -= 1
                if version.inflight == 0:
                    version.idle.set()

    async def check_health(self) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            await self.client.check_health()
        except EngineDeadError as exc:
            self.ready = False
            raise EngineUnavailable("The inference engine has stopped.") from exc

    # --- the adapter table -----------------------------------------------------------------

    def list_models(self) -> list[LoadedVersion]:
        """Current versions of every servable adapter, in name order."""
        return [self._versions[self._current[n]] for n in sorted(self._current)]

    def current_version(self, adapter: str) -> int | None:
        key = self._current.get(adapter)
        return self._versions[key].version if key else None

    async def load(self, adapter: str, version: int, path: str, *, tenant: str | None,
                   shared: bool = False) -> LoadedVersion:
        """Load one version without routing the bare name to it (used for pinned `name@vN`). Idempotent."""
        path = await self._local(path)
        async with self._lock:
            return await self._load_locked(adapter, version, path, tenant, shared)

    async def _local(self, path: str) -> str:
        """A directory vLLM can read: remote (s3://) versions are downloaded once, off the event loop."""
        if self.localize is None or "://" not in path:
            return path
        return await asyncio.to_thread(self.localize, path)

    async def _load_locked(self, adapter: str, version: int, path: str, tenant: str | None,
                           shared: bool) -> LoadedVersion:
        from vllm.lora.request import LoRARequest

        key = version_name(adapter, version)
        existing = self._versions.get(key)
        if existing is not None and existing.state is not AdapterState.removed:
            existing.tenant, existing.shared = tenant, shared  # ownership follows the registry
            return existing
        if not os.path.isabs(path):
            raise ValueError(f"adapter paths must be absolute (vLLM reads a relative one as a Hub id): {path}")
        lora_id = self._id_of.setdefault(key, next(self._ids))
        request = LoRARequest(lora_name=key, lora_int_id=lora_id, lora_path=path)
        loaded = LoadedVersion(adapter, version, path, tenant, request, shared=shared)
        loaded.idle.set()
        await self.client.add_lora(request)
        loaded.state = AdapterState.ready
        self._versions[key] = loaded
        return loaded

    async def swap(self, adapter: str, version: int, path: str, *, tenant: str | None = None,
                   shared: bool = False) -> float:
        """Route `adapter` to `version`: add_lora → flip → drain old → remove_lora old.

        Returns the seconds until the new version was routable. Calling it for the version
        already current is a no-op, so replayed events are harmless.
        """
        started = time.perf_counter()
        path = await self._local(path)
        async with self._lock:
            new = await self._load_locked(adapter, version, path, tenant, shared)
            old_key = self._current.get(adapter)
            if old_key == new.name:
                return 0.0
            self._current[adapter] = new.name
        routable_s = time.perf_counter() - started
        metrics.ADAPTER_SWAPS.labels(adapter=metrics.model_label(adapter, count=False)).inc()
        metrics.ADAPTER_SWAP_SECONDS.observe(routable_s)
        metrics.set_adapter_version(adapter, version)
        logger.info("adapter %s now serves v%d (was %s) in %.3fs", adapter, version, old_key, routable_s)
        if old_key:
            asyncio.get_running_loop().create_task(self._retire(old_key))
        return routable_s

    async def unroute(self, adapter: str) -> None:
        """Stop serving `adapter` (all versions); in-flight requests finish first."""
        async with self._lock:
            was = self._current.pop(adapter, None)
            keys = [k for k, v in self._versions.items() if v.adapter == adapter]
        if was is not None:
            metrics.set_adapter_version(adapter, 0)
        await asyncio.gather(*(self._retire(k) for k in keys))

    async def _retire(self, key: str) -> None:
        """Drain one version and unload it, unless it became current again meanwhile."""
        loaded = self._versions.get(key)
        if loaded is None or loaded.state is AdapterState.removed:
            return
        loaded.state = AdapterState.draining
        try:
            await asyncio.wait_for(loaded.idle.wait(), timeout=self.drain_timeout_s)
        except TimeoutError:
            logger.warning("%s still has %d requests after %.0fs; unloading anyway", key, loaded.inflight, self.drain_timeout_s)
        async with self._lock:
            if self._versions.get(key) is not loaded:
                return  # another retire of the same version (a swap, then an unroute) got here first
            if self._current.get(loaded.adapter) == key:
                loaded.state = AdapterState.ready  # rolled back to it while draining
                return
            await self.client.remove_lora(loaded.request.lora_int_id)
            loaded.state = AdapterState.removed
            del self._versions[key]
        logger.info("unloaded %s", key)
