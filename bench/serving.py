"""Serving benchmark: our OpenAI-compatible API against vLLM's own server, on one model.

What is measured
----------------
1. **Ours vs vLLM, base model.** Streaming chat completions (temperature 0, fixed
   `max_tokens`) from a closed loop of `concurrency` clients, at each level in `--levels`.
   Per level: throughput = completion tokens (from the stream's `usage` chunk, i.e. tokens
   actually generated) / wall time of the level, and p50/p95 end-to-end request latency
   (plus p50 time to first token). The table reports ours/vLLM per level.
2. **Base vs 4 adapters.** The same load, with each request's `model` chosen round-robin
   from 4 distinct LoRA adapters (all 4 share every batch, `max_loras=4`). Reported as
   adapters/base throughput on each server, measured back to back on the same server.
3. **Adapter swap latency (ours only).** `publish_version` of a new version of an adapter
   (registry row, immutable files, Redis event — the learn worker's path), timed from the
   call's start until (a) GET /v1/models reports the new version and (b) a chat completion
   with the bare adapter name is answered by the new version. (b) is told apart by output:
   every version has different random weights, so greedy text changes; the text is checked
   against a pinned `name@vN` request afterwards. The server-side figure (add_lora → routable)
   comes from the `seal_adapter_swap_seconds` histogram in /metrics.

How
---
Adapters are random-initialised rank-16 LoRAs on all linear layers (peft `save_pretrained`,
no training): different per adapter, nonzero, and the same files go to both servers. Only
one server runs at a time: ours first (with an embedded Valkey and a temporary data dir),
then vLLM's `python -m vllm.entrypoints.openai.api_server` with `--lora-modules`. Both get
the same engine settings (`EngineFlags`). Load comes from `openai.AsyncOpenAI`, the client
users use. Each server is warmed up (base and every adapter) before timing; each level runs
`--repeats` times, base and adapters interleaved, and the tables report medians. A level
stops sending new requests after `--level-budget` seconds (in-flight ones finish), so slow
modes stay bounded; the report says which levels were cut short.

The load generator shares the machine with the server, so absolute numbers depend on the
host; the ratios are the point. Results go to `bench/results/serving-<timestamp>.json`.

    python bench/serving.py --quick          # levels 1,8; 8 requests; 32 tokens; 1 repeat
    python bench/serving.py --levels 1,8,32 --max-tokens 64 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import openai
from bench_stats import median, percentile  # bench/ is on sys.path when run as a script

from app import process
from app.process import free_port, spawn, stop

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
BASE_MODEL = "SmolLM2-135M-Instruct"
RESULTS_DIR = REPO / "bench" / "results"
LOAD_ADAPTERS = ("bench-a", "bench-b", "bench-c", "bench-d")
SWAP_ADAPTER = "bench-swap"
LORA_RANK = 16
TENANT = "bench"

# Open-ended prompts: greedy decoding keeps going well past max_tokens on all of them.
PROMPTS = (
    "Write a detailed essay about the history of the printing press.",
    "Explain step by step how a steam engine works, with as much detail as you can.",
    "Describe a walk through a busy city market, covering every sight, sound and smell.",
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how photosynthesis works and why it matters for life on Earth.",
    "Give a thorough guide to planning a two-week trip through the mountains.",
    "Describe the water cycle in detail, from the ocean to the clouds and back.",
    "Write a detailed review of an imaginary restaurant, course by course.",
)
SWAP_PROBE = "Name three colours."
SWAP_PROBE_TOKENS = 8
SWAP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.01
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineFlags:
    """Engine settings given identically to both servers (ours via env, vLLM via flags)."""

    dtype: str = "float32"
    max_model_len: int = 2048
    max_num_seqs: int = 64
    max_loras: int = 4
    # The product's default for the bundled model (Settings.resolved_max_lora_rank): vLLM pads every
    # adapter to this rank, so a wider engine would time padding, not our layer (bench/lora_rank.py).
    max_lora_rank: int = LORA_RANK
    max_cpu_loras: int = 16
    kv_cache_gib: int = 1

    def seal_env(self) -> dict[str, str]:
        return {
            "SEAL_DTYPE": self.dtype, "SEAL_MAX_MODEL_LEN": str(self.max_model_len),
            "SEAL_MAX_NUM_SEQS": str(self.max_num_seqs), "SEAL_MAX_LORAS": str(self.max_loras),
            "SEAL_MAX_LORA_RANK": str(self.max_lora_rank), "SEAL_MAX_CPU_LORAS": str(self.max_cpu_loras),
            "SEAL_KV_CACHE_GIB": str(self.kv_cache_gib), "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
        }

    def vllm_args(self) -> list[str]:
        return [
            "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
            "--max-num-seqs", str(self.max_num_seqs), "--enable-lora", "--max-loras", str(self.max_loras),
            "--max-lora-rank", str(self.max_lora_rank), "--max-cpu-loras", str(self.max_cpu_loras),
        ]


@dataclass(frozen=True)
class Config:
    levels: tuple[int, ...]
    requests: int | None  # None: max(8, 3 × concurrency) per level
    max_tokens: int
    repeats: int
    swap_repeats: int
    level_budget_s: float | None  # stop sending new requests in a level after this long
    skip_vllm: bool
    ready_timeout_s: float
    output: Path | None

    def requests_for(self, concurrency: int) -> int:
        return self.requests if self.requests is not None else max(8, 3 * concurrency)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", help="Comma-separated concurrency levels (default 1,8,32; quick 1,8).")
    parser.add_argument("--requests", type=int, help="Requests per level (default max(8, 3 x concurrency)).")
    parser.add_argument("--max-tokens", type=int, help="max_tokens per request (default 64; quick 32).")
    parser.add_argument("--repeats", type=int, help="Runs per level and mode; medians reported (default 3; quick 1).")
    parser.add_argument("--swap-repeats", type=int, help="Adapter swaps to time (default 5; quick 3).")
    parser.add_argument("--level-budget", type=float,
                        help="Seconds after which a level sends no new requests; in-flight ones finish, "
                             "tok/s counts what was done. 0 = none (default 120; quick 60).")
    parser.add_argument("--skip-vllm", action="store_true", help="Benchmark our server only.")
    parser.add_argument("--quick", action="store_true", help="Small smoke-sized run (explicit flags still win).")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="Seconds to wait for a server.")
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/serving-<timestamp>.json).")
    args = parser.parse_args(argv)

    def pick(value: Any, normal: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else normal)

    levels = tuple(int(x) for x in pick(args.levels, "1,8,32", "1,8").split(",") if x.strip())
    if not levels or min(levels) < 1:
        parser.error("--levels needs positive integers")
    return Config(
        levels=levels,
        requests=pick(args.requests, None, 8),
        max_tokens=pick(args.max_tokens, 64, 32),
        repeats=max(1, pick(args.repeats, 3, 1)),
        swap_repeats=max(0, pick(args.swap_repeats, 5, 3)),
        level_budget_s=pick(args.level_budget, 120.0, 60.0) or None,
        skip_vllm=args.skip_vllm,
        ready_timeout_s=args.ready_timeout,
        output=args.output,
    )


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the result tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- adapters --------------------------------------------------------------------------------------


def make_adapters(out_root: Path, names: list[str], rank: int = LORA_RANK) -> dict[str, Path]:
    """Write one PEFT LoRA directory per name: random A and B (nonzero), a different seed each."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # the machine is shared with the servers and other work
    base = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0,
                        init_lora_weights=False)
    model = get_peft_model(base, config)
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    paths = {}
    for seed, name in enumerate(names, start=1):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in lora_params:  # nn.Linear's own initialisation, reseeded
                torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=generator)
        paths[name] = out_root / name
        model.save_pretrained(paths[name])
    return paths


