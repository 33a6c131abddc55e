"""Completion-only LoRA SFT of the self-edit policy: loss on the self-edit tokens, never on the prompt.

The prompt holds the passage; learning to predict it would teach the policy nothing about how to
write a self-edit. Each (prompt -> self-edit) pair is rendered as a chat and trained with
`LoraTrainer`'s rule for chats: loss on the last assistant turn only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import TrainConfig
from .generator import Message
from .train import LoraTrainer, TrainResult


@dataclass(frozen=True)
class SftExample:
    """One (prompt -> completion) pair: the chat prompt the policy sees and the self-edit it should write."""

    messages: list[Message]
    completion: str


def encode_example(trainer: LoraTrainer, ex: SftExample, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one example; prompt positions get label -100."""
    if trainer.assistant_header is None:
        # Without a header to cut at, the loss would cover the prompt: fail loudly rather than mislabel.
        raise ValueError("the chat template has no assistant header to separate prompt from completion")
    (row,) = trainer.encode([trainer.render_chat([*ex.messages, {"role": "assistant", "content": ex.completion}])],
                            max_len)
    return row


def train_completion_lora(
    trainer: LoraTrainer,
    examples: Sequence[SftExample],
    cfg: TrainConfig,
    out_dir: str,
    *,
    progress: Callable[[float], None] | None = None,
) -> TrainResult:
    """Train a fresh LoRA on `examples` with loss on completions only; save it with peft into `out_dir`.

    An empty `examples` saves the untrained LoRA (B = 0, so it generates exactly like the base model):
    a ReST-EM round that kept nothing still leaves a loadable policy.
    """
    rows = [encode_example(trainer, ex, cfg.max_seq_len) for ex in examples]
    return trainer.train_rows(rows, cfg, out_dir, progress=progress)
