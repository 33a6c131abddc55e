"""A thousand shards in one knowledge base, on one engine, under load (issue 24), without 1,000 learns.

What it does
------------
1. **Seed.** bench/docgen.py writes `--shards` invented documents; each is submitted and assigned a
   shard of its own (K = 1, as the API does) and published through `app.publishing.publish_shard`,
   the learn worker's own publish path, into one knowledge base of a real SQLite registry and
   adapter store. Every shard is a copy of one random rank-16 LoRA on every linear layer, the shape
   and dtype (fp32) of a trained shard of this model: vLLM loads and batches it as it would a
   learned one. The publish time of the first and last 10 says whether publishing grows with N.
2. **Serve**, once per `--max-cpu-loras` value (SEAL_MAX_CPU_LORAS: the LoRAs vLLM keeps in memory;
   the rest load from disk on demand), `seal serve` on that data dir, and measure through the API:
   - time to first token (streamed, 16 tokens) for the base model, a *cold* shard (never asked, or
     evicted since) and a *hot* one (asked just before), each asked with `seal-answer-from: weights`
     so the answer comes from the routed shard's LoRA;
   - `GET /v1/adapters/{kb}` (the knowledge base with its documents and shards);
   - a closed loop at each `--levels` concurrency over `--distinct` distinct shards for
     `--level-seconds` (on the first start, the same questions to the base model first, beside it): requests, failures (any non-200 or a stream that breaks), 503s with their
     Retry-After, hangs (no reply in `--request-timeout` s), TTFT p50/p95, and `/readyz` polled
     twice a second throughout;
   - publishing one more version while serving: the call, then until the API answers its
     document from the new shard;
   - resident memory of the API process and the engine process it started.

    .venv/bin/python bench/many_shards.py                            # 1,000 shards; 16 and 64 in memory
    .venv/bin/python bench/many_shards.py --shards 100 --levels 8 --level-seconds 20   # quick

Writes bench/results/many-shards-<stamp>.json and .md. Needs ~20 MB of disk per shard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median, percentile  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import GeneratedDocument, generate_documents  # noqa: E402
from learn import BASE, MODEL_DIR, RESULTS, service_env  # noqa: E402
from serving import make_adapters  # noqa: E402

from app.process import free_port, spawn, stop, wait_ready  # noqa: E402
from app.redis_server import EmbeddedValkey  # noqa: E402

# The service runs in the open mode (no keys), where a knowledge base's name is its registry key, and
# the knowledge base is an operator's (no tenant).
TENANT = None
KB = "shelf"
TOKENS = 16
ANSWER_FROM = {"seal-answer-from": "weights"}


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# --- seeding the registry --------------------------------------------------------------------------


class NoSubscribers:
    """The adapter-event channel before any API process listens (the server reads the registry at start)."""

    def publish(self, channel: str, message: str) -> int:
        return 0


def lora_rank() -> int:
    from workers.seal.recipes import load_recipe

    return load_recipe(MODEL_DIR).for_shards().rank


def publish_document(db: str, store: Any, redis: Any, doc: GeneratedDocument, src: Path) -> float:
    """One learn's registry writes, as the API and the worker make them; returns the publish seconds."""
    from app.knowledge.shards import assign_shards
    from app.publishing import publish_shard
    from app.registry import lifecycle, queries
    from app.registry.db import session_scope
    from app.registry.models import AdapterKind

    job_id = str(uuid.uuid4())
    with session_scope(db) as s:
        kb = queries.get_or_create_adapter(session=s, name=KB, tenant=TENANT, kind=AdapterKind.kb)
        job = queries.create_learn_job(session=s, job_id=job_id, adapter=KB, tenant=TENANT,
                                       documents=[{"title": doc.title, "text": doc.text}], options={},
                                       idempotency_key=None, request_hash=None)
        assign_shards(s, kb, job.documents, 1)
        shard, doc_ids = job.documents[0].shard, [d.id for d in job.documents]
    started = time.perf_counter()
    kb_version, _ = publish_shard(db_url=db, store=store, redis=redis, kb=KB, shard=shard, tenant=TENANT, src_dir=src,
                                  job_id=job_id, parent_version=None, document_ids=doc_ids, metrics={})
    seconds = time.perf_counter() - started
    with session_scope(db) as s:
        lifecycle.publish(s, queries.get_job(session=s, job_id=job_id), version=kb_version, job_metrics={},
                          message=f"published {KB}@v{kb_version} (seeded, not trained)")
    return seconds