class Registry:
    """Publishes versions into our service exactly as the learn worker does."""

    def __init__(self, data_dir: Path, redis_url: str):
        import redis

        from app.registry.db import migrate
        from app.store import AdapterStore

        self.db_url = f"sqlite:///{data_dir / 'seal.db'}"
        migrate(self.db_url)  # once, here: it is not part of a publish we time
        self.store = AdapterStore(data_dir / "adapters")
        self.redis = redis.Redis.from_url(redis_url)

    def publish(self, adapter: str, src: Path) -> int:
        from app.publishing import publish_version

        version, _ = publish_version(db_url=self.db_url, store=self.store, redis=self.redis, adapter=adapter,
                                     tenant=TENANT, src_dir=src, metadata={"source": "bench"})
        return version


# --- server processes --------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path
    stop_offset: int | None = None  # log size when we began stopping it

    def log_errors(self) -> dict[str, list[str]]:
        """Error lines logged while benchmarking, and those logged while shutting down."""
        text = self.log_path.read_bytes() if self.log_path.exists() else b""
        cut = len(text) if self.stop_offset is None else self.stop_offset
        return {"during_run": error_lines(text[:cut]), "at_shutdown": error_lines(text[cut:])}


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment minus anything that would point the server elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SEAL_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(extra)
    return env


