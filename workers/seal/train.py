"""LoRA SFT with peft on a base model that stays loaded ("warm") across trainings."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .config import TrainConfig
from .types import Cancelled

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one LoRA training produced."""

    final_loss: float  # mean token loss over the last epoch
    first_loss: float  # loss of the very first batch (equals the base/parent loss on it)
    steps: int
    seconds: float
    num_sequences: int


class LoraTrainer:
    """Holds the tokenizer and base weights once; each `train_lora` call injects a LoRA and removes it after."""

    def __init__(self, model_path: str, *, device: str = "cpu", dtype: str = "float32",
                 num_threads: int | None = None) -> None:
        """Load the base model on `device` in `dtype` (bf16 on GPU, fp32 on CPUs without native bf16)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads is not None:
            # On a 2-core box shared with a vLLM worker, 2 OpenMP threads ran 3 steps in 145 s and
            # 1 thread in 23 s: spinning barriers collapse when a core is taken.
            torch.set_num_threads(num_threads)

        self.model_path = model_path
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype).to(self.device)
        self.model.requires_grad_(False)
        self.model.eval()

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Render a full conversation with the model's chat template, exactly as the server will prompt."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def _encode(self, sequences: Sequence[str], max_len: int) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        encoded = []
        for text in sequences:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            # A trailing EOS teaches the adapter to stop after the fact instead of rambling on.
            if not ids or ids[-1] != eos:
                ids = ids + [eos]
            encoded.append(ids[:max_len])
        return encoded

    def _batch(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        # Pad only to the longest row in this batch: sequences here are 30-200 tokens, not 2048.
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)  # loss on real tokens only
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "labels": labels.to(self.device)}

    def train_lora(
        self,
        sequences: Sequence[str],
        cfg: TrainConfig,
        out_dir: str,
        *,
        init_adapter_dir: str | None = None,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train a LoRA on `sequences` (from `init_adapter_dir` if given) and save it with peft into `out_dir`."""
        from peft import LoraConfig, PeftModel, get_peft_model

        if not sequences:
            raise ValueError("train_lora needs at least one sequence")
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        rows = self._encode(sequences, cfg.max_seq_len)
        if init_adapter_dir is not None:
            peft_model = PeftModel.from_pretrained(self.model, init_adapter_dir, is_trainable=True)
        else:
            lora_cfg = LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=list(cfg.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            peft_model = get_peft_model(self.model, lora_cfg)
        try:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
            steps_per_epoch = (len(rows) + cfg.batch_size - 1) // cfg.batch_size
            total = steps_per_epoch * cfg.epochs
            peft_model.train()
            step, first_loss, epoch_losses = 0, float("nan"), []
            for _epoch in range(cfg.epochs):
                order = list(range(len(rows)))
                rng.shuffle(order)
                epoch_losses = []
                for b in range(0, len(order), cfg.batch_size):
                    if should_stop is not None and should_stop():
                        raise Cancelled("training cancelled")
                    batch = self._batch([rows[i] for i in order[b : b + cfg.batch_size]])
                    loss = peft_model(**batch).loss
                    loss.backward()
                    optim.step()
                    optim.zero_grad(set_to_none=True)
                    value = float(loss.detach())
                    if step == 0:
                        first_loss = value
                    epoch_losses.append(value)
                    step += 1
                    if progress is not None:
                        progress(step / total)
            peft_model.eval()
            os.makedirs(out_dir, exist_ok=True)
            peft_model.save_pretrained(out_dir)
        finally:
            # unload() swaps the LoRA layers back for the original Linear modules without merging,
            # so the next call starts from clean base weights (checked in tests/seal/test_train.py).
            self.model = peft_model.unload()
            if hasattr(self.model, "peft_config"):
                del self.model.peft_config
            self.model.requires_grad_(False)
            self.model.eval()
        seconds = time.perf_counter() - t0
        final = sum(epoch_losses) / max(len(epoch_losses), 1)
        logger.info("trained LoRA r=%d on %d seqs: %d steps, loss %.3f -> %.3f in %.1fs",
                    cfg.rank, len(rows), step, first_loss, final, seconds)
        return TrainResult(final_loss=final, first_loss=first_loss, steps=step, seconds=seconds,
                           num_sequences=len(rows))


def train_lora(
    trainer: LoraTrainer,
    sequences: Sequence[str],
    cfg: TrainConfig,
    out_dir: str,
    *,
    init_adapter_dir: str | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Functional alias for `trainer.train_lora(...)`."""
    return trainer.train_lora(sequences, cfg, out_dir, init_adapter_dir=init_adapter_dir,
                              progress=progress, should_stop=should_stop)