def seed(data_dir: Path, docs: list[GeneratedDocument], src: Path) -> dict[str, Any]:
    from app.registry.db import migrate
    from app.store import AdapterStore

    db = f"sqlite:///{data_dir / 'seal.db'}"
    migrate(db)
    store, redis = AdapterStore(data_dir / "adapters"), NoSubscribers()
    seconds = []
    started = time.perf_counter()
    for i, doc in enumerate(docs):
        seconds.append(publish_document(db, store, redis, doc, src))
        if (i + 1) % 100 == 0:
            log(f"seeded {i + 1} of {len(docs)} shards ({time.perf_counter() - started:.0f}s)")
    return {"shards": len(docs), "seconds": time.perf_counter() - started,
            "publish_first10_ms": 1000 * median(seconds[:10]), "publish_last10_ms": 1000 * median(seconds[-10:]),
            "adapter_store_bytes": sum(p.stat().st_size for p in (data_dir / "adapters").rglob("*") if p.is_file())}


# --- the service -----------------------------------------------------------------------------------


class Service:
    """An embedded Valkey and `seal serve` (no worker: nothing is learned) over the seeded data dir."""

    def __init__(self, work: Path, data_dir: Path, max_cpu_loras: int):
        self.work, self.data_dir, self.max_cpu_loras = work, data_dir, max_cpu_loras
        self.valkey = EmbeddedValkey(data_dir)
        self.proc: Any = None
        self.url = ""
        self.log = work / f"serve-{max_cpu_loras}.log"

    def __enter__(self) -> Service:
        started = time.perf_counter()
        try:
            redis_url = self.valkey.start()
            port = free_port()
            env = service_env(self.data_dir, redis_url, port, SEAL_MAX_CPU_LORAS=str(self.max_cpu_loras))
            self.proc = spawn([sys.executable, "-m", "app.cli", "serve"], env, self.log, cwd=REPO)
            self.url = f"http://127.0.0.1:{port}"
            wait_ready(self.url, self.proc, timeout=600)
        except BaseException:
            self.__exit__()
            raise
        log(f"seal serve ready in {time.perf_counter() - started:.0f}s (SEAL_MAX_CPU_LORAS={self.max_cpu_loras})")
        return self

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the API process and of everything it started (vLLM's engine core)."""
        api = psutil.Process(self.proc.pid)
        children = api.children(recursive=True)
        return {"api_mb": api.memory_info().rss / 2**20,
                "engine_mb": sum(c.memory_info().rss for c in children) / 2**20}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=60)
        self.valkey.stop()


# --- requests --------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    route: str | None
    ttft_s: float | None
    total_s: float
    retry_after: str | None = None
    error: str | None = None