def wait_ready(server: Server, path: str, timeout: float) -> None:
    try:
        process.wait_ready(server.url, server.proc, timeout=timeout, path=path)
    except (RuntimeError, TimeoutError) as exc:
        raise type(exc)(f"{server.name}: {exc}\n{log_tail(server.log_path)}") from exc


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def error_lines(text: bytes, limit: int = 20) -> list[str]:
    lines = text.decode(errors="replace").splitlines()
    return [line for line in lines if ERROR_LINE.search(line)][:limit]


@contextlib.contextmanager
def running(name: str, cmd: list[str], env: dict[str, str], log_path: Path, port: int, ready_path: str,
            timeout: float) -> Iterator[Server]:
    proc = spawn(cmd, env, log_path, cwd=REPO)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path)
    try:
        started = time.perf_counter()
        wait_ready(server, ready_path, timeout)
        log(f"{name} ready in {time.perf_counter() - started:.0f}s on {server.url}")
        yield server
    finally:
        server.stop_offset = log_path.stat().st_size if log_path.exists() else 0
        # SIGTERM first: signalling the whole group at once kills the engine before the server and
        # makes it log EngineDeadError tracebacks that are not the benchmark's.
        stop(proc, timeout=30)
        log(f"{name} stopped")


def seal_command(port: int) -> list[str]:
    return [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]


def vllm_command(port: int, flags: EngineFlags, adapters: dict[str, Path]) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL_DIR),
        "--served-model-name", BASE_MODEL, "--host", "127.0.0.1", "--port", str(port), *flags.vllm_args(),
        "--lora-modules", *(f"{name}={path.resolve()}" for name, path in adapters.items()),
    ]


# --- load generation ---------------------------------------------------------------------------------


@dataclass
class RequestResult:
    model: str
    latency_s: float
    ttft_s: float | None
    completion_tokens: int
    error: str | None = None


@dataclass
class LoadRun:
    concurrency: int
    planned: int
    requests: int
    errors: int
    completion_tokens: int
    wall_s: float
    tok_s: float
    p50_s: float | None
    p95_s: float | None
    ttft_p50_s: float | None
    error_samples: list[str] = field(default_factory=list)


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600.0)


async def one_request(client: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int) -> RequestResult:
    started = time.perf_counter()
    ttft = None
    tokens = None
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0.0, stream=True, stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - started
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except openai.APIError as exc:
        return RequestResult(model, time.perf_counter() - started, ttft, 0, f"{type(exc).__name__}: {exc}")
    if tokens is None:
        return RequestResult(model, time.perf_counter() - started, ttft, 0, "stream ended without a usage chunk")
    return RequestResult(model, time.perf_counter() - started, ttft, tokens)


async def run_load(url: str, models: list[str], concurrency: int, requests: int, max_tokens: int,
                   budget_s: float | None = None) -> LoadRun:
    """Closed loop: `concurrency` clients, each sending its next request when the last one ends,
    until `requests` were sent or `budget_s` has passed."""
    client = openai_client(url)
    jobs = iter(range(requests))
    results: list[RequestResult] = []
    started = time.perf_counter()

    async def user() -> None:
        for i in jobs:  # shared iterator: request i gets model i mod len(models), prompt i mod len(PROMPTS)
            if budget_s is not None and time.perf_counter() - started > budget_s:
                return
            results.append(await one_request(client, models[i % len(models)], PROMPTS[i % len(PROMPTS)], max_tokens))

    try:
        await asyncio.gather(*(user() for _ in range(concurrency)))
    finally:
        await client.close()
    return summarise(results, concurrency, requests, time.perf_counter() - started)


