"""A request without a LoRA takes no LoRA on vLLM's CPU backend (app/vllm_plugin.py).

The op test shows vLLM's own PyTorch op giving a no-LoRA row (slot index -1) the last slot's adapter,
and the wrapped op leaving it alone. The engine test is the property users rely on: with more
adapters than `max_loras` slots in use, a base-model request decoded beside LoRA requests answers
exactly as it does alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

vllm_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from app.vllm_plugin import lora_rows_only  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "SmolLM2-135M-Instruct"


def _stack(slots: int, rank: int, width: int, *, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(slots, 1, rank, width)  # vLLM's stacked LoRA A weights: [slots, 1, rank, in]


def test_the_cpu_op_gives_a_row_without_lora_the_last_slots_adapter_and_the_wrapped_op_does_not():
    slots, rank, width = 3, 4, 8
    a = _stack(slots, rank, width, seed=0)
    x = torch.randn(3, width)
    indices = torch.tensor([0, -1, 2])
    stock = torch.zeros(3, rank)
    vllm_ops.bgmv_shrink(x, a, stock, indices, 1.0)
    assert torch.allclose(stock[1], x[1] @ a[slots - 1, 0].T)  # the bug: -1 picked the last slot

    fixed = torch.full((3, rank), 7.0)  # a stale buffer: the no-LoRA row must come back zero
    lora_rows_only(vllm_ops.bgmv_shrink, zero_others=True)(x, a, fixed, indices, 1.0)
    assert torch.equal(fixed[1], torch.zeros(rank))
    assert torch.allclose(fixed[[0, 2]], stock[[0, 2]])

    b = torch.randn(slots, 1, width, rank)  # LoRA B: [slots, 1, out, rank]
    layer = torch.randn(3, width)  # the base layer's output, which a no-LoRA row keeps as it is
    out = layer.clone()
    lora_rows_only(vllm_ops.bgmv_expand, zero_others=False)(fixed, b, out, indices, True)
    assert torch.equal(out[1], layer[1])
    assert torch.allclose(out[0], layer[0] + b[0, 0] @ fixed[0])
    out_slice = layer.clone()
    lora_rows_only(vllm_ops.bgmv_expand_slice, zero_others=False)(fixed, b[..., :4, :], out_slice, indices, 2, 4, True)
    assert torch.equal(out_slice[1], layer[1]) and torch.equal(out_slice[0, :2], layer[0, :2])
    assert torch.allclose(out_slice[2, 2:6], layer[2, 2:6] + b[2, 0, :4] @ fixed[2])


def _random_lora(path: Path, seed: int) -> str:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    peft.save_pretrained(str(path))
    return str(path)


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_a_base_request_beside_lora_requests_answers_as_it_does_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    adapters = [LoRARequest(f"l{i}", i + 1, _random_lora(tmp_path / f"l{i}", i)) for i in range(5)]
    llm = LLM(model=str(MODEL), dtype="float32", enable_lora=True, max_loras=4, max_lora_rank=8, max_cpu_loras=8,
              max_model_len=512, max_num_seqs=8)
    try:
        engine, tok = llm.llm_engine, llm.get_tokenizer()

        def chat(question: str) -> str:
            return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)

        params = SamplingParams(temperature=0.0, max_tokens=16)
        base = [chat(q) for q in ("What is the capital of France?", "Name a large ocean.")]

        def run(requests: list[tuple[str, LoRARequest | None]], in_flight: int) -> dict[str, str]:
            """Requests in order, at most `in_flight` at once, as concurrent users send them."""
            queue, done, live, n = list(requests), {}, 0, 0
            while queue or engine.has_unfinished_requests():
                while queue and live < in_flight:
                    prompt, lora = queue.pop(0)
                    engine.add_request(f"{n}|{prompt}", prompt, params, lora_request=lora)
                    n, live = n + 1, live + 1
                for out in engine.step():
                    if out.finished:
                        done[out.request_id] = out.outputs[0].text
                        live -= 1
            return done

        alone = {rid.split("|", 1)[1]: text for rid, text in run([(p, None) for p in base], 1).items()}
        # Five adapters through four slots, then the base questions while the last LoRA answers decode.
        mixed = [(chat(f"Say something about item {j}."), adapters[j % 5]) for j in range(10)]
        answers = run(mixed + [(p, None) for p in base], 6)
        beside = {rid.split("|", 1)[1]: text for rid, text in answers.items() if rid.split("|", 1)[1] in alone}
        assert beside == alone
    finally:
        llm.llm_engine.engine_core.shutdown()
