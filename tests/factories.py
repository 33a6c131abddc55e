"""Test factories: tiny real adapters trained with peft, and published through the product's path."""

from __future__ import annotations

import functools
from pathlib import Path

from tests.conftest import MODEL_DIR


@functools.lru_cache(maxsize=1)
def _base():  # noqa: ANN202
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    # The test process shares 2 cores with the server's engine; 2 OpenMP threads then spin on
    # barriers and ran ~6x slower than 1 in measurements.
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    return tokenizer, model


def train_fact_adapter(out_dir: Path, question: str, answer: str, *, steps: int = 30, rank: int = 16) -> Path:
    """Train a LoRA that answers `question` with `answer` (a few real peft steps, ~10 s on 2 cores)."""
    import torch
    from peft import LoraConfig, get_peft_model

    tokenizer, base = _base()
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    model.unload()  # give the shared base back without LoRA layers
    return out_dir


def publish(stack, adapter: str, src: Path, tenant: str | None = "acme") -> tuple[int, str]:  # noqa: ANN001
    """Publish `tenant`'s adapter `adapter` through the same function the learn worker uses
    (registry + store + event)."""
    import redis

    from app.publishing import publish_version
    from app.registry.db import migrate
    from app.store import AdapterStore
    from app.tenancy import adapter_key

    migrate(stack.db_url)
    return publish_version(
        db_url=stack.db_url, store=AdapterStore(stack.data_dir / "adapters"),
        redis=redis.Redis.from_url(stack.redis_url), adapter=adapter_key(tenant, adapter), tenant=tenant, src_dir=src,
        metadata={"source": "test"},
    )


def pdf_with_text(pages: list[str]) -> bytes:
    """A small valid PDF, one line of Helvetica text per page: what a text-layer PDF upload holds."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {len(objects)} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