def summarise(results: list[RequestResult], concurrency: int, planned: int, wall_s: float) -> LoadRun:
    ok = [r for r in results if r.error is None]
    tokens = sum(r.completion_tokens for r in ok)
    latencies = [r.latency_s for r in ok]
    return LoadRun(
        concurrency=concurrency, planned=planned, requests=len(results), errors=len(results) - len(ok),
        completion_tokens=tokens, wall_s=wall_s, tok_s=tokens / wall_s if wall_s > 0 else 0.0,
        p50_s=percentile(latencies, 50), p95_s=percentile(latencies, 95),
        ttft_p50_s=percentile([r.ttft_s for r in ok if r.ttft_s is not None], 50),
        error_samples=sorted({r.error for r in results if r.error})[:5],
    )


async def warm_up(url: str, models: list[str]) -> None:
    """Load every adapter into the engine and get past first-request compilation and caching."""
    run = await run_load(url, models, concurrency=min(4, len(models) * 2), requests=len(models) * 2, max_tokens=16)
    if run.errors:
        raise RuntimeError(f"warm-up failed on {url}: {run.error_samples}")


async def measure_levels(url: str, cfg: Config, modes: dict[str, list[str]]) -> dict[str, dict[int, list[LoadRun]]]:
    """Every level × mode, `repeats` times; modes interleaved so drift hits them alike."""
    runs: dict[str, dict[int, list[LoadRun]]] = {mode: {c: [] for c in cfg.levels} for mode in modes}
    for repeat in range(cfg.repeats):
        for concurrency in cfg.levels:
            for mode, models in modes.items():
                run = await run_load(url, models, concurrency, cfg.requests_for(concurrency), cfg.max_tokens,
                                     cfg.level_budget_s)
                runs[mode][concurrency].append(run)
                log(f"  {mode:8s} c={concurrency:<3d} run {repeat + 1}/{cfg.repeats}: {run.tok_s:7.1f} tok/s, "
                    f"p50 {fmt_s(run.p50_s)}, p95 {fmt_s(run.p95_s)}, {run.requests}/{run.planned} requests, "
                    f"{run.errors} errors")
    return runs


def level_summary(runs: list[LoadRun]) -> dict[str, Any]:
    return {
        "tok_s": median([r.tok_s for r in runs]),
        "p50_s": median([r.p50_s for r in runs]),
        "p95_s": median([r.p95_s for r in runs]),
        "ttft_p50_s": median([r.ttft_p50_s for r in runs]),
        "requests": sum(r.requests for r in runs),
        "planned": sum(r.planned for r in runs),
        "errors": sum(r.errors for r in runs),
        "error_samples": sorted({e for r in runs for e in r.error_samples})[:5],
    }


# --- adapter swaps -------------------------------------------------------------------------------------


@dataclass
class SwapSample:
    version: int
    publish_call_s: float
    models_visible_s: float | None
    first_served_s: float | None
    first_served_sent_s: float | None  # when that request was sent: routing flipped before this
    server_swap_s: float | None
    note: str = ""


async def probe(client: openai.AsyncOpenAI, model: str) -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": SWAP_PROBE}], max_tokens=SWAP_PROBE_TOKENS,
        temperature=0.0,
    )
    return reply.choices[0].message.content or ""


async def served_version(http: httpx.AsyncClient, adapter: str) -> int | None:
    data = (await http.get("/v1/models")).raise_for_status().json()["data"]
    return next((card.get("version") for card in data if card["id"] == adapter), None)