async def ask(http: httpx.AsyncClient, model: str, question: str, headers: dict[str, str] | None = None) -> Reply:
    """One streamed chat answer: status, `seal-route`, time to the first content chunk, and the whole."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": TOKENS,
            "temperature": 0, "stream": True}
    started = time.perf_counter()
    ttft = None
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers or {}) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")[:300]
                return Reply(r.status_code, r.headers.get("seal-route"), None, time.perf_counter() - started,
                             r.headers.get("retry-after"), text)
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Reply(500, r.headers.get("seal-route"), ttft, time.perf_counter() - started,
                                 error=str(chunk["error"])[:300])
                if ttft is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", ())):
                    ttft = time.perf_counter() - started
            return Reply(200, r.headers.get("seal-route"), ttft, time.perf_counter() - started)
    except httpx.TimeoutException as exc:
        return Reply(0, None, ttft, time.perf_counter() - started, error=f"hang: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return Reply(0, None, ttft, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")


def question(doc: GeneratedDocument) -> str:
    return (doc.forward or doc.reverse)[0].question


def ttft_stats(replies: list[Reply]) -> dict[str, Any]:
    ok = [r.ttft_s for r in replies if r.status == 200 and r.ttft_s is not None]
    shard_routes = sum(1 for r in replies if r.route and "/s" in r.route)
    return {"n": len(replies), "ok": len(ok), "from_a_shard": shard_routes,
            "p50_ms": 1000 * (percentile(ok, 50) or 0), "p95_ms": 1000 * (percentile(ok, 95) or 0)}


async def single_requests(http: httpx.AsyncClient, docs: list[GeneratedDocument], cold: list[int],
                          samples: int) -> dict[str, Any]:
    """TTFT for the base, cold shards (each asked for the first time) and hot ones (asked again at once)."""
    base = [await ask(http, BASE, question(docs[i])) for i in cold[:samples]]
    cold_replies, hot_replies = [], []
    for i in cold[:samples]:
        cold_replies.append(await ask(http, KB, question(docs[i]), ANSWER_FROM))
        hot_replies.append(await ask(http, KB, question(docs[i]), ANSWER_FROM))
    return {"base": ttft_stats(base), "cold": ttft_stats(cold_replies), "hot": ttft_stats(hot_replies)}


@dataclass
class Level:
    concurrency: int
    model: str
    replies: list[Reply] = field(default_factory=list)
    readyz: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        failed = [r for r in self.replies if r.status != 200]
        ttfts = [r.ttft_s for r in self.replies if r.status == 200 and r.ttft_s is not None]
        return {
            "concurrency": self.concurrency, "model": self.model, "seconds": self.seconds, "requests": len(self.replies),
            "req_per_s": len(self.replies) / self.seconds if self.seconds else 0.0, "failed": len(failed),
            "status_503": sum(r.status == 503 for r in failed),
            "retry_after_on_503": all(r.retry_after for r in failed if r.status == 503),
            "hangs": sum(1 for r in failed if r.error and r.error.startswith("hang")),
            "from_a_shard": sum(1 for r in self.replies if r.route and "/s" in r.route),
            "ttft_p50_ms": 1000 * (percentile(ttfts, 50) or 0), "ttft_p95_ms": 1000 * (percentile(ttfts, 95) or 0),
            "readyz_polls": len(self.readyz), "readyz_not_200": sum(s != 200 for s in self.readyz),
            "error_samples": sorted({f"{r.status} {r.error}" for r in failed})[:5],
        }


async def load_level(url: str, docs: list[GeneratedDocument], shards: list[int], concurrency: int, seconds: float,
                     timeout: float, model: str = KB) -> Level:
    """A closed loop of `concurrency` clients over `shards` (round robin) for `seconds`, /readyz polled.
    With `model` the base model, the same questions go to the base: the load without any LoRA."""
    level = Level(concurrency, model)
    turn = iter(range(10**9))
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        async def user() -> None:
            while time.perf_counter() - started < seconds:
                doc = docs[shards[next(turn) % len(shards)]]
                level.replies.append(await ask(http, model, question(doc), ANSWER_FROM))

        async def watch() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=5) as probe:
                while time.perf_counter() - started < seconds:
                    try:
                        level.readyz.append((await probe.get("/readyz")).status_code)
                    except httpx.HTTPError:
                        level.readyz.append(0)
                    await asyncio.sleep(0.5)

        await asyncio.gather(watch(), *(user() for _ in range(concurrency)))
    level.seconds = time.perf_counter() - started
    return level


async def publish_while_serving(svc: Service, doc: GeneratedDocument, src: Path) -> dict[str, Any]:
    """Publish one more shard through the worker's path and time it until the API answers from it."""
    import redis as redis_lib

    from app.store import AdapterStore

    db = f"sqlite:///{svc.data_dir / 'seal.db'}"
    started = time.perf_counter()
    with redis_lib.Redis.from_url(svc.valkey.url) as redis:
        publish_s = await asyncio.to_thread(publish_document, db, AdapterStore(svc.data_dir / "adapters"), redis, doc,
                                            src)
    async with httpx.AsyncClient(base_url=svc.url, timeout=120) as http:
        while True:
            reply = await ask(http, KB, question(doc), ANSWER_FROM)
            if reply.status == 200 and reply.route and "/s" in reply.route:
                break
            if time.perf_counter() - started > 120:
                return {"publish_ms": 1000 * publish_s, "answered_from_it_s": None, "last_route": reply.route}
            await asyncio.sleep(0.1)
    return {"publish_ms": 1000 * publish_s, "answered_from_it_s": time.perf_counter() - started,
            "route": reply.route}


