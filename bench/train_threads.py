"""Training beside a serving API: one thread, two, or the API engine's core lent while it idles.

    .venv/bin/python bench/train_threads.py                  # 2 epochs a run, about 10 minutes
    .venv/bin/python bench/train_threads.py --epochs 6       # the shard recipe's own length

On a 2-core host `seal up` puts the API's vLLM engine on core 0 and the worker (its engine, then
its training) on core 1, so a learn trains on one thread while core 0 mostly idles. This bench starts
a real `seal serve` placed as `seal up` places it (app.cpus.place_engines), and in this process trains
one invented document's shard the way a learn does (the shard recipe's distillation rows and LoRA
settings, `LoraTrainer.train_rows`) under each condition:

- `1 thread`: the worker's own share, as before;
- `2 threads`: always both cores;
- `lent`: one thread, and the API engine's core while the host is quiet (app.cpus.LentCores, what
  `seal up` now gives its worker).

Each condition runs under four loads on the API, driven over HTTP while the training runs: `idle`
(no request), `rare` (a 48-token chat every `--rare-gap` seconds, longer than LentCores' 10 quiet
seconds: every chat arrives while training holds the lent core, the worst case for its latency),
`sparse` (one every `--gap` seconds) and `busy` (one chat after another). The table gives the training seconds and their ratio to one thread, the chats'
latency p50 / p95 during training and the p50's ratio to the same load with no training, the share
of training steps run on lent threads, and whether the trained weights are bit-identical to one
thread's. Conditions interleave within each load, so a slow spell falls on all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median, percentile  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import generate_documents  # noqa: E402
from learn import BASE, MODEL_DIR, service_env  # noqa: E402

from app.process import free_port, spawn, stop, wait_ready  # noqa: E402
from app.redis_server import EmbeddedValkey  # noqa: E402

CONDITIONS = ("1 thread", "2 threads", "lent")
LOADS = ("idle", "rare", "sparse", "busy")
CHAT = [{"role": "user", "content": "What is the tallest mountain in Europe?"}]
ANSWER_TOKENS = 48
# Two fixed threads beside a busy engine: their OpenMP barriers wait on a core the engine holds. A run
# of what took 61 s on one thread had not ended after 10 minutes; --all runs it anyway.
SKIPPED = {("busy", "2 threads")}


class CountingLender:
    """LentCores, counting how many steps it lent threads for since `reset`."""

    def __init__(self, lender: Any) -> None:
        self.lender, self.calls, self.lent = lender, 0, 0

    def reset(self) -> CountingLender:
        self.calls = self.lent = 0
        return self

    def __call__(self) -> int:
        n = self.lender()
        self.calls += 1
        self.lent += n > self.lender.own
        return n


class Load:
    """Chats against the API from a thread: none, one every few seconds, or back to back."""

    def __init__(self, url: str, kind: str, args: argparse.Namespace) -> None:
        self.url, self.kind = url, kind
        self.gap = {"rare": args.rare_gap, "sparse": args.gap}.get(kind, 0.0)
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        if self.kind != "idle":
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(120)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                http.post("/v1/chat/completions", json={"model": BASE, "messages": CHAT, "max_tokens": ANSWER_TOKENS,
                                                        "temperature": 0}).raise_for_status()
                self.latencies.append((started, time.perf_counter() - started))
                if self.gap:
                    self._stop.wait(max(0.0, self.gap - (time.perf_counter() - started)))

    def during(self, start: float, end: float) -> list[float]:
        return [s for t, s in self.latencies if start <= t <= end]


def main() -> int:
    args = parse_args()
    import torch

    from app.cpus import LentCores, cpu_seconds, place_engines

    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    valkey = EmbeddedValkey(work / "data")
    (work / "data").mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = service_env(work / "data", valkey.start(), port)
    cores = os.sched_getaffinity(0)
    api_env, _ = place_engines(env, cores, 1)
    proc = spawn([sys.executable, "-m", "app.cli", "serve"], api_env, work / "serve.log", cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=600)
        print(f"API ready at {url}, its engine on cores {api_env.get('VLLM_CPU_OMP_THREADS_BIND')}; "
              f"this process trains (logs in {work})", flush=True)
        trainer, rows, cfg = distillation_rows(args)
        baseline = {load: no_training(url, load, args) for load in args.loads if load != "idle"}
        # Built once, as a worker builds it at start: each training's first look is a stale window. The API
        # is this process's child here, not a worker's sibling: its CPU is the others'.
        lent = CountingLender(LentCores(1, len(cores) - 1, sample=lambda: cpu_seconds(children=False)))
        results: list[dict[str, Any]] = []
        for load in args.loads:
            for condition in args.conditions:
                if (load, condition) in SKIPPED and not args.all:
                    continue
                own = 2 if condition == "2 threads" else 1
                lender = lent.reset() if condition == "lent" else None
                trainer.threads = lender
                trainer.num_threads = own
                torch.set_num_threads(own)
                out = work / f"{load}-{condition.replace(' ', '-')}"
                with Load(url, load, args) as driver:
                    time.sleep(1.0 if load != "idle" else 0.0)
                    started = time.perf_counter()
                    trainer.train_rows(rows, cfg, str(out))
                    ended = time.perf_counter()
                during = driver.during(started, ended)
                results.append({"load": load, "condition": condition, "seconds": ended - started,
                                "latencies": during, "lent_steps": (lender.lent, lender.calls) if lender else None,
                                "weights": weights_hash(out)})
                print(f"{load:6} {condition:9} trained in {ended - started:5.1f}s; {len(during)} chats, "
                      f"p50 {median(during) if during else float('nan'):.2f}s", flush=True)
        print()
        print(render(results, baseline, cores))
    finally:
        stop(proc)
        valkey.stop()
    return 0


def distillation_rows(args: argparse.Namespace) -> tuple[Any, list, Any]:
    """One invented document's distillation set and the shard recipe's training settings."""
    from app.api.learn_schemas import LearnOptions
    from app.config import Settings
    from workers.seal.distill import DistillConfig, build_distillation
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer
    from workers.seal.types import Document

    recipe = Settings(model=str(MODEL_DIR)).recipe().for_shards()
    selfedit_cfg, train_cfg = LearnOptions().to_inner_configs(recipe)
    train_cfg = replace(train_cfg, epochs=args.epochs)
    generated = generate_documents(1, seed=args.seed)[0]
    doc = Document(title=generated.title, text=generated.text)
    trainer = LoraTrainer(str(MODEL_DIR), num_threads=1)
    started = time.perf_counter()
    distillation = build_distillation(HFGenerator(trainer), trainer, doc,
                                      DistillConfig.of(selfedit_cfg))
    rows = distillation.rows + trainer.encode(distillation.short_answers, train_cfg.max_seq_len)
    print(f"{generated.title}: {len(rows)} rows, {train_cfg.epochs} epochs at lr {train_cfg.lr}, rank {train_cfg.rank} "
          f"(teacher pass {time.perf_counter() - started:.0f}s)", flush=True)
    return trainer, rows, train_cfg


def no_training(url: str, load: str, args: argparse.Namespace) -> list[float]:
    """The same load's chat latencies with nothing training."""
    with Load(url, load, args) as driver:
        time.sleep(max(args.baseline_s, 3 * driver.gap))
    return [s for _, s in driver.latencies]