async def swap_histogram(http: httpx.AsyncClient) -> tuple[float, float]:
    """(sum, count) of seal_adapter_swap_seconds."""
    text = (await http.get("/metrics")).raise_for_status().text
    values = {}
    for name in ("seal_adapter_swap_seconds_sum", "seal_adapter_swap_seconds_count"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        values[name] = float(match.group(1)) if match else 0.0
    return values["seal_adapter_swap_seconds_sum"], values["seal_adapter_swap_seconds_count"]


async def wait_for_version(http: httpx.AsyncClient, adapter: str, version: int, t0: float) -> float | None:
    while time.perf_counter() - t0 < SWAP_TIMEOUT_S:
        if await served_version(http, adapter) == version:
            return time.perf_counter() - t0
        await asyncio.sleep(POLL_INTERVAL_S)
    return None


async def poll_answers(client: openai.AsyncOpenAI, adapter: str, old_text: str,
                       t0: float) -> list[tuple[float, float, str]]:
    """Ask the bare adapter name back to back until the answer changes: (sent, answered, text) each,
    in seconds since t0."""
    answers: list[tuple[float, float, str]] = []
    while time.perf_counter() - t0 < SWAP_TIMEOUT_S:
        sent = time.perf_counter() - t0
        text = await probe(client, adapter)
        answers.append((sent, time.perf_counter() - t0, text))
        if text != old_text:
            break
    return answers


async def measure_swap(url: str, registry: Registry, src: Path) -> SwapSample:
    client = openai_client(url)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        try:
            old_version = await served_version(http, SWAP_ADAPTER)
            if old_version is None:
                raise RuntimeError(f"{SWAP_ADAPTER} is not served")
            new_version = old_version + 1
            old_text = await probe(client, SWAP_ADAPTER)
            hist_before = await swap_histogram(http)

            t0 = time.perf_counter()
            visible = asyncio.create_task(wait_for_version(http, SWAP_ADAPTER, new_version, t0))
            answers = asyncio.create_task(poll_answers(client, SWAP_ADAPTER, old_text, t0))
            published = await asyncio.to_thread(registry.publish, SWAP_ADAPTER, src)
            publish_call_s = time.perf_counter() - t0
            models_visible_s, answer_log = await visible, await answers

            if published != new_version:
                raise RuntimeError(f"published v{published}, expected v{new_version}")
            pinned_text = await probe(client, f"{SWAP_ADAPTER}@v{new_version}")  # loaded already: no load here
            hist_after = await swap_histogram(http)
        finally:
            await client.close()
    first, note = None, ""
    if pinned_text == old_text:
        note = "old and new versions answer alike; served time unknown"
    else:
        first = next(((sent, done) for sent, done, text in answer_log if text == pinned_text), None)
        if first is None:
            note = "no answer matched the new version"
    swaps = hist_after[1] - hist_before[1]
    server_swap_s = (hist_after[0] - hist_before[0]) / swaps if swaps else None
    return SwapSample(new_version, publish_call_s, models_visible_s, first[1] if first else None,
                      first[0] if first else None, server_swap_s, note)


async def wait_for_adapters(url: str, names: list[str], timeout: float = 60.0) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = (await http.get("/v1/models")).raise_for_status().json()["data"]
            if set(names) <= {card["id"] for card in data}:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"adapters {names} not served after {timeout:.0f}s")


# --- the two servers ------------------------------------------------------------------------------------


def load_modes() -> dict[str, list[str]]:
    return {"base": [BASE_MODEL], "adapters": list(LOAD_ADAPTERS)}


def bench_ours(cfg: Config, flags: EngineFlags, work: Path, adapters: dict[str, Path],
               swap_versions: list[Path]) -> dict[str, Any]:
    from app.redis_server import EmbeddedValkey

    data_dir = work / "seal-data"
    data_dir.mkdir()
    valkey = EmbeddedValkey(work / "valkey")
    redis_url = valkey.start()
    port = free_port()
    env = clean_env(SEAL_DATA_DIR=str(data_dir), SEAL_MODEL=str(MODEL_DIR), SEAL_SERVED_MODEL_NAME=BASE_MODEL,
                    REDIS_URL=redis_url, **flags.seal_env())
    try:
        with running("ours", seal_command(port), env, work / "seal.log", port, "/readyz",
                     cfg.ready_timeout_s) as server:
            registry = Registry(data_dir, redis_url)
            for name in LOAD_ADAPTERS:
                registry.publish(name, adapters[name])
            if cfg.swap_repeats:
                registry.publish(SWAP_ADAPTER, swap_versions[0])
            served = [*LOAD_ADAPTERS, *([SWAP_ADAPTER] if cfg.swap_repeats else [])]
            asyncio.run(wait_for_adapters(server.url, served))
            asyncio.run(warm_up(server.url, [BASE_MODEL, *LOAD_ADAPTERS]))
            log("ours: measuring load")
            runs = asyncio.run(measure_levels(server.url, cfg, load_modes()))
            swaps = []
            for src in swap_versions[1:]:
                sample = asyncio.run(measure_swap(server.url, registry, src))
                log(f"  swap to v{sample.version}: /v1/models {fmt_s(sample.models_visible_s)}, "
                    f"served {fmt_s(sample.first_served_s)}, server {fmt_s(sample.server_swap_s)} {sample.note}")
                swaps.append(sample)
    finally:
        valkey.stop()
    return {"runs": runs, "swaps": swaps, "log_errors": server.log_errors()}