async def measure(svc: Service, docs: list[GeneratedDocument], args: argparse.Namespace, cold_offset: int,
                  extra: GeneratedDocument, src: Path, base_too: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"max_cpu_loras": svc.max_cpu_loras, "rss_at_start": svc.rss_mb()}
    async with httpx.AsyncClient(base_url=svc.url, timeout=args.request_timeout) as http:
        await ask(http, BASE, "Hello")  # past the first request's one-time costs
        listing = []
        for _ in range(5):
            started = time.perf_counter()
            r = await http.get(f"/v1/adapters/{KB}")
            listing.append(time.perf_counter() - started)
            r.raise_for_status()
        out["kb"] = {"documents": r.json().get("documents"), "shards": r.json().get("shards"),
                     "get_p50_ms": 1000 * median(listing)}
        cold = list(range(cold_offset, cold_offset + args.samples))
        out["ttft"] = await single_requests(http, docs, cold, args.samples)
    shards = list(range(args.distinct))  # the load's shards: none of them asked yet
    out["levels"] = []
    for concurrency in args.levels:
        # The same load on the base model first (the first start only): what no LoRA at all would serve.
        for model in ([BASE] if base_too else []) + [KB]:
            level = await load_level(svc.url, docs, shards, concurrency, args.level_seconds, args.request_timeout, model)
            out["levels"].append(level.summary())
            log(f"  {model} at concurrency {concurrency}: {out['levels'][-1]}")
    out["publish"] = await publish_while_serving(svc, extra, src)
    out["rss_after_load"] = svc.rss_mb()
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        out["readyz_after"] = (await http.get("/readyz")).status_code
        out["base_after"] = (await ask(http, BASE, "Hello")).status
    out["alive"] = svc.alive()
    return out


# --- report ----------------------------------------------------------------------------------------


def render(payload: dict[str, Any]) -> str:
    s = payload["seed"]
    lines = [f"# {s['shards']:,} shards in one knowledge base on one engine ({payload['stamp']})", "",
             f"`{' '.join(payload['argv'])}` on {payload['machine']}.", "",
             f"Seeded {s['shards']:,} shards (one random rank-{payload['rank']} fp32 LoRA on every linear layer "
             f"each, {s['adapter_store_bytes'] / 2**30:.1f} GiB of adapter files) in {s['seconds']:.0f} s; "
             f"publish p50 {s['publish_first10_ms']:.0f} ms for the first 10, {s['publish_last10_ms']:.0f} ms "
             "for the last 10.", "",
             "| SEAL_MAX_CPU_LORAS | TTFT base p50 / p95 ms | cold shard | hot shard | GET kb ms | publish ms | "
             "publish → answered s | API / engine RSS MB |", "|---:|---|---|---|---:|---:|---:|---|"]
    for run in payload["runs"]:
        t = run["ttft"]
        p = run["publish"]
        rss = run["rss_after_load"]
        answered = f"{p['answered_from_it_s']:.1f}" if p.get("answered_from_it_s") is not None else "never"
        lines.append(f"| {run['max_cpu_loras']} | {t['base']['p50_ms']:.0f} / {t['base']['p95_ms']:.0f} | "
                     f"{t['cold']['p50_ms']:.0f} / {t['cold']['p95_ms']:.0f} | "
                     f"{t['hot']['p50_ms']:.0f} / {t['hot']['p95_ms']:.0f} | {run['kb']['get_p50_ms']:.0f} | "
                     f"{p['publish_ms']:.0f} | {answered} | {rss['api_mb']:.0f} / {rss['engine_mb']:.0f} |")
    lines += ["", "Under load (closed loop, 16 streamed tokens, each request a different shard of "
              f"{payload['distinct']} in turn; the base model asked the same questions beside it):", "",
              "| SEAL_MAX_CPU_LORAS | model | concurrency | requests | req/s | failed | 503 (Retry-After) | hangs | "
              "TTFT p50 / p95 ms | /readyz not 200 | engine alive after |", "|---:|---|---:|---:|---:|---:|---|---:|---|---|---:|"]
    for run in payload["runs"]:
        for lv in run["levels"]:
            model = "base" if lv["model"] == BASE else f"{payload['distinct']} shards"
            lines.append(f"| {run['max_cpu_loras']} | {model} | {lv['concurrency']} | {lv['requests']} | {lv['req_per_s']:.2f} | "
                         f"{lv['failed']} | {retry_after(lv)} | "
                         f"{lv['hangs']} | {lv['ttft_p50_ms']:.0f} / {lv['ttft_p95_ms']:.0f} | "
                         f"{lv['readyz_not_200']} of {lv['readyz_polls']} | "
                         f"{'yes' if run['alive'] and run['readyz_after'] == 200 else 'NO'} |")
            if lv["error_samples"]:
                lines.append(f"|  |  |  | errors: {'; '.join(lv['error_samples'])} |||||||")
    return "\n".join(lines) + "\n"


