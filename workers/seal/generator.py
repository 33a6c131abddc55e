"""Text generation behind a small Protocol, with a synchronous vLLM implementation."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

Message = dict[str, str]
PromptLike = str | list[Message]
# An adapter is named by (lora_name, absolute directory); the name must be unique per version.
Adapter = tuple[str, str]


@runtime_checkable
class Generator(Protocol):
    """Batched generation: one list of `n` completions per prompt (chat message list or raw text)."""

    def generate(
        self,
        prompts: Sequence[PromptLike],
        *,
        temperature: float = 0.0,
        max_tokens: int = 128,
        n: int = 1,
        seed: int | None = None,
        adapter: Adapter | None = None,
    ) -> list[list[str]]:
        """Return `n` completions for each prompt, in order."""
        ...


class VLLMGenerator:
    """`Generator` over the synchronous `vllm.LLM`, with LoRA enabled and stable per-path LoRA ids."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 2048,
        max_lora_rank: int = 64,
        max_loras: int = 2,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        llm: Any = None,
        **engine_kwargs: Any,
    ) -> None:
        """Build the engine (or wrap an existing `vllm.LLM` passed as `llm`)."""
        if llm is None:
            from vllm import LLM  # heavy import kept local so `import workers.seal` stays cheap

            kwargs: dict[str, Any] = dict(
                model=model,
                dtype=dtype,
                max_model_len=max_model_len,
                enable_lora=True,
                max_lora_rank=max_lora_rank,
                max_loras=max_loras,
                enforce_eager=enforce_eager,
                seed=seed,
                **engine_kwargs,
            )
            if gpu_memory_utilization is not None:
                kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            llm = LLM(**kwargs)
        self.llm = llm
        self._lock = threading.Lock()
        self._lora_ids: dict[str, int] = {}  # absolute path -> lora_int_id (>= 1, never reused)

    def _lora_request(self, adapter: Adapter | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        name, path = adapter
        if not os.path.isabs(path):
            # vLLM treats a relative path that does not exist as a Hub repo id.
            raise ValueError(f"adapter path must be absolute, got {path!r}")
        with self._lock:
            lora_id = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
        # Unique name per path: LoRARequest equality and the prefix cache key on the name.
        return LoRARequest(lora_name=f"{name}#{lora_id}", lora_int_id=lora_id, lora_path=path)

    def generate(
        self,
        prompts: Sequence[PromptLike],
        *,
        temperature: float = 0.0,
        max_tokens: int = 128,
        n: int = 1,
        seed: int | None = None,
        adapter: Adapter | None = None,
    ) -> list[list[str]]:
        """Return `n` completions for each prompt, in order (chat prompts use the model's template)."""
        if not prompts:
            return []
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
        lora = self._lora_request(adapter)
        if all(isinstance(p, str) for p in prompts):
            outputs = self.llm.generate(list(prompts), params, use_tqdm=False, lora_request=lora)
        elif all(isinstance(p, list) for p in prompts):
            outputs = self.llm.chat(list(prompts), params, use_tqdm=False, lora_request=lora)
        else:
            raise TypeError("prompts must be all strings or all message lists")
        return [[c.text for c in out.outputs] for out in outputs]

    def forget_adapter(self, path: str) -> None:
        """Drop an adapter from the engine's LoRA cache (e.g. a rejected candidate)."""
        with self._lock:
            lora_id = self._lora_ids.get(path)
        if lora_id is not None:
            try:
                self.llm.llm_engine.remove_lora(lora_id)
            except Exception:  # noqa: BLE001 - not loaded yet is fine; the id stays reserved
                logger.debug("remove_lora(%s) failed for %s", lora_id, path, exc_info=True)

    def close(self) -> None:
        """Stop the engine's processes now. vLLM's own exit hook did not always run before a worker's
        interpreter exited, leaving an EngineCore (~3 GB on CPU) behind."""
        self.llm.llm_engine.engine_core.shutdown()