def bench_vllm(cfg: Config, flags: EngineFlags, work: Path, adapters: dict[str, Path]) -> dict[str, Any]:
    port = free_port()
    env = clean_env(VLLM_CPU_KVCACHE_SPACE=str(flags.kv_cache_gib))
    load_adapters = {name: adapters[name] for name in LOAD_ADAPTERS}
    with running("vllm", vllm_command(port, flags, load_adapters), env, work / "vllm.log", port, "/health",
                 cfg.ready_timeout_s) as server:
        asyncio.run(wait_for_adapters(server.url, list(LOAD_ADAPTERS)))
        asyncio.run(warm_up(server.url, [BASE_MODEL, *LOAD_ADAPTERS]))
        log("vllm: measuring load")
        runs = asyncio.run(measure_levels(server.url, cfg, load_modes()))
    return {"runs": runs, "swaps": [], "log_errors": server.log_errors()}


# --- report ---------------------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    align = [":---", *("---:" for _ in headers[1:])]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def build_report(cfg: Config, summaries: dict[str, dict[str, dict[int, dict[str, Any]]]],
                 swaps: list[SwapSample]) -> str:
    ours, vllm = summaries["ours"], summaries.get("vllm")
    parts = [f"max_tokens={cfg.max_tokens}, repeats={cfg.repeats}, medians over repeats; latency = "
             "end-to-end streaming request; tok/s = completion tokens / wall time"]
    if vllm:
        rows = []
        for c in cfg.levels:
            o, v = ours["base"][c], vllm["base"][c]
            rows.append([str(c), fmt_num(o["tok_s"]), fmt_num(v["tok_s"]), fmt_num(ratio(o["tok_s"], v["tok_s"]), 2),
                         fmt_s(o["p50_s"]), fmt_s(v["p50_s"]), fmt_s(o["p95_s"]), fmt_s(v["p95_s"]),
                         fmt_s(o["ttft_p50_s"]), fmt_s(v["ttft_p50_s"]), f"{o['errors']}/{v['errors']}"])
        parts.append("### Base model: ours vs vLLM\n\n" + markdown_table(
            ["conc", "ours tok/s", "vLLM tok/s", "ours/vLLM", "ours p50", "vLLM p50", "ours p95", "vLLM p95",
             "ours TTFT p50", "vLLM TTFT p50", "errors ours/vLLM"], rows))
    rows = []
    for c in cfg.levels:
        b, a = ours["base"][c], ours["adapters"][c]
        row = [str(c), fmt_num(b["tok_s"]), fmt_num(a["tok_s"]), fmt_num(ratio(a["tok_s"], b["tok_s"]), 2),
               fmt_s(b["p50_s"]), fmt_s(a["p50_s"]), fmt_s(b["p95_s"]), fmt_s(a["p95_s"])]
        if vllm:
            vb, va = vllm["base"][c], vllm["adapters"][c]
            row += [fmt_num(va["tok_s"]), fmt_num(ratio(va["tok_s"], vb["tok_s"]), 2),
                    fmt_num(ratio(a["tok_s"], va["tok_s"]), 2)]
        row.append(str(b["errors"] + a["errors"]))
        rows.append(row)
    headers = ["conc", "ours base tok/s", "ours 4-adapter tok/s", "adapters/base", "base p50", "adapters p50",
               "base p95", "adapters p95"]
    if vllm:
        headers += ["vLLM 4-adapter tok/s", "vLLM adapters/base", "ours/vLLM (adapters)"]
    parts.append("### Base vs 4 mixed adapters (round-robin per request)\n\n" + markdown_table(headers + ["errors"], rows))
    cut = [f"{server} {mode} c={c} ({s['requests']}/{s['planned']} requests)"
           for server, modes in summaries.items() for mode, levels in modes.items() for c, s in levels.items()
           if s["requests"] < s["planned"]]
    if cut:
        parts.append("Cut short by --level-budget: " + "; ".join(cut))
    if swaps:
        parts.append(f"### Adapter swap on ours ({len(swaps)} swaps, seconds from publish_version() start)\n\n"
                     + markdown_table(["metric", "median", "min", "max"], swap_rows(swaps)))
    return "\n\n".join(parts)


