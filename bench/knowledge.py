"""Knowledge-base benchmark: N documents POSTed in a burst into one knowledge base, against the old single stream.

Starts an embedded Valkey, one `seal serve` and `--workers` `seal worker` processes in a temporary
data dir (bench/learn.py's Services, with the per-tenant quotas lifted: a burst of N learns is N
concurrent jobs, and the default quota of 16 would refuse the 17th; on CPU each engine gets cores of
its own, as `seal up` places them), and drives them as clients would. Documents come from
bench/docgen.py (`generate_documents(N, seed)`: invented facts, forward and reverse questions).

Main run (`layout: "shards"`, one knowledge base `bench-kb`, one document per job):
- the burst: N documents POSTed as fast as the API accepts them, no probes. Right after each 202 the
  document's first forward question is asked through `model: bench-kb` (streamed, in a thread of its
  own, so the next POST does not wait): instant recall = the answer is correct; the table also gives
  how often the `seal-route` header was `pending:<the document's own id>` and the seconds from the
  202 to the first streamed answer token (p50 / p95; the burst's own questions load the API too);
- every job is then waited for: its learn time (server clock, started_at → finished_at), queue wait
  (created_at → started_at), status, gate numbers, against its index N in the burst;
- then, with the workers idle: every forward and reverse question of the N documents through the
  knowledge base, closed-book (the question alone), temperature 0, 48 answer tokens, graded by
  normalized containment (workers.seal.grade.contains_answer) and token F1; accuracy over all N
  and over the first 10; the base model on the first 10 documents' questions for reference;
- routing accuracy: the share of those questions whose `seal-route` names the document's own shard
  (`bench-kb/s<n>@v<k>`, the shard read from the registry's `documents` table) or its own
  `pending:`/`context:` id;
- the canary (workers/seal/data/canary.jsonl, 24 general questions) through the knowledge base and
  through the base model, asked one after another in pairs (base, then kb) on the idle service;
- routing overhead two ways: the router's own time per request (the API's `seal_kb_route_seconds`
  histogram over the whole run, quantiles interpolated inside its buckets), and the paired
  difference in time to first token, kb − base, over the canary questions the router sent to the
  base model (the same model answers both, so the difference is resolve + route + prompt handling);
- storage per document: bytes under the adapter store for the knowledge base and its shards (every
  version, rejected candidates included; and the shard versions the current kb version serves) and
  the SQLite registry, each divided by N, measured before the old design runs.

Old design, after the main run on the same service (so neither design's learns compete with the
other's for the workers): the same first M documents POSTed one after another into a
`layout: "stream"` adapter, each POST waiting for the previous job (the stream serialises its learns
anyway); learn time per document against its index; then forward / reverse accuracy over the M
documents and the canary through the stream's final version.

Router only (no model, `--router-only-sizes`, default 1,000 and 10,000 documents): the router
scenarios of bench/knowledge_router.py over generated documents, run after the services stop.

Writes bench/results/knowledge-<timestamp>.json (every question, answer, route and job),
knowledge-<timestamp>.md (the tables, goals beside the measured values) and
knowledge-learn-time-<timestamp>.png (learn time per document against N, both designs); with
`--publish` the plot is copied to docs/images/knowledge-learn-time.png.

    .venv/bin/python bench/knowledge.py                                   # 100 documents, old design on 20
    .venv/bin/python bench/knowledge.py --workers 2 --publish
    .venv/bin/python bench/knowledge.py --documents 2 --old-documents 1   # smoke run (~10 min on 2 cores)
    .venv/bin/python bench/knowledge.py --old-documents 0 --router-only-sizes 0

Ctrl-C, or `kill -INT <pid>` for a run started in the background, stops a run and still writes the
report of what finished (marked incomplete).

A full run (100 documents, 20 in the old design) on a 2-core CPU box takes about 3-6 h: a learn
takes 48-324 s there (median 87 s at 10 documents, 177 s at 20, 2026-12-03; the long ones train
the second recipe), and 1 worker learns one document at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "data" / "squad_val.json"
sys.path.insert(0, str(REPO))

from bench_stats import median, percentile  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import QA, GeneratedDocument, generate_documents  # noqa: E402
from learn import (  # noqa: E402
    BASE,
    RESULTS,
    TERMINAL,
    Bench,
    Services,
    canary_drop,
    console,
    environment,
    make_progress,
    pooled,
    queue_seconds,
    service_env,
)
from wrappers import load_wrappers  # noqa: E402

from app.knowledge.shards import shard_label  # noqa: E402
from app.process import free_port, spawn, wait_ready  # noqa: E402
from workers.seal.datasets import draw_squad  # noqa: E402
from workers.seal.grade import contains_answer, token_f1  # noqa: E402

KB = "bench-kb"
STREAM = "bench-stream"
ANSWER_TOKENS = 48
ASK_CONCURRENCY = 8  # final questions in flight at once, as concurrent users would send them
POLL_S = 2.0  # job list polls while the burst's jobs run (one request per poll)
SETTLE_S = 60  # how long a published document may keep routing to `pending:` before it counts as stale
CANARY = REPO / "workers" / "seal" / "data" / "canary.jsonl"
DOCS_IMAGE = REPO / "docs" / "images" / "knowledge-learn-time.png"
ROUTE = re.compile(r"^(?:(?P<kb>.+)/(?P<shard>s\d+)@v(?P<version>\d+)(?:\+context:(?P<read>\d+))?"
                   r"|(?P<state>pending|context):(?P<doc>\d+)|base)$")
# How every final question is asked: served as users get it (bare, and wrapped the way users wrap it,
# with a wrapper the router was never tuned on), and each path on its own (seal-answer-from).
WAYS = {"served": None, "wrapped": None, "weights": "weights", "reading": "context"}
HELD_OUT = load_wrappers("held_out")
GOALS = {
    "forward_all": "≥ 85%", "forward_first10": "≥ 85%", "reverse_all": "≥ 50%", "canary": "within 1 of base",
    "recall": "≥ 80%", "flat": "≤ 1.2×", "routing": "≥ 95%", "learn_p50": "≤ 60 s",
    "weights_forward": "≥ 85%", "weights_reverse": "≥ 50%", "served_forward": "≥ 90% and ≥ instant recall",
    "weights_vs_reading": "≥ reading (containment and F1)",
}


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # unwind: stop the services
    # A shell starts background jobs with SIGINT ignored; restore Ctrl-C's meaning so that `kill -INT`
    # stops a long run started with nohup/setsid/& and still gets the report of what finished.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    docs = load_documents(args.source, max(args.documents, args.old_documents), args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="seal-bench-knowledge-"))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run: dict[str, Any] = {"kb": {}, "stream": {}, "router_only": []}
    interrupted, finished = False, False
    started = time.perf_counter()
    try:
        with KbServices(tmp, args.workers, args.lent_threads) as svc, make_progress() as progress:
            bench = KnowledgeBench(svc, args, progress)
            try:
                if args.warmup:
                    bench.warm_up()
                run["kb"] = bench.run_knowledge_base(docs[:args.documents])
                if args.old_documents > 0:
                    run["stream"] = bench.run_stream(docs[:args.old_documents])
            except (KeyboardInterrupt, RuntimeError, httpx.TransportError) as exc:
                # Ctrl-C, a dead seal process (Services.check) or an API that stopped answering: a long
                # run still reports what it measured before that.
                interrupted = True
                run["incomplete"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
                run["incomplete_detail"] = str(exc)[-4000:]
                console.print(f"[yellow]incomplete ({type(exc).__name__}): reporting what finished")
                run["kb"] = run["kb"] or bench.partial.get("kb", {})
                if run["kb"].get("entries") and "document" not in run["kb"]["entries"][0]:
                    with contextlib.suppress(sqlite3.Error):
                        bench.annotate_recall(run["kb"]["entries"])
                run["stream"] = run["stream"] or bench.partial.get("stream", {})
        finished = True
    finally:
        if args.keep or not finished:
            console.print(f"kept {tmp} (serve.log, worker*.log, the data dir)"
                          + ("" if finished else ": the run failed"))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    run["wall_s"] = time.perf_counter() - started
    if not interrupted and args.router_only_sizes:
        run["router_only"] = router_only(args.router_only_sizes, args.seed, args.router_only_sample)
    summary = summarise(run, args)
    report = render_report(summary, run, args)
    console.print()
    console.print(report, markup=False)
    write_results(args, stamp, docs, run, summary, report, interrupted)
    return 130 if interrupted else 0


def load_documents(source: str, n: int, seed: int) -> list[GeneratedDocument]:
    """`n` documents with their questions: invented ones (docgen, `seed`), or SQuAD paragraphs drawn with
    `seed` from the second half of SEAL's evaluation split (their own questions, all forward; no reverse
    ones exist). Until 2026-12-06 the SQuAD source ignored `seed` and posted the split's first `n`."""
    if source == "generated":
        return generate_documents(n, seed=seed)
    return [GeneratedDocument(doc_id=i, kind="squad", title=p.doc.title or p.id, text=p.doc.text,
                              forward=[QA(q.question, q.answer) for q in p.doc.probes])
            for i, p in enumerate(draw_squad(SQUAD, n, seed))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100, help="documents POSTed in the burst (default 100)")
    parser.add_argument("--old-documents", type=int, default=20,
                        help="the first M documents also learned one after another by the old single-stream "
                             "design (default 20; 0 disables)")
    parser.add_argument("--seed", type=int, default=0, help="docgen seed, or the SQuAD draw's")
    parser.add_argument("--source", choices=("generated", "squad"), default="generated",
                        help="generated: bench/docgen.py's invented documents; squad: real Wikipedia paragraphs "
                             "drawn with --seed from the second half of SEAL's evaluation split "
                             "(../shared/data/squad_val.json), with their own questions (forward only)")
    parser.add_argument("--workers", type=int, default=1, help="seal worker processes (default 1)")
    parser.add_argument("--lent-threads", type=int, default=None,
                        help="SEAL_TRAIN_LENT_THREADS for the workers (default: what `seal up` gives them)")
    parser.add_argument("--job-timeout", type=float, default=1800,
                        help="seconds one learn may run, and the longest the burst's jobs may go without one "
                             "finishing, before the rest are cancelled")
    parser.add_argument("--recall-concurrency", type=int, default=0,
                        help="at most this many instant-recall questions in flight: the burst waits for a free "
                             "slot before its next POST (default 0: no limit)")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one uncounted learn per worker first, so document 1 does not pay the worker's "
                             "one-off caches (anchor set, base canary answers)")
    parser.add_argument("--router-only-sizes", type=lambda s: [int(x) for x in s.split(",") if int(x or 0) > 0],
                        default=[1000, 10000], help="comma list of generated-document counts for the router-only "
                                                    "scenarios (bench/knowledge_router.py); 0 skips them")
    parser.add_argument("--router-only-sample", type=int, default=3000, help="questions asked per router-only size")
    parser.add_argument("--keep", action="store_true", help="leave the temporary dir (logs, data dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--publish", action="store_true", help=f"copy the plot to {DOCS_IMAGE.relative_to(REPO)}")
    args = parser.parse_args()
    if args.documents < 1 or args.workers < 1 or args.old_documents < 0:
        parser.error("--documents and --workers must be >= 1, --old-documents >= 0")
    return args


