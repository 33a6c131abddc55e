"""What an engine's max_lora_rank costs every request: vLLM pads each adapter to it and computes at it.

One vLLM engine per max_lora_rank (`--ranks`, default 64,16: the old fixed default and the bundled
recipe's rank), each in a process of its own, one after another, with the serving engine's settings
(app/engine.py: max_loras 4, 2,048-token context). Each decodes greedy 32-token chat answers
(ignore_eos, so every answer is as long) through the base model and through one rank-16 LoRA (random
weights, as bench/serving.py makes them), one request and a batch of 8, `--repeats` times,
interleaved. The table gives median seconds and each rank's ratio to the first.

    .venv/bin/python bench/lora_rank.py
    .venv/bin/python bench/lora_rank.py --ranks 64,32,16 --repeats 5
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
BATCHES = (1, 8)


def measure(max_rank: int, adapter: Path, repeats: int) -> dict[str, float]:
    """Median seconds per (route, batch) on one engine started at `max_rank`."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=str(MODEL_DIR), dtype="float32", enable_lora=True, max_lora_rank=max_rank, max_loras=4,
              max_model_len=2048, seed=0)
    params = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True)
    chats = [[{"role": "user", "content": f"Tell me about lighthouse number {i}."}] for i in range(max(BATCHES))]
    routes = {"base": None, "lora": LoRARequest("bench", 1, str(adapter))}
    for lora in routes.values():  # warm-up: the first LoRA request loads it
        llm.chat(chats[:1], params, lora_request=lora, use_tqdm=False)
    seconds: dict[str, list[float]] = {}
    for _ in range(repeats):
        for route, lora in routes.items():
            for batch in BATCHES:
                started = time.perf_counter()
                llm.chat(chats[:batch], params, lora_request=lora, use_tqdm=False)
                seconds.setdefault(f"{route} x{batch}", []).append(time.perf_counter() - started)
    return {key: median(values) for key, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="64,16", help="comma list of max_lora_rank values, the first the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one rank, JSON to --out
    parser.add_argument("--adapter", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.out.write_text(json.dumps(measure(args.one, args.adapter, args.repeats)))
        return

    ranks = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = make_adapters(Path(tmp), ["rank16"], rank=16)["rank16"]
        results = {}
        for rank in ranks:  # one engine at a time, each in a fresh process
            out = Path(tmp) / f"rank{rank}.json"  # not stdout: vLLM writes there too
            subprocess.run([sys.executable, __file__, "--one", str(rank), "--adapter", str(adapter), "--out", str(out),
                            "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            results[rank] = json.loads(out.read_text())
    keys = list(results[ranks[0]])
    print(f"\nvLLM {TOKENS}-token greedy answers, median of {args.repeats} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores); seconds (× the max_lora_rank {ranks[0]} engine)\n")
    print("| max_lora_rank | " + " | ".join(keys) + " |")
    print("|---:|" + "---:|" * len(keys))
    for rank in ranks:
        cells = [f"{results[rank][k]:.2f} ({results[rank][k] / results[ranks[0]][k]:.2f}×)" for k in keys]
        print(f"| {rank} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