def swap_rows(swaps: list[SwapSample]) -> list[list[str]]:
    metrics = {
        "publish_version() returns": [s.publish_call_s for s in swaps],
        "GET /v1/models shows new version": [s.models_visible_s for s in swaps],
        "first chat answered by new version": [s.first_served_s for s in swaps],
        "  (that chat request was sent at)": [s.first_served_sent_s for s in swaps],
        "server add_lora → routable (metric)": [s.server_swap_s for s in swaps],
    }
    rows = []
    for label, values in metrics.items():
        present = [v for v in values if v is not None]
        missing = f" ({len(values) - len(present)} missing)" if len(present) < len(values) else ""
        rows.append([label + missing, fmt_s(median(present)), fmt_s(min(present, default=None)),
                     fmt_s(max(present, default=None))])
    return rows


def environment() -> dict[str, Any]:
    import vllm

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {"python": platform.python_version(), "vllm": vllm.__version__, "openai": openai.__version__,
            "cpus": os.cpu_count(), "platform": platform.platform(), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain"))}


def write_json(path: Path, cfg: Config, flags: EngineFlags, results: dict[str, dict[str, Any]],
               summaries: dict[str, Any]) -> None:
    payload = {
        "created": datetime.now(timezone.utc).isoformat(),
        "config": {**asdict(cfg), "output": str(path)},
        "engine_flags": asdict(flags),
        "environment": environment(),
        "lora_rank": LORA_RANK,
        "summary": summaries,
        "runs": {server: {mode: {c: [asdict(r) for r in runs] for c, runs in levels.items()}
                          for mode, levels in result["runs"].items()} for server, result in results.items()},
        "swaps": [asdict(s) for s in results["ours"]["swaps"]],
        "server_log_errors": {server: result["log_errors"] for server, result in results.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def exit_on_sigterm(signum: int, _frame: Any) -> None:
    """SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every server started is stopped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    flags = EngineFlags()
    output = cfg.output or RESULTS_DIR / f"serving-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.TemporaryDirectory(prefix="seal-bench-") as tmp:
        work = Path(tmp)
        swap_names = [f"{SWAP_ADAPTER}-{i}" for i in range(cfg.swap_repeats + 1)] if cfg.swap_repeats else []
        log(f"writing {len(LOAD_ADAPTERS)} load adapters and {len(swap_names)} swap versions (rank {LORA_RANK})")
        adapters = make_adapters(work / "adapters", [*LOAD_ADAPTERS, *swap_names])
        results = {"ours": bench_ours(cfg, flags, work, adapters, [adapters[n] for n in swap_names])}
        if not cfg.skip_vllm:
            results["vllm"] = bench_vllm(cfg, flags, work, adapters)

    summaries = {server: {mode: {c: level_summary(runs) for c, runs in levels.items()}
                          for mode, levels in result["runs"].items()} for server, result in results.items()}
    print(build_report(cfg, summaries, results["ours"]["swaps"]))
    for server, result in results.items():
        for when, lines in result["log_errors"].items():
            if lines:
                print(f"\n{server} server logged error lines ({when.replace('_', ' ')}), first ones:")
                print("\n".join(f"    {line}" for line in lines[:5]))
    write_json(output, cfg, flags, results, summaries)
    print(f"\nJSON: {output}")
    failed = sum(s["errors"] for levels in summaries.values() for modes in levels.values() for s in modes.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