def weights_hash(out: Path) -> str:
    from safetensors.torch import load_file

    tensors = load_file(str(out / "adapter_model.safetensors"))
    return hashlib.sha256(b"".join(tensors[k].float().numpy().tobytes() for k in sorted(tensors))).hexdigest()[:12]


def render(results: list[dict[str, Any]], baseline: dict[str, list[float]], cores: set[int]) -> str:
    one = {r["load"]: r for r in results if r["condition"] == "1 thread"}
    lines = [f"Host: {os.cpu_count()} CPUs, this process on {sorted(cores)}.", "",
             "| load | training | s | × 1 thread | chats | chat p50 / p95 s | p50 × no training | steps lent | "
             "weights = 1 thread's |",
             "|:---|:---|---:|---:|---:|---:|---:|---:|:---|"]
    for r in results:
        lat, base = r["latencies"], baseline.get(r["load"], [])
        ref = one.get(r["load"])
        ratio = f"{r['seconds'] / ref['seconds']:.2f}" if ref else "–"
        chats = f"{median(lat):.2f} / {percentile(lat, 95):.2f}" if lat else "–"
        slow = f"{median(lat) / median(base):.2f}" if lat and base else "–"
        lent = f"{r['lent_steps'][0]} / {r['lent_steps'][1]}" if r["lent_steps"] else "–"
        same = ("yes" if r["weights"] == ref["weights"] else "no") if ref else "–"
        lines.append(f"| {r['load']} | {r['condition']} | {r['seconds']:.1f} | {ratio} | {len(lat)} | {chats} | "
                     f"{slow} | {lent} | {same} |")
    lines.append("")
    lines.append("No training: " + "; ".join(f"{load} chats p50 {median(v):.2f}s, p95 {percentile(v, 95):.2f}s "
                                             f"({len(v)})" for load, v in baseline.items()))
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=7411, help="docgen seed of the document trained")
    p.add_argument("--epochs", type=int, default=2, help="training epochs a run (the shard recipe trains 6)")
    p.add_argument("--gap", type=float, default=5.0, help="seconds between the sparse load's chats")
    p.add_argument("--rare-gap", type=float, default=15.0, help="seconds between the rare load's chats")
    p.add_argument("--baseline-s", type=float, default=20.0, help="seconds each load runs with no training")
    p.add_argument("--conditions", type=lambda s: s.split(","), default=list(CONDITIONS))
    p.add_argument("--loads", type=lambda s: s.split(","), default=list(LOADS))
    p.add_argument("--all", action="store_true", help="also run two fixed threads beside the busy API")
    return p.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