# --- the service ---------------------------------------------------------------------------------


class KbServices(Services):
    """learn.py's Services with `workers` worker processes, the per-tenant quotas lifted and, on CPU,
    each vLLM engine on cores of its own (app.cpus.place_engines, as `seal up` does)."""

    def __init__(self, work: Path, workers: int, lent_threads: int | None = None):
        super().__init__(work)
        self.workers, self.lent_threads = workers, lent_threads
        self.placement: dict[str, str] = {}

    def __enter__(self) -> KbServices:
        from app.cpus import BIND_ENV, LENT_THREADS_ENV, TRAIN_THREADS_ENV, place_engines

        self.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = self.valkey.start()
        port = free_port()
        env = service_env(self.data_dir, redis_url, port, SEAL_QUOTA_CONCURRENT_JOBS="0",
                          SEAL_QUOTA_DOCUMENTS_PER_DAY="0",
                          SEAL_WORKER_METRICS_PORT="0")  # N workers cannot all bind the default 9100
        api_env, worker_envs = env, [env] * self.workers
        if not _has_cuda():
            cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
            api_env, worker_envs = place_engines(env, cores, self.workers, lent_threads=self.lent_threads)
            if self.lent_threads is not None:
                worker_envs = [{**e, LENT_THREADS_ENV: str(self.lent_threads)} for e in worker_envs]
        self.placement = {"api": api_env.get(BIND_ENV, "auto")} | {
            f"worker-{i + 1}": f"{e.get(BIND_ENV, 'auto')} (train threads {e.get(TRAIN_THREADS_ENV, 'default')}"
                               f" + {e.get(LENT_THREADS_ENV, 0)} lent)"
            for i, e in enumerate(worker_envs)}
        try:
            seal = [sys.executable, "-m", "app.cli"]
            self.procs["serve"] = spawn([*seal, "serve"], api_env, self.work / "serve.log", cwd=REPO)
            for i, worker_env in enumerate(worker_envs):
                name = "worker" if i == 0 else f"worker-{i + 1}"
                self.procs[name] = spawn([*seal, "worker"], worker_env, self.work / f"{name}.log", cwd=REPO)
            self.url = f"http://127.0.0.1:{port}"
            with console.status(f"starting seal serve and {self.workers} seal worker(s)"):
                started = time.perf_counter()
                wait_ready(self.url, self.procs["serve"], timeout=600)
            console.print(f"service ready in {time.perf_counter() - started:.0f}s at {self.url} (logs in {self.work}); "
                          f"cores: {self.placement}")
        except BaseException:
            self.__exit__()
            raise
        return self


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class KnowledgeBench:
    """The client side of both designs: learns over HTTP, streamed closed-book questions with their route."""

    def __init__(self, svc: KbServices, args: argparse.Namespace, progress: Progress):
        self.svc = svc
        self.args = args
        self.progress = progress
        self.learn = Bench(svc)  # learn.py's client: one-at-a-time submit + poll, wait_served
        self.http = httpx.Client(base_url=svc.url, timeout=300)
        limits = httpx.Limits(max_connections=max(args.documents, ASK_CONCURRENCY) + 16)
        self.ask_http = httpx.Client(base_url=svc.url, timeout=600, limits=limits)
        self.partial: dict[str, Any] = {}

    # --- asking ---

    def ask(self, model: str, question: str, answer: str, since: float | None = None,
            messages: list[dict[str, str]] | None = None, answer_from: str | None = None) -> dict[str, Any]:
        """One streamed closed-book question: the answer graded, its seal-route, seconds to the first token.

        `since` is the perf_counter the first-token time counts from (the 202, for instant recall);
        by default the moment the request is sent. `messages` asks the question wrapped (graded against
        the same answer); `answer_from` sends the seal-answer-from header.
        """
        sent = time.perf_counter()
        since = sent if since is None else since
        body = {"model": model, "messages": messages or [{"role": "user", "content": question}],
                "max_tokens": ANSWER_TOKENS, "temperature": 0, "stream": True}
        headers = {"seal-answer-from": answer_from} if answer_from else {}
        first, parts, route, error = None, [], None, None
        try:
            with self.ask_http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply:
                route = reply.headers.get("seal-route")
                if reply.status_code != 200:
                    error = f"HTTP {reply.status_code}: {reply.read().decode(errors='replace')[:300]}"
                else:
                    for line in reply.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if chunk.get("error"):
                            error = json.dumps(chunk["error"])[:300]
                            break
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                first = first or time.perf_counter()
                                parts.append(text)
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        prediction = "".join(parts)
        return {"model": model, "question": question, "answer": answer, "prediction": prediction,
                "correct": contains_answer(prediction, answer), "f1": token_f1(prediction, answer), "route": route,
                "ttft_s": None if first is None else first - since, "seconds": time.perf_counter() - sent,
                "error": error}

    def ask_many(self, model: str, items: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
        """Ask every item ({"question", "answer", ...tags; optional "way"}) of `model`, ASK_CONCURRENCY at a
        time, in order. The way `wrapped` asks it through a held-out wrapper (a different one per question,
        in turn); `weights` and `reading` name the path with seal-answer-from."""
        task = self.progress.add_task(label, total=len(items))

        def one(item: dict[str, Any]) -> dict[str, Any]:
            way = item.get("way", "served")
            messages = None
            if way == "wrapped":
                wrapper = HELD_OUT[item.get("n", 0) % len(HELD_OUT)]
                messages, item = wrapper.wrap(item["question"]), {**item, "wrapper": wrapper.id}
            out = {**item, **self.ask(model, item["question"], item["answer"], messages=messages,
                                      answer_from=WAYS.get(way))}
            self.progress.advance(task)
            return out

        with ThreadPoolExecutor(ASK_CONCURRENCY) as pool:
            return list(pool.map(one, items))

    # --- warm-up ---

    def warm_up(self) -> None:
        """One learn per worker into throwaway knowledge bases, asked once, then deleted."""
        task = self.progress.add_task("warm-up learns (not counted)", total=self.args.workers)
        doc = generate_documents(1, seed=self.args.seed + 1_000_003)[0]

        def one(i: int) -> str:
            name = f"bench-warmup-{i}"
            try:
                job, _ = self.learn.submit(name, doc.title, doc.text, {"epochs": 1, "layout": "shards"},
                                           self.args.job_timeout)
                self.ask(name, doc.forward[0].question, doc.forward[0].answer)
                self.http.delete(f"/v1/adapters/{name}")
                return job["status"]
            except (httpx.HTTPError, TimeoutError) as exc:
                return f"{type(exc).__name__}: {exc}"[:200]
            finally:
                self.progress.advance(task)

        with ThreadPoolExecutor(self.args.workers) as pool:
            outcomes = list(pool.map(one, range(self.args.workers)))
        self.progress.console.print(f"warm-up learns: {', '.join(outcomes)}", markup=False)

    # --- the knowledge base ---

    def run_knowledge_base(self, docs: list[GeneratedDocument]) -> dict[str, Any]:
        started = time.perf_counter()
        entries = self.burst(docs)
        self.partial["kb"] = {"entries": entries}
        self.wait_jobs(entries)
        learned_s = time.perf_counter() - started
        self.annotate_recall(entries)
        settle = self.settle(entries, docs)
        storage = measure_storage(self.svc.data_dir, self.http)
        items = [{"index": e["index"], "direction": d, "question": qa.question, "answer": qa.answer}
                 for e, doc in zip(entries, docs, strict=True) for d in ("forward", "reverse")
                 for qa in getattr(doc, d)]
        asked = [{**it, "way": way, "n": n} for way in WAYS for n, it in enumerate(items)]
        answers = self.ask_many(KB, asked, "knowledge base: every question served bare and wrapped, from "
                                           "weights and read in context")
        first10 = [it for it in items if it["index"] <= 10]
        base = self.ask_many(BASE, first10, "base model: the first 10 documents' questions")
        canary = self.ask_canary(KB, "canary: base, then the knowledge base, in pairs")
        self.partial["kb_canary"] = canary
        metrics_text = self.http.get("/metrics").text
        by_index = {e["index"]: e for e in entries}
        for a in answers:
            a["route_ok"] = route_names(a["route"], by_index[a["index"]].get("document"))
        return {"entries": entries, "answers": answers, "base_first10": base, "canary": canary,
                "route_histogram": parse_histogram(metrics_text, "seal_kb_route_seconds"),
                "route_counts": parse_counter(metrics_text, "seal_kb_routes_total", "route"),
                "storage": storage, "settle": settle, "learn_phase_s": learned_s,
                "wall_s": time.perf_counter() - started, "placement": self.svc.placement}

    def annotate_recall(self, entries: list[dict[str, Any]]) -> None:
        """Each entry's document row from the registry, and whether its instant-recall route named it."""
        registry = read_documents(self.svc.data_dir / "seal.db", {e["job_id"] for e in entries if e.get("job_id")})
        for e in entries:
            e["document"] = registry.get(e.get("job_id"))
            if e.get("recall"):
                e["recall"]["route_ok"] = route_names(e["recall"]["route"], e["document"])
                e["recall"]["pending_own"] = e["recall"]["route"] == _own(e["document"], "pending")

    def burst(self, docs: list[GeneratedDocument]) -> list[dict[str, Any]]:
        """POST every document as fast as the API accepts them; ask each one's first question after its 202."""
        task = self.progress.add_task(f"burst: POST {len(docs)} documents into {KB}", total=len(docs))
        recall_task = self.progress.add_task("instant recall questions", total=len(docs))
        slots = threading.BoundedSemaphore(self.args.recall_concurrency) if self.args.recall_concurrency else None
        entries: list[dict[str, Any]] = []
        futures: list[tuple[dict[str, Any], Future]] = []

        def recall(doc: GeneratedDocument, accepted: float) -> dict[str, Any]:
            try:
                return self.ask(KB, doc.forward[0].question, doc.forward[0].answer, since=accepted)
            finally:
                if slots is not None:
                    slots.release()
                self.progress.advance(recall_task)

        pool = ThreadPoolExecutor(max(1, self.args.recall_concurrency or len(docs)))
        started = time.perf_counter()
        try:
            for i, doc in enumerate(docs):
                if slots is not None:
                    slots.acquire()
                body = {"adapter": KB, "documents": [{"title": doc.title, "text": doc.text}],
                        "options": {"layout": "shards"}}
                sent, reply, error = time.perf_counter(), None, None
                try:
                    reply = self.http.post("/v1/learn", json=body)
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                accepted = time.perf_counter()
                entry = {"index": i + 1, "doc_id": doc.doc_id, "kind": doc.kind, "title": doc.title,
                         "post_s": accepted - sent, "at_s": accepted - started,
                         "http_status": reply.status_code if reply is not None else None}
                if reply is not None and reply.status_code == 202:
                    entry["job_id"] = reply.json()["id"]
                    futures.append((entry, pool.submit(recall, doc, accepted)))
                else:
                    entry["error"] = error if reply is None else reply.text[:300]
                    if slots is not None:
                        slots.release()
                    self.progress.advance(recall_task)
                entries.append(entry)
                self.progress.advance(task)
            burst_s = time.perf_counter() - started
            for entry, future in futures:
                entry["recall"] = future.result()
        finally:
            pool.shutdown(wait=True)
        for e in entries:
            e["burst_s"] = burst_s
        refused = [e for e in entries if not e.get("job_id")]
        self.progress.console.print(f"burst: {len(entries) - len(refused)} accepted in {burst_s:.1f}s"
                                    + (f", {len(refused)} refused: {refused[0]['error']}" if refused else ""),
                                    markup=False)
        return entries

    def wait_jobs(self, entries: list[dict[str, Any]]) -> None:
        """Poll the kb's job list until every accepted document's job ends, recording each one in its entry
        as it ends; cancel a job that runs past --job-timeout, and the rest when none ends for that long."""
        by_id = {e["job_id"]: e for e in entries if e.get("job_id")}
        job_ids = list(by_id)
        timeout = self.args.job_timeout
        task = self.progress.add_task("knowledge-base learns finished", total=len(job_ids))
        waiting = set(job_ids)
        running_since: dict[str, float] = {}
        cancelled_at: dict[str, float] = {}
        last_change = time.perf_counter()
        while waiting:
            self.svc.check()
            now = time.perf_counter()
            statuses = Counter()
            for job in self.list_jobs_retrying(KB):
                if job["id"] not in waiting:
                    continue
                statuses[job["status"]] += 1
                if job["status"] in TERMINAL:
                    self.record_job(by_id[job["id"]])
                    waiting.discard(job["id"])
                    last_change = now
                    self.progress.advance(task)
                    self.progress.console.print(job_line(by_id[job["id"]]), markup=False)
                elif job["status"] == "running":
                    running_since.setdefault(job["id"], now)
            overdue = {j for j, t in running_since.items() if j in waiting and now - t > timeout}
            if now - last_change > timeout:
                overdue |= waiting
            for job_id in overdue - set(cancelled_at):
                self.http.post(f"/v1/learn/{job_id}/cancel")
                cancelled_at[job_id] = now
                self.progress.console.print(f"cancelled {job_id}: over --job-timeout {timeout:.0f}s", markup=False)
            stuck = [j for j in waiting if j in cancelled_at and now - cancelled_at[j] > 300]
            for job_id in stuck:  # cancelled and still not terminal: report it as it stands
                self.record_job(by_id[job_id])
                waiting.discard(job_id)
                self.progress.advance(task)
            self.progress.update(task, description="knowledge-base learns finished ("
                                 + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()) if k not in TERMINAL) + ")")
            if waiting:
                time.sleep(POLL_S)

    def record_job(self, entry: dict[str, Any]) -> None:
        job = self.http.get(f"/v1/learn/{entry['job_id']}").raise_for_status().json()
        entry["job"], entry["job_metrics"] = job_record(job), job.get("metrics") or {}

    def list_jobs_retrying(self, adapter: str, attempts: int = 6) -> list[dict[str, Any]]:
        """list_jobs, riding out a few seconds of refused connections; a dead server fails with its log."""
        for attempt in range(attempts):
            try:
                return self.list_jobs(adapter)
            except httpx.TransportError:
                if attempt == attempts - 1:
                    raise
                time.sleep(5)
                self.svc.check()
        return []

    def list_jobs(self, adapter: str) -> list[dict[str, Any]]:
        out, offset = [], 0
        while True:
            page = self.http.get("/v1/learn", params={"adapter": adapter, "limit": 200, "offset": offset})
            body = page.raise_for_status().json()
            out += body["data"]
            offset += len(body["data"])
            if not body["data"] or offset >= body["total"]:
                return out

    def settle(self, entries: list[dict[str, Any]], docs: list[GeneratedDocument]) -> dict[str, Any]:
        """Seconds until the last published document answers from its shard (the API swaps on the publish
        event). Asked with `seal-answer-from: weights`: under `auto` a document graded on cloze is read."""
        last = next((e for e in reversed(entries) if (e.get("job") or {}).get("status") == "published"), None)
        if last is None:
            return {"seconds": None, "route": None, "note": "no job published"}
        question = docs[last["index"] - 1].forward[0]
        started, route = time.perf_counter(), None
        while time.perf_counter() - started < SETTLE_S:
            route = self.ask(KB, question.question, question.answer, answer_from="weights")["route"]
            if route and ROUTE.match(route) and ROUTE.match(route)["shard"]:
                return {"seconds": time.perf_counter() - started, "route": route}
            time.sleep(1)
        return {"seconds": None, "route": route, "note": f"still {route!r} after {SETTLE_S}s"}

    def ask_canary(self, model: str, label: str, base: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The canary through `model`, each question right after the base model's (or beside `base`'s answers)."""
        rows = [json.loads(line) for line in CANARY.read_text().splitlines() if line.strip()]
        task = self.progress.add_task(label, total=len(rows))
        out = []
        for i, row in enumerate(rows):
            b = base[i]["base"] if base is not None else self.ask(BASE, row["question"], row["answer"])
            out.append({"question": row["question"], "answer": row["answer"], "base": b,
                        "model": self.ask(model, row["question"], row["answer"])})
            self.progress.advance(task)
        return out

    # --- the old design ---

    def run_stream(self, docs: list[GeneratedDocument]) -> dict[str, Any]:
        """The same documents into one single-stream adapter, each learn after the previous one ends."""
        started = time.perf_counter()
        task = self.progress.add_task(f"old design: {len(docs)} learns into {STREAM}, one after another",
                                      total=len(docs))
        entries: list[dict[str, Any]] = []
        self.partial["stream"] = {"entries": entries}
        for i, doc in enumerate(docs):
            try:
                job, seconds = self.learn.submit(STREAM, doc.title, doc.text, {"layout": "stream"},
                                                 self.args.job_timeout)
            except (httpx.HTTPStatusError, TimeoutError) as exc:
                job, seconds = {"status": "failed", "error": str(exc)[:300], "metrics": {}}, None
            entries.append({"index": i + 1, "doc_id": doc.doc_id, "title": doc.title, "job_id": job.get("id"),
                            "post_to_end_s": seconds, "job": job_record(job), "job_metrics": job.get("metrics") or {}})
            self.progress.console.print("stream " + job_line(entries[-1]), markup=False)
            self.progress.advance(task)
        adapter = self.http.get(f"/v1/adapters/{STREAM}")
        version = adapter.json().get("current_version") if adapter.status_code == 200 else None
        model = STREAM
        if version is None:
            model = BASE  # nothing published: the name serves nothing, a client gets the base model's answers
        elif self.learn.wait_served(STREAM, version) is None:
            console.print(f"[yellow]{STREAM}@v{version} not listed by /v1/models after 120 s; asking anyway")
        items = [{"index": e["index"], "direction": d, "question": qa.question, "answer": qa.answer}
                 for e, doc in zip(entries, docs, strict=True) for d in ("forward", "reverse")
                 for qa in getattr(doc, d)]
        answers = self.ask_many(model, items, f"old design: every question through {model}")
        canary = self.ask_canary(model, f"canary through {model}", self.partial.get("kb_canary"))
        return {"entries": entries, "answers": answers, "canary": canary, "version": version, "model": model,
                "storage": {"store_bytes": dir_bytes(self.svc.data_dir / "adapters" / STREAM)},
                "wall_s": time.perf_counter() - started}


# --- job and registry helpers ----------------------------------------------------------------------


def _parse_time(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")) if s else None


def job_record(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report keeps of a job: status, times (server clock), shards, gate canary numbers."""
    if job is None:
        return None
    metrics = job.get("metrics") or {}
    started, finished = _parse_time(job.get("started_at")), _parse_time(job.get("finished_at"))
    gates = [(d.get("gate") or {}).get("numbers") or {} for d in metrics.get("documents") or []]
    return {
        "id": job.get("id"), "status": job["status"], "version": job.get("version"), "error": job.get("error"),
        "created_at": job.get("created_at"), "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "learn_s": (finished - started).total_seconds() if started and finished else None,
        "queue_s": queue_seconds(job) if job.get("created_at") else None,
        "stage_seconds": metrics.get("stage_seconds", {}), "shards": metrics.get("shards", []),
        "canary_drop": canary_drop(metrics), "shard_documents": (metrics.get("recipe") or {}).get("shard_documents"),
        "canary": [{k: g.get(k) for k in ("canary_before", "canary_after")} for g in gates],
    }