def retry_after(level: dict[str, Any]) -> str:
    if not level["status_503"]:
        return "0"
    return f"{level['status_503']} ({'all with' if level['retry_after_on_503'] else 'NOT all with'} Retry-After)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    parser.add_argument("--shards", type=int, default=1000, help="documents, one shard each (default 1,000)")
    parser.add_argument("--max-cpu-loras", type=ints, default=[16, 64],
                        help="SEAL_MAX_CPU_LORAS values, one service start each (default 16,64; 16 is the default)")
    parser.add_argument("--levels", type=ints, default=[8, 32], help="concurrency levels (default 8,32)")
    parser.add_argument("--distinct", type=int, default=100, help="distinct shards the load asks (default 100)")
    parser.add_argument("--level-seconds", type=float, default=60.0, help="each level's duration (default 60)")
    parser.add_argument("--samples", type=int, default=10, help="cold/hot/base TTFT samples (default 10)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="a reply slower than this is a hang")
    parser.add_argument("--seed", type=int, default=24, help="docgen seed")
    parser.add_argument("--work", type=Path, help="work dir (default: a temporary one, deleted after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.shards < args.distinct + args.samples * len(args.max_cpu_loras):
        parser.error("--shards must cover --distinct plus fresh cold shards for every service start")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = args.work or Path(tempfile.mkdtemp(prefix="many-shards-"))
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        docs = generate_documents(args.shards + len(args.max_cpu_loras), seed=args.seed)
        extras, docs = docs[args.shards:], docs[:args.shards]
        rank = lora_rank()
        src = make_adapters(work / "lora", ["shard"], rank=rank)["shard"]
        log(f"seeding {args.shards} shards into {data_dir}")
        payload: dict[str, Any] = {"argv": sys.argv, "stamp": stamp, "machine": f"{platform.machine()}, "
                                   f"{os.cpu_count()} cores", "rank": rank, "distinct": args.distinct,
                                   "seed": seed(data_dir, docs, src), "runs": []}
        for i, max_cpu_loras in enumerate(args.max_cpu_loras):
            with Service(work, data_dir, max_cpu_loras) as svc:
                cold_offset = args.distinct + i * args.samples  # shards no earlier start asked
                payload["runs"].append(asyncio.run(measure(svc, docs, args, cold_offset, extras[i], src, base_too=i == 0)))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = render(payload)
    (args.out / f"many-shards-{stamp}.json").write_text(json.dumps(payload, indent=2, default=str))
    (args.out / f"many-shards-{stamp}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