def job_line(entry: dict[str, Any]) -> str:
    rec, index = entry.get("job") or {}, entry["index"]
    learn = f"{rec['learn_s']:6.1f}s" if rec.get("learn_s") is not None else "   —   "
    queue = f"queued {rec['queue_s']:.0f}s" if rec.get("queue_s") is not None else ""
    shards = ",".join(f"{s['shard']}{'@v' + str(s['version']) if s.get('version') else ' rejected'}"
                      for s in rec.get("shards") or [])
    drop = rec.get("canary_drop")
    return (f"#{index:<4} {rec.get('status', '?'):<9} learn {learn} {queue:<12} {shards}  canary "
            f"-{'?' if drop is None else drop}" + (f"  {str(rec['error'])[:100]}" if rec.get("error") else ""))


def read_documents(db: Path, job_ids: set[str]) -> dict[str, dict[str, Any]]:
    """job id → its document's registry row (id, shard key, state); the registry is read-only here."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT id, job_id, shard, state FROM documents").fetchall()
    finally:
        con.close()
    return {job: {"id": doc_id, "shard": shard, "shard_label": shard_label(shard) if shard else None, "state": state}
            for doc_id, job, shard, state in rows if job in job_ids}


def _own(document: dict[str, Any] | None, state: str) -> str | None:
    return None if document is None else f"{state}:{document['id']}"


def route_names(route: str | None, document: dict[str, Any] | None) -> bool:
    """Whether a seal-route header names the document: its own shard, or its own pending/context id."""
    match = ROUTE.match(route or "")
    if match is None or document is None:
        return False
    if match["shard"]:
        return match["kb"] == KB and match["shard"] == document["shard_label"]
    return match["doc"] is not None and int(match["doc"]) == document["id"]


def route_kind(route: str | None) -> str:
    match = ROUTE.match(route or "")
    if match is None:
        return "none" if not route else "other"
    if match["shard"]:
        return "shard+context" if match["read"] else "shard"
    return match["state"] or "base"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure_storage(data_dir: Path, http: httpx.Client) -> dict[str, Any]:
    """Bytes of the kb and its shards in the adapter store (all versions; the current version's shard
    set) and of the SQLite registry (with its WAL)."""
    store = data_dir / "adapters"
    dirs = [store / KB, *sorted(store.glob(f"{glob_escape(KB)}+s*"))]
    serving = sum(dir_bytes(store / shard / f"v{version}") for shard, version in serving_shards(http).items())
    db, wal = data_dir / "seal.db", data_dir / "seal.db-wal"
    db_file = db.stat().st_size if db.exists() else 0
    wal_file = wal.stat().st_size if wal.exists() else 0
    return {"store_bytes": sum(dir_bytes(d) for d in dirs), "serving_bytes": serving, "shard_dirs": len(dirs) - 1,
            "db_bytes": db_logical_bytes(db), "db_file_bytes": db_file, "wal_bytes": wal_file}


def serving_shards(http: httpx.Client) -> dict[str, int]:
    """The current version's shard set (shard key → version), from the kb's document listing."""
    shards: dict[str, int] = {}
    offset = 0
    while True:
        reply = http.get(f"/v1/adapters/{KB}/documents", params={"limit": 200, "offset": offset})
        if reply.status_code != 200:
            return shards
        page = reply.json()
        for doc in page["data"]:
            if doc["shard"]:
                label, _, version = doc["shard"].partition("@v")
                shards[f"{KB}+{label}"] = int(version)
        offset += len(page["data"])
        if not page["data"] or offset >= page["total"]:
            return shards


def db_logical_bytes(db: Path) -> int | None:
    """The registry's size as SQLite sees it, WAL frames included (pages in use × page size): the files
    alone mislead, since an un-checkpointed database is a 4 KiB file beside a WAL of any size."""
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        pages, size, free = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size",
                                                                                "freelist_count"))
    finally:
        con.close()
    return (pages - free) * size


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


# --- /metrics ------------------------------------------------------------------------------------


def parse_histogram(text: str, name: str) -> dict[str, Any]:
    """A histogram's cumulative buckets (le → count), its count and sum from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets[float(sample.labels["le"])] = buckets.get(float(sample.labels["le"]), 0) + sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
            elif sample.name == f"{name}_sum":
                total += sample.value
    return {"buckets": sorted(buckets.items()), "count": count, "sum": total}


def parse_counter(text: str, name: str, label: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == name.removesuffix("_total"):
            for sample in family.samples:
                if sample.name == name:
                    out[sample.labels.get(label, "")] += sample.value
    return dict(out)


def histogram_quantile(hist: dict[str, Any], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket that holds the q-th observation."""
    buckets, count = hist.get("buckets") or [], hist.get("count") or 0
    if not count:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: all that can be said is "at least"
            return lower + (upper - lower) * ((rank - below) / (cumulative - below) if cumulative > below else 1)
        lower, below = upper, cumulative
    return lower


# --- router only ---------------------------------------------------------------------------------


def router_only(sizes: list[int], seed: int, sample: int) -> list[dict[str, Any]]:
    """bench/knowledge_router.py's router (today's, `after`) over `size` generated documents per size,
    asked bare and through the held-out wrappers (no model, no server)."""
    import knowledge_router as kr

    general, canary = kr.negative_cases()
    ways = [w for w in kr.askings() if w.split in ("bare", "held_out")]
    candidate = kr.candidates()["after"]
    generated = generate_documents(max(sizes), seed=seed)
    out = []
    for size in sizes:
        docs, cases = kr.generated(generated[:size])
        if len(cases) > sample:
            cases = random.Random(seed).sample(cases, sample)
        outcomes, stats = kr.run_scenario(kr.Scenario(f"{size:,} generated", [kr.Group(docs, cases)]), candidate,
                                          ways, general, canary, sample)
        out += [{"documents": size, "split": split, **kr.rates(outcomes, candidate.lines, split), **stats}
                for split in ("bare", "held_out")]
    return out


# --- summary and report --------------------------------------------------------------------------


def decile_ratio(jobs: list[tuple[int, float]], n: int) -> dict[str, Any] | None:
    """Median learn time of the last tenth of the N indices over the first tenth's (docs 91-100 / 1-10 at N = 100)."""
    if not jobs:
        return None
    d = max(1, n // 10)
    first = median([s for i, s in jobs if i <= d])
    last = median([s for i, s in jobs if i > n - d])
    return {"first": first, "last": last, "ratio": last / first if first and last is not None else None,
            "first_docs": f"1–{d}" if d > 1 else "1", "last_docs": f"{n - d + 1}–{n}" if d > 1 else str(n)}


def learn_times(entries: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(index, learn seconds) of every job the worker finished with a verdict (published or rejected)."""
    return [(e["index"], e["job"]["learn_s"]) for e in entries
            if e.get("job") and e["job"]["status"] in ("published", "rejected") and e["job"]["learn_s"] is not None]


def design_summary(part: dict[str, Any], first_n: int = 10) -> dict[str, Any]:
    entries, answers = part.get("entries") or [], part.get("answers") or []
    jobs = [e["job"] for e in entries if e.get("job")]
    times = learn_times(entries)

    def acc(direction: str, limit: int | None = None, way: str = "served") -> dict | None:
        return pooled([a for a in answers if a["direction"] == direction and a.get("way", "served") == way
                       and (limit is None or a["index"] <= limit)])

    canary = part.get("canary") or []
    drops = [j["canary_drop"] for j in jobs if j.get("canary_drop") is not None]
    return {
        "documents": len(entries), "accepted": sum(1 for e in entries if e.get("job_id")),
        "published": sum(j["status"] == "published" for j in jobs), "rejected": sum(j["status"] == "rejected" for j in jobs),
        "failed": sum(j["status"] in ("failed", "cancelled") for j in jobs) + sum(1 for e in entries if not e.get("job")),
        "forward_all": acc("forward"), "forward_first10": acc("forward", first_n),
        "reverse_all": acc("reverse"), "reverse_first10": acc("reverse", first_n),
        **{f"{way}_{d}": acc(d, way=way) for way in WAYS for d in ("forward", "reverse")},
        "canary_base": sum(c["base"]["correct"] for c in canary) if canary else None,
        "canary_model": sum(c["model"]["correct"] for c in canary) if canary else None,
        "canary_n": len(canary),
        "gate_canary_worst": max(drops) if drops else None, "gate_canary_over_1": sum(d > 1 for d in drops),
        "learn_p50": median([s for _, s in times]), "learn_p95": percentile([s for _, s in times], 95),
        "learn_max": max((s for _, s in times), default=None), "flat": decile_ratio(times, len(entries)),
        "queue_p50": median([j.get("queue_s") for j in jobs]),
        "queue_max": max((j["queue_s"] for j in jobs if j.get("queue_s") is not None), default=None),
        "wall_s": part.get("wall_s"),
    }


def summarise(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    kb, stream = run.get("kb") or {}, run.get("stream") or {}
    out = {"kb": design_summary(kb), "stream": design_summary(stream) if stream else None}
    s = out["kb"]
    entries, answers = kb.get("entries") or [], kb.get("answers") or []
    recalls = [e["recall"] for e in entries if e.get("recall")]
    s["recall"] = pooled(recalls)
    s["recall_pending_own"] = sum(bool(r.get("pending_own")) for r in recalls)
    s["recall_routes"] = dict(Counter(route_kind(r["route"]) for r in recalls))
    ttft = [r["ttft_s"] for r in recalls if r["ttft_s"] is not None]
    s["recall_ttft_p50"], s["recall_ttft_p95"] = percentile(ttft, 50), percentile(ttft, 95)
    s["recall_no_token"] = len(recalls) - len(ttft)
    served = [a for a in answers if a.get("way", "served") == "served"]
    wrapped = [a for a in answers if a.get("way") == "wrapped"]
    s["routing"] = pooled([{"correct": bool(a.get("route_ok")), "f1": 0.0} for a in served])
    s["routing_forward"] = pooled([{"correct": bool(a.get("route_ok")), "f1": 0.0} for a in served
                                   if a["direction"] == "forward"])
    s["routing_reverse"] = pooled([{"correct": bool(a.get("route_ok")), "f1": 0.0} for a in served
                                   if a["direction"] == "reverse"])
    s["routing_wrapped"] = pooled([{"correct": bool(a.get("route_ok")), "f1": 0.0} for a in wrapped])
    s["final_routes"] = dict(Counter(route_kind(a["route"]) for a in served))
    s["wrapped_routes"] = dict(Counter(route_kind(a["route"]) for a in wrapped))
    s["not_learned"] = sum(1 for a in answers if a.get("way") == "weights" and "not_learned" in (a.get("error") or ""))
    stages: dict[str, list[float]] = {}
    for e in entries:
        for doc in (e.get("job_metrics") or {}).get("documents") or []:
            for stage, seconds in (doc.get("stage_seconds") or {}).items():
                stages.setdefault(stage, []).append(seconds)
    s["stage_p50"] = {stage: median(xs) for stage, xs in stages.items()}
    s["errors"] = (sum(1 for a in answers if a.get("error") and "not_learned" not in a["error"])
                   + sum(1 for r in recalls if r.get("error")))
    base = kb.get("base_first10") or []
    s["base_forward_first10"] = pooled([a for a in base if a["direction"] == "forward"])
    s["base_reverse_first10"] = pooled([a for a in base if a["direction"] == "reverse"])
    hist = kb.get("route_histogram") or {}
    s["router_p50"], s["router_p95"] = histogram_quantile(hist, 0.5), histogram_quantile(hist, 0.95)
    s["router_observations"] = hist.get("count")
    pairs = [c["model"]["ttft_s"] - c["base"]["ttft_s"] for c in kb.get("canary") or []
             if c["model"]["route"] == "base" and c["model"]["ttft_s"] is not None and c["base"]["ttft_s"] is not None]
    s["overhead_p50"], s["overhead_p95"], s["overhead_pairs"] = percentile(pairs, 50), percentile(pairs, 95), len(pairs)
    s["canary_routes"] = dict(Counter(route_kind(c["model"]["route"]) for c in kb.get("canary") or []))
    posts = [e["post_s"] for e in entries]
    s["post_p50"], s["burst_s"] = percentile(posts, 50), entries[0]["burst_s"] if entries and "burst_s" in entries[0] else None
    s["storage"] = kb.get("storage")
    s["anomalies"] = anomalies(kb)
    out["wall_s"] = run.get("wall_s")
    out["goals"] = goals(s)
    return out


def anomalies(kb: dict[str, Any]) -> list[str]:
    """Things the service did that the design says it should not (for the report, not for the goals)."""
    notes = []
    for e in kb.get("entries") or []:
        job, doc, recall = e.get("job") or {}, e.get("document"), e.get("recall") or {}
        if recall.get("route") is not None and ROUTE.match(recall["route"]) is None:
            notes.append(f"#{e['index']}: unexpected seal-route {recall['route']!r} after the 202")
        elif recall and not recall.get("route"):
            notes.append(f"#{e['index']}: no seal-route header on the instant-recall answer ({recall.get('error')})")
        if job.get("status") == "published" and doc and doc["state"] != "learned":
            notes.append(f"#{e['index']}: job published but its document's state is {doc['state']!r}")
        if job.get("status") == "rejected" and doc and doc["state"] != "context":
            notes.append(f"#{e['index']}: job rejected but its document's state is {doc['state']!r}")
    for a in kb.get("answers") or []:
        if a.get("way", "served") not in ("served", "wrapped"):
            continue
        if route_kind(a["route"]) == "pending":
            notes.append(f"#{a['index']}: still routed {a['route']!r} after every job ended: {a['question']!r}")
        elif route_kind(a["route"]) in ("other", "none"):
            notes.append(f"#{a['index']}: seal-route {a['route']!r} ({a.get('error')})")
    settle = kb.get("settle") or {}
    if settle.get("note") and settle.get("note") != "no job published":
        notes.append(f"settle: {settle['note']}")
    return notes


def goals(s: dict[str, Any]) -> dict[str, bool | None]:
    def at_least(stat: dict | None, target: float) -> bool | None:
        return None if not stat else stat["accuracy"] >= target

    flat = (s.get("flat") or {}).get("ratio")
    canary = None if s["canary_base"] is None else s["canary_model"] >= s["canary_base"] - 1
    reading, weights, served = s.get("reading_forward"), s.get("weights_forward"), s.get("forward_all")
    recall = s.get("recall")
    return {"forward_all": at_least(s["forward_all"], 0.85), "forward_first10": at_least(s["forward_first10"], 0.85),
            "reverse_all": at_least(s["reverse_all"], 0.5), "canary": canary, "recall": at_least(s["recall"], 0.8),
            "flat": None if flat is None else flat <= 1.2, "routing": at_least(s["routing"], 0.95),
            "learn_p50": None if s.get("learn_p50") is None else s["learn_p50"] <= 60,
            "weights_forward": at_least(weights, 0.85), "weights_reverse": at_least(s.get("weights_reverse"), 0.5),
            "served_forward": None if not served or not recall else (
                served["accuracy"] >= 0.9 and served["accuracy"] >= recall["accuracy"]),
            "weights_vs_reading": None if not weights or not reading else (
                weights["accuracy"] >= reading["accuracy"] and weights["f1"] >= reading["f1"])}


DASH = "—"


def _acc(stat: dict | None, f1: bool = True) -> str:
    if not stat:
        return DASH
    return f"{stat['accuracy']:.0%} ({stat['correct']}/{stat['questions']})" + (f", F1 {stat['f1']:.2f}" if f1 else "")


def _sec(v: float | None, digits: int = 1) -> str:
    return DASH if v is None else f"{v:.{digits}f} s"


def _ms(v: float | None) -> str:
    return DASH if v is None else f"{v * 1000:.2f} ms"


def _bytes(v: float | None) -> str:
    if v is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return DASH


def _met(ok: bool | None) -> str:
    return DASH if ok is None else ("yes" if ok else "**no**")


def render_report(summary: dict[str, Any], run: dict[str, Any], args: argparse.Namespace) -> str:
    k, st, g = summary["kb"], summary["stream"] or {}, summary["goals"]
    n = k["documents"]
    kb_part = run.get("kb") or {}
    flat_k, flat_s = k.get("flat") or {}, st.get("flat") or {}
    storage = k.get("storage") or {}
    stream_store = ((run.get("stream") or {}).get("storage") or {}).get("store_bytes")

    def per_doc(v: float | None, docs: int) -> str:
        return DASH if v is None or not docs else _bytes(v / docs)

    def flat(f: dict) -> str:
        if not f or f.get("ratio") is None:
            return DASH
        return f"{f['ratio']:.2f}× ({_sec(f['last'])} for docs {f['last_docs']} / {_sec(f['first'])} for docs {f['first_docs']})"

    def canary(s: dict) -> str:
        if s.get("canary_base") is None:
            return DASH
        return (f"{s['canary_model']} of {s['canary_n']} (base {s['canary_base']}; "
                f"{s['canary_model'] - s['canary_base']:+d})")

    rows = [
        ("documents", f"{n}, POSTed in a burst into `{KB}` ({args.workers} worker(s))",
         (f"{st.get('documents', 0)}, one after another into `{STREAM}`"
          + (" (no version published: answered by the base model)"
             if (run.get("stream") or {}).get("model") == BASE else "")) if st else "not run", "", None),
        ("jobs published / rejected / failed or cancelled", f"{k['published']} / {k['rejected']} / {k['failed']}",
         f"{st['published']} / {st['rejected']} / {st['failed']}" if st else DASH, "", None),
        ("forward accuracy, all documents", _acc(k["forward_all"]), _acc(st.get("forward_all")),
         GOALS["forward_all"], g["forward_all"]),
        ("forward accuracy, first 10 documents", _acc(k["forward_first10"]), _acc(st.get("forward_first10")),
         GOALS["forward_first10"], g["forward_first10"]),
        ("reverse accuracy, all documents", _acc(k["reverse_all"]), _acc(st.get("reverse_all")),
         GOALS["reverse_all"], g["reverse_all"]),
        ("reverse accuracy, first 10 documents", _acc(k["reverse_first10"]), _acc(st.get("reverse_first10")), "", None),
        ("by route, forward: reading (base model + document) / from weights / served bare / served wrapped",
         " / ".join(_acc(k.get(f"{w}_forward")) for w in ("reading", "weights", "served", "wrapped")), DASH,
         f"weights {GOALS['weights_forward']}, ≥ reading", g["weights_forward"]),
        ("by route, reverse: reading / from weights / served bare / served wrapped",
         " / ".join(_acc(k.get(f"{w}_reverse")) for w in ("reading", "weights", "served", "wrapped")), DASH,
         f"weights {GOALS['weights_reverse']}", g["weights_reverse"]),
        ("from weights ≥ reading, forward, containment and F1", "", DASH, GOALS["weights_vs_reading"],
         g["weights_vs_reading"]),
        ("served forward (auto) ≥ 90% and ≥ instant recall", _acc(k["forward_all"], False), DASH,
         GOALS["served_forward"], g["served_forward"]),
        ("questions a document could not answer from weights (409 not_learned: rejected)", _n(k.get("not_learned")),
         DASH, "", None),
        ("reference: the base model on the first 10 documents' questions (forward; reverse)",
         f"{_acc(k['base_forward_first10'], False)}; {_acc(k['base_reverse_first10'], False)}", "", "", None),
        ("instant recall: correct right after the 202", _acc(k["recall"]), "n/a", GOALS["recall"], g["recall"]),
        ("instant recall: routed `pending:<own id>`", f"{k['recall_pending_own']} of {len(kb_part.get('entries') or [])} "
         f"(routes: {_counts(k['recall_routes'])})", "n/a", "", None),
        ("instant recall: 202 → first answer token, p50 / p95",
         f"{_sec(k['recall_ttft_p50'], 2)} / {_sec(k['recall_ttft_p95'], 2)}"
         + (f" ({k['recall_no_token']} without a token)" if k["recall_no_token"] else ""), "n/a", "", None),
        ("routing accuracy: own shard or own id (forward; reverse)", _acc(k["routing"], False)
         + f" ({_acc(k['routing_forward'], False)}; {_acc(k['routing_reverse'], False)})", "n/a (one adapter)",
         GOALS["routing"], g["routing"]),
        ("routes of those questions", _counts(k["final_routes"]), DASH, "", None),
        ("routing accuracy, asked through a held-out wrapper (routes)", _acc(k.get("routing_wrapped"), False)
         + f" ({_counts(k.get('wrapped_routes') or {})})", "n/a", GOALS["routing"], None),
        ("canary, 24 general questions, closed-book (through the design vs base)",
         canary(k) + (f"; routes: {_counts(k['canary_routes'])}" if k.get("canary_routes") else ""), canary(st),
         GOALS["canary"], g["canary"]),
        ("gate: worst canary loss of a job (jobs losing > 1)",
         f"{_n(k['gate_canary_worst'])} of 24 ({k['gate_canary_over_1']})" if k["gate_canary_worst"] is not None else DASH,
         f"{_n(st['gate_canary_worst'])} of 24 ({st['gate_canary_over_1']})"
         if st and st.get("gate_canary_worst") is not None else DASH, "", None),
        ("routing overhead: router time per request, p50 / p95 (histogram)",
         f"{_ms(k['router_p50'])} / {_ms(k['router_p95'])} ({_n(k['router_observations'])} requests)", "n/a", "", None),
        ("routing overhead: first token kb − base, canary sent to base, p50 / p95",
         f"{_ms(k['overhead_p50'])} / {_ms(k['overhead_p95'])} ({k['overhead_pairs']} pairs)", "n/a", "", None),
        ("learn time per document (started → finished), p50 / p95 / max",
         f"{_sec(k['learn_p50'])} / {_sec(k['learn_p95'])} / {_sec(k['learn_max'])}",
         f"{_sec(st.get('learn_p50'))} / {_sec(st.get('learn_p95'))} / {_sec(st.get('learn_max'))}" if st else DASH,
         "", None),
        ("learn time flat in N: median last decile ÷ first decile", flat(flat_k), flat(flat_s), GOALS["flat"], g["flat"]),
        ("learn p50 ≤ 60 s", _sec(k["learn_p50"]), DASH, GOALS["learn_p50"], g["learn_p50"]),
        ("where a learn's seconds go, p50 per document (stages)",
         ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in sorted((k.get("stage_p50") or {}).items()))
         or DASH, DASH, "", None),
        ("queue wait (created → started), p50 / max", f"{_sec(k['queue_p50'])} / {_sec(k['queue_max'])}",
         f"{_sec(st.get('queue_p50'))} / {_sec(st.get('queue_max'))}" if st else DASH, "", None),
        ("burst: POST → 202 p50; all POSTs", f"{_sec(k['post_p50'], 3)}; {_sec(k['burst_s'])}", "n/a", "", None),
        ("storage per document: adapter store, every version (serving set)",
         f"{per_doc(storage.get('store_bytes'), n)} ({per_doc(storage.get('serving_bytes'), n)}; "
         f"{storage.get('shard_dirs', DASH)} shards)", per_doc(stream_store, st.get("documents", 0)) if st else DASH,
         "", None),
        ("storage per document: registry, pages in use (files: database + WAL, whole)",
         f"{per_doc(storage.get('db_bytes'), n)} ({_bytes(storage.get('db_file_bytes'))} + "
         f"{_bytes(storage.get('wal_bytes'))})", "", "", None),
        ("wall time (this design's phase; whole run)", f"{_sec(k['wall_s'], 0)}; {_sec(summary['wall_s'], 0)}",
         _sec(st.get("wall_s"), 0) if st else DASH, "", None),
    ]
    lines = [f"**Incomplete run** ({run['incomplete']}): the rows cover what finished before it stopped.", ""] \
        if run.get("incomplete") else []
    lines += ["| measure | knowledge base (`layout: shards`) | old design (`layout: stream`) | goal | met |",
             "|:---|:---|:---|:---|:---|"]
    lines += [f"| {m} | {a} | {b} | {goal} | {_met(ok) if goal else ''} |" for m, a, b, goal, ok in rows]
    lines += ["", learn_time_table(run), "", NOTES.format(tokens=ANSWER_TOKENS, kb=KB)]
    if run.get("router_only"):
        lines += ["", router_table(run["router_only"])]
    elif not args.router_only_sizes:
        lines += ["", "Router only: skipped (`--router-only-sizes 0`); see `.venv/bin/python bench/knowledge_router.py`."]
    notes = k.get("anomalies") or []
    if notes:
        lines += ["", f"Unexpected service behaviour ({len(notes)}):", ""]
        lines += [f"- {note}" for note in notes[:20]] + ([f"- … {len(notes) - 20} more in the JSON"] if len(notes) > 20 else [])
    return "\n".join(lines)


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or DASH


def _n(v: float | None) -> str:
    return DASH if v is None else f"{v:g}"


NOTES = """\
Questions are asked closed-book (the question alone) through `/v1/chat/completions`, temperature 0, {tokens} \
answer tokens, streamed; accuracy is normalized containment of the gold answer (workers.seal.grade), F1 the \
mean token F1, pooled over questions. Forward questions name the document's subject; reverse ones ask for the \
subject without naming it. Instant recall: each document's first forward question, sent the moment its 202 \
arrived, while the burst's other POSTs and questions were still coming in. Routing accuracy: the `seal-route` \
header named the document's own shard (`{kb}/s<n>@v<k>`, the shard from the registry) or its own \
`pending:`/`context:` id; a rejected document is answered in context. Canary: the 24 questions of \
workers/seal/data/canary.jsonl, each asked of the base model and then of the design, one pair at a time on the \
idle service. Router time: the API's `seal_kb_route_seconds` histogram over every knowledge-base request of \
the run, quantiles interpolated inside its buckets; first token kb − base: the same pairs, over the canary \
questions the router sent to the base model (same model both times, so the difference is what the knowledge \
base adds before generation). Learn time: the job's started_at → finished_at (server clock), for jobs that \
ended published or rejected; deciles by the document's index in the burst (1-based). Storage: the adapter \
store's directories of the knowledge base and its shards (every version written, rejected candidates \
included; in brackets the shard versions the current kb version serves), the old design's adapter \
directory, and the registry's pages in use (the whole registry: jobs, events, metrics, documents; the \
warm-up learns' rows included), each divided by the documents learned into that design; measured before the \
old design runs."""


def learn_time_table(run: dict[str, Any]) -> str:
    """Median learn time per block of indices (a tenth of N wide), both designs side by side."""
    kb = learn_times((run.get("kb") or {}).get("entries") or [])
    stream = learn_times((run.get("stream") or {}).get("entries") or [])
    n = max([i for i, _ in kb + stream] or [0])
    if not n:
        return "Learn time against N: no learn finished."
    width = max(1, max(i for i, _ in kb) // 10) if kb else 1
    lines = ["Learn time against N (median seconds, started → finished; jobs in the block):", "",
             "| documents | knowledge base | old design |", "|:---|---:|---:|"]
    for lo in range(1, n + 1, width):
        hi = min(n, lo + width - 1)

        def cell(times: list[tuple[int, float]], lo: int = lo, hi: int = hi) -> str:
            xs = [s for i, s in times if lo <= i <= hi]
            return f"{median(xs):.1f} ({len(xs)})" if xs else DASH

        lines.append(f"| {lo}–{hi} | {cell(kb)} | {cell(stream)} |" if hi > lo else f"| {lo} | {cell(kb)} | {cell(stream)} |")
    return "\n".join(lines)


def router_table(rows: list[dict[str, Any]]) -> str:
    from knowledge_router import pct

    lines = ["Router only (bench/knowledge_router.py's router, no model): generated documents and a seeded sample of "
             "their questions, asked bare and through the 12 held-out wrappers; general questions are the anchors "
             "and the router bench's own list.", "",
             "| documents | asked | questions | reach (fwd / rev) | general → base | canary → base | build s "
             "| route p50 ms | route p95 ms |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        lines.append(f"| {s['documents']:,} | {s['split']} | {s['questions']:,} | {pct(s['reached'])} "
                     f"({pct(s['forward'])} / {pct(s['reverse'])}) | {pct(s['general_base'])} "
                     f"| {pct(s['canary_base'])} | {s['build_s']:.2f} | {s['route_p50_ms']:.2f} | {s['route_p95_ms']:.2f} |")
    return "\n".join(lines)


def plot_learn_times(run: dict[str, Any], path: Path) -> bool:
    """Learn time per document against its index, both designs (published filled, rejected hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    kb_jobs = [e["job"] for e in (run.get("kb") or {}).get("entries") or [] if e.get("job")]
    k = next((j["shard_documents"] for j in kb_jobs if j.get("shard_documents")), None)
    for key, label, color in (("kb", f"knowledge base (shards{'' if k is None else f', K = {k}'})", "tab:blue"),
                              ("stream", "old design (single stream + replay)", "tab:orange")):
        entries = (run.get(key) or {}).get("entries") or []
        times = learn_times(entries)
        if not times:
            continue
        drawn = True
        status = {e["index"]: e["job"]["status"] for e in entries if e.get("job")}
        for state, fill in (("published", color), ("rejected", "none")):
            pts = [(i, s) for i, s in times if status.get(i) == state]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=18, facecolors=fill, edgecolors=color,
                           label=f"{label}{'' if state == 'published' else ', rejected'}")
        window = max(1, len(times) // 10)
        smooth = [(i, median([s for j, s in times if abs(j - i) <= window // 2])) for i, _ in times]
        ax.plot(*zip(*smooth, strict=True), color=color, linewidth=1.2)
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("document index N (order POSTed)")
    ax.set_ylabel("learn time, started → finished (s)")
    ax.set_title("Learn time per document against N (line: running median)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


def write_results(args: argparse.Namespace, stamp: str, docs: list[GeneratedDocument], run: dict[str, Any],
                  summary: dict[str, Any], report: str, interrupted: bool) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"knowledge-{stamp}.json", args.out / f"knowledge-{stamp}.md"
    png_path = args.out / f"knowledge-learn-time-{stamp}.png"
    payload = {
        "created": datetime.now().astimezone().isoformat(), "interrupted": interrupted,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": environment(), "answer_tokens": ANSWER_TOKENS, "goals": GOALS,
        "documents": [{"doc_id": d.doc_id, "kind": d.kind, "title": d.title, "text": d.text} for d in docs],
        "summary": summary, "run": run,
    }
    json_path.write_text(json.dumps(payload, indent=1, default=str))
    md_path.write_text(f"# Knowledge-base benchmark {stamp}\n\n`{' '.join(sys.argv)}`\n\n{report}\n")
    console.print(f"\nresults: {json_path}\ntable:   {md_path}")
    if plot_learn_times(run, png_path):
        console.print(f"plot:    {png_path}")
        if args.publish:
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png_path, DOCS_IMAGE)
            console.print(f"published: {DOCS_IMAGE}")


if __name__ == "__main__":
    sys.exit(main())
