"""Learn benchmark (issue 14): what one POSTed document teaches, what it costs the model, how long it takes.

Starts an embedded Valkey, one `seal serve` and one `seal worker` in a temporary data dir, and drives
them exactly as a client would: each passage is POSTed to /v1/learn (no probes) into an adapter name
of its own, one learn at a time, so every learn is a single-document learn from the base model.
Passages are interleaved across conditions (passage 1 under each condition, then passage 2, ...), so
a slow spell on the shared machine falls on every condition alike.

Data: the fictional dev set (`../shared/data/fictional_dev.jsonl`: 4 forward questions per passage
and 2 reverse ones, which name the passage's subject as the answer and are asked without the title)
and SQuAD (`../shared/data/squad_val.json`, SEAL's evaluation split: `random.seed(42)`, shuffle,
then the first passages in that order; its questions are forward ones, there are no reverse ones).

A condition is a learn request's `options`: `today` (the recipe before issue 14), `default` (`{}`,
whatever the service's per-model recipe is now), any self-edit format name (`facts` = {"format":
"facts"}), or NAME=JSON via `--recipe`. Per condition and data set the table reports:
- forward / reverse accuracy (normalized containment, workers.seal.grade.contains_answer) and mean
  token F1, closed-book through /v1/chat/completions (temperature 0, 48 answer tokens: what a user
  gets), pooled over questions. A rejected or failed job's passage is scored with the base model's
  answers (its adapter name serves nothing new) and counted in "on base";
- the canary drop: per job, the largest (canary_before - canary_after) x 24 over its documents, from
  the gate numbers in the job's metrics; the table gives the condition's worst job and how many jobs
  lost more than 1 of 24;
- published / rejected / failed counts;
- POST -> published latency (client clock, published jobs) median and p95; POST -> verdict median over
  every job and its ratio to `today`'s; the median seconds per worker stage (metrics["stage_seconds"],
  every job); "other" is the rest: queueing, the worker's work before its first stage, publishing, polling.
The base model's scores on the same questions come first in each group. A warm-up learn (not
counted) first makes the worker build its one-off caches (anchor set, base canary answers).

Writes bench/results/learn-<timestamp>.json (every question, prediction and grade, each job's
metrics with its probes' predictions and the gate's canary answers) and learn-<timestamp>.md.

    .venv/bin/python bench/learn.py                                  # today vs default, 10 + 20 passages
    .venv/bin/python bench/learn.py --conditions default,today,facts --squad 0
    .venv/bin/python bench/learn.py --fictional 2 --squad 0 --recipe 'fast={"epochs": 4, "lr": 0.002}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median, percentile  # noqa: E402  (bench/ is on sys.path when run as a script)

from app.api.learn_schemas import LearnOptions  # noqa: E402
from app.process import free_port, spawn, stop, wait_ready  # noqa: E402
from app.redis_server import EmbeddedValkey  # noqa: E402
from workers.seal.grade import contains_answer, token_f1  # noqa: E402

DATA = REPO.parent / "shared" / "data"
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
BASE = "SmolLM2-135M-Instruct"
RESULTS = REPO / "bench" / "results"
ANSWER_TOKENS = 48  # what a user gets, and what the harness and the gate grade at (issue 14)
CANARY_QUESTIONS = 24  # workers/seal/data/canary.jsonl; a job's own canary_predictions count wins when present
SQUAD_SEED = 42  # SEAL's evaluation split
ASK_CONCURRENCY = 8  # a passage's questions are batched, as vLLM would batch concurrent users
POLL_S = 0.25
TERMINAL = ("published", "rejected", "failed", "cancelled")
PRESETS: dict[str, dict[str, Any]] = {
    # The inner loop before issue 14 (workers/seal/config.py then): raw passage, one candidate,
    # r32/alpha64, 10 epochs at 1e-3. k and rank are pinned so a new per-model recipe cannot change them.
    "today": {"format": "passage", "k": 1, "epochs": 10, "lr": 0.001, "rank": 32},
    "default": {},  # the service's own recipe for the model
}
WARMUP_DOC = {"title": "Orrin Pell Bridge", "text": (
    "The Orrin Pell Bridge crosses the river Vantry at the town of Hollam. It opened in 1931 and is "
    "212 meters long. It was designed by the engineer Marta Quillon.")}
GOALS = (("fictional forward accuracy", "≥ 90%"), ("fictional reverse accuracy", "≥ 60%"),
         ("canary drop on every version", "≤ 1 of 24"), ("median POST→published", "≤ 60 s"))

console = Console(highlight=False, soft_wrap=True)  # a markdown table must not wrap at 80 columns


@dataclass
class Passage:
    set: str  # "fictional" | "squad"
    id: str
    title: str
    context: str
    forward: list[dict[str, str]]
    reverse: list[dict[str, str]] = field(default_factory=list)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # unwind: stop the services
    conditions = parse_conditions(args.conditions, args.recipe)
    passages = load_fictional(args.fictional_data, args.fictional) + load_squad(args.squad_data, args.squad)
    if not passages:
        sys.exit("no passages selected")
    tmp = Path(tempfile.mkdtemp(prefix="seal-bench-learn-"))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs: list[dict[str, Any]] = []
    base: dict[str, dict[str, list[dict]]] = {}
    interrupted = False
    try:
        with Services(tmp) as svc:
            bench = Bench(svc)
            if args.warmup:
                bench.warm_up()
            with make_progress() as progress:
                task = progress.add_task("base model", total=len(passages) * (1 + len(conditions)))
                for p in passages:
                    base[p.id] = bench.ask_passage(BASE, p)
                    progress.advance(task)
                try:
                    for p in passages:
                        for name, options in conditions.items():
                            runs.append(bench.learn(name, options, p, base[p.id], progress, task, args.job_timeout))
                            progress.advance(task)
                except KeyboardInterrupt:
                    interrupted = True
                    console.print("[yellow]interrupted: reporting the learns that finished")
    finally:
        if args.keep:
            console.print(f"kept {tmp} (serve.log, worker.log, the data dir)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(passages, conditions, base, runs)
    table = render_table(summary, conditions)
    goals = render_goals(summary, conditions)
    console.print()
    console.print(table, markup=False)
    console.print()
    console.print(goals, markup=False)
    write_results(args, stamp, conditions, passages, base, runs, summary, table, goals, interrupted)
    return 130 if interrupted else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fictional", type=int, default=10, help="fictional dev passages (default 10, all)")
    parser.add_argument("--squad", type=int, default=20, help="SQuAD passages from SEAL's split (default 20)")
    parser.add_argument("--passages", type=int, default=None,
                        help="quick runs: cap both data sets at this many passages each")
    parser.add_argument("--conditions", default="today,default",
                        help="comma list: today, default, a self-edit format name, or a --recipe name")
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=JSON",
                        help="an extra condition with these learn options, e.g. 'fast={\"epochs\": 4}'")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one uncounted learn first, so no condition pays the worker's one-off caches")
    parser.add_argument("--job-timeout", type=float, default=1800, help="seconds one learn may take")
    parser.add_argument("--keep", action="store_true", help="leave the temporary dir (logs, data dir)")
    parser.add_argument("--fictional-data", type=Path, default=DATA / "fictional_dev.jsonl")
    parser.add_argument("--squad-data", type=Path, default=DATA / "squad_val.json")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.passages is not None:
        args.fictional, args.squad = min(args.fictional, args.passages), min(args.squad, args.passages)
    return args


def parse_conditions(names: str, recipes: list[str]) -> dict[str, dict[str, Any]]:
    """Condition name -> learn options, each checked against the service's own LearnOptions."""
    named: dict[str, dict[str, Any]] = {}
    for item in recipes:
        name, sep, body = item.partition("=")
        if not sep:
            sys.exit(f"--recipe wants NAME=JSON, got {item!r}")
        named[name.strip()] = json.loads(body)
    order = [n.strip() for n in names.split(",") if n.strip()]
    order += [n for n in named if n not in order]
    conditions = {}
    for name in order:
        options = named.get(name, PRESETS.get(name, {"format": name}))
        try:
            LearnOptions.model_validate(options)
        except ValueError as exc:
            sys.exit(f"condition {name!r}: the service would refuse options {options}: {exc}")
        conditions[name] = options
    return conditions


def load_fictional(path: Path, n: int) -> list[Passage]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:n]
    return [Passage("fictional", r["id"], r["title"], r["context"], r["questions"], r.get("reverse_questions", []))
            for r in rows]


def load_squad(path: Path, n: int) -> list[Passage]:
    if n <= 0:
        return []
    items = json.loads(path.read_text())
    random.Random(SQUAD_SEED).shuffle(items)  # the same order as random.seed(42); random.shuffle(items)
    return [Passage("squad", f"squad-{i:03d}", it["title"].replace("_", " "), it["context"], it["questions"])
            for i, it in enumerate(items[:n])]


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


# --- the service ---------------------------------------------------------------------------------


def service_env(data_dir: Path, redis_url: str, port: int, **settings: str) -> dict[str, str]:
    """The environment of a benchmark's `seal serve` / `seal worker`: the parent's, minus anything that
    would point the service elsewhere, on the bundled model, `data_dir`, `redis_url` and `port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAL_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(SEAL_DATA_DIR=str(data_dir), SEAL_MODEL=str(MODEL_DIR), SEAL_SERVED_MODEL_NAME=BASE,
               REDIS_URL=redis_url, SEAL_HOST="127.0.0.1", SEAL_PORT=str(port), VLLM_CPU_KVCACHE_SPACE="1", **settings)
    return env


class Services:
    """Valkey + `seal serve` + `seal worker` in `data_dir` for the benchmark's duration; stopped on exit."""

    def __init__(self, work: Path):
        self.work = work
        self.data_dir = work / "data"
        self.procs: dict[str, subprocess.Popen] = {}
        self.valkey = EmbeddedValkey(self.data_dir)
        self.url = ""

    def __enter__(self) -> Services:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = self.valkey.start()
        port = free_port()
        env = service_env(self.data_dir, redis_url, port)
        try:
            for command in ("serve", "worker"):
                self.procs[command] = spawn([sys.executable, "-m", "app.cli", command], env,
                                            self.work / f"{command}.log", cwd=REPO)
            self.url = f"http://127.0.0.1:{port}"
            with console.status("starting seal serve and seal worker"):
                started = time.perf_counter()
                wait_ready(self.url, self.procs["serve"], timeout=600)
            console.print(f"service ready in {time.perf_counter() - started:.0f}s at {self.url} (logs in {self.work})")
        except BaseException:
            self.__exit__()
            raise
        return self

    def check(self) -> None:
        """Fail loudly when a child died: a dead worker would leave every job queued forever."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.work / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"seal {name} exited with {proc.returncode}:\n{log}")

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs.values():
            stop(proc)
        self.valkey.stop()


class Bench:
    """The client side: learns over HTTP, asks closed-book questions through the OpenAI client."""

    def __init__(self, svc: Services):
        self.svc = svc
        self.http = httpx.Client(base_url=svc.url, timeout=300)
        self.client = openai.OpenAI(base_url=svc.url + "/v1", api_key="bench", timeout=600, max_retries=2)

    def ask(self, model: str, questions: list[dict[str, str]], direction: str) -> list[dict[str, Any]]:
        """Closed-book answers to `questions` from `model` (the question alone, no title), graded."""
        def one(q: dict[str, str]) -> dict[str, Any]:
            try:
                reply = self.client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": q["question"]}],
                    max_tokens=ANSWER_TOKENS, temperature=0)
                prediction, error = reply.choices[0].message.content or "", None
            except openai.APIError as exc:
                prediction, error = "", f"{type(exc).__name__}: {exc}"[:300]
            return {"direction": direction, "question": q["question"], "answer": q["answer"],
                    "prediction": prediction, "correct": contains_answer(prediction, q["answer"]),
                    "f1": token_f1(prediction, q["answer"]), "model": model, "error": error}

        with ThreadPoolExecutor(ASK_CONCURRENCY) as pool:
            return list(pool.map(one, questions))

    def ask_passage(self, model: str, p: Passage) -> dict[str, list[dict]]:
        return {"forward": self.ask(model, p.forward, "forward"), "reverse": self.ask(model, p.reverse, "reverse")}

    def submit(self, adapter: str, title: str, text: str, options: dict[str, Any],
               timeout: float, on_poll: Any = None) -> tuple[dict[str, Any], float]:
        """POST one document and poll until the job ends: (the final job, seconds from POST to its end)."""
        body = {"adapter": adapter, "documents": [{"title": title, "text": text}], "options": options}
        started = time.perf_counter()
        job = self.http.post("/v1/learn", json=body).raise_for_status().json()
        while job["status"] not in TERMINAL:
            if time.perf_counter() - started > timeout:
                self.http.post(f"/v1/learn/{job['id']}/cancel")
                raise TimeoutError(f"learn {job['id']} ({adapter}) still {job['status']} after {timeout:.0f}s")
            self.svc.check()
            time.sleep(POLL_S)
            job = self.http.get(f"/v1/learn/{job['id']}").raise_for_status().json()
            if on_poll is not None:
                on_poll(job)
        return job, time.perf_counter() - started

    def wait_served(self, adapter: str, version: int, timeout: float = 120) -> float | None:
        """Seconds until GET /v1/models routes `adapter` to `version` (the API swaps on the publish event)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            cards = self.http.get("/v1/models").raise_for_status().json()["data"]
            if any(c["id"] == adapter and c.get("version") == version for c in cards):
                return time.perf_counter() - started
            time.sleep(0.1)
        return None

    def warm_up(self) -> None:
        with console.status("warm-up learn (not counted): the worker builds its anchor set and base canary answers"):
            job, seconds = self.submit("bench-warmup", WARMUP_DOC["title"], WARMUP_DOC["text"], {"epochs": 1}, 1800)
            if job["status"] == "published" and self.wait_served("bench-warmup", job["version"]) is not None:
                self.ask("bench-warmup", [{"question": "How long is the Orrin Pell Bridge?", "answer": "212"}], "warmup")
                self.http.delete("/v1/adapters/bench-warmup")
        console.print(f"warm-up learn: {job['status']} in {seconds:.0f}s")

    def learn(self, condition: str, options: dict[str, Any], p: Passage, base: dict[str, list[dict]],
              progress: Progress, task: Any, timeout: float) -> dict[str, Any]:
        """Learn passage `p` into a fresh adapter under `condition`, then ask its questions closed-book."""
        adapter = f"bench-{condition}-{p.id}".lower().replace("_", "-")[:63]

        def on_poll(job: dict[str, Any]) -> None:
            progress.update(task, description=f"{condition} {p.id}: {job.get('stage') or job['status']} "
                                              f"{100 * (job.get('progress') or 0):.0f}%")

        try:
            job, seconds = self.submit(adapter, p.title, p.context, options, timeout, on_poll)
        except httpx.HTTPStatusError as exc:  # refused at submit: a bad option, a quota, a document too long
            job, seconds = {"status": "failed", "error": f"{exc}: {exc.response.text[:300]}", "metrics": {}}, None
        except TimeoutError as exc:
            job, seconds = {"status": "failed", "error": str(exc), "metrics": {}}, None
        metrics = job.get("metrics") or {}
        served = None
        if job["status"] == "published":
            served = self.wait_served(adapter, job["version"])
            answers, scored_on = self.ask_passage(adapter, p), "adapter"
            self.http.delete(f"/v1/adapters/{adapter}")  # keep the engine's working set to the adapter under test
        else:
            answers, scored_on = base, "base"
        run = {
            "set": p.set, "passage": p.id, "title": p.title, "condition": condition, "options": options,
            "adapter": adapter, "job_id": job.get("id"), "status": job["status"], "version": job.get("version"),
            "error": job.get("error"), "seconds": seconds, "served_seconds": served,
            "queue_seconds": queue_seconds(job), "stage_seconds": metrics.get("stage_seconds", {}),
            "canary_drop": canary_drop(metrics), "scored_on": scored_on, **answers, "job_metrics": metrics,
        }
        progress.console.print(learn_line(run, base), markup=False)
        return run


def queue_seconds(job: dict[str, Any]) -> float | None:
    """Seconds the job waited for a worker (server clock)."""
    if not job.get("created_at") or not job.get("started_at"):
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(job["started_at"]) - parse(job["created_at"])).total_seconds()


def canary_drop(metrics: dict[str, Any]) -> int | None:
    """Canary answers the job's candidate lost against the base model (worst document), in questions."""
    drops = []
    for doc in metrics.get("documents") or []:
        gate = doc.get("gate") or {}
        numbers = gate.get("numbers") or {}
        if numbers.get("canary_before") is not None and numbers.get("canary_after") is not None:
            n = len(gate.get("canary_predictions") or []) or CANARY_QUESTIONS
            drops.append(round((numbers["canary_before"] - numbers["canary_after"]) * n))
    return max(drops) if drops else None


def learn_line(run: dict[str, Any], base: dict[str, list[dict]]) -> str:
    def score(direction: str) -> str:
        qs = run[direction]
        return (f"{direction[:3]} {sum(q['correct'] for q in base[direction])}→{sum(q['correct'] for q in qs)}"
                f"/{len(qs)}") if qs else ""

    stages = " ".join(f"{k[:3]} {v:.0f}" for k, v in run["stage_seconds"].items())
    took = f"{run['seconds']:6.1f}s" if run["seconds"] is not None else "   —   "
    drop = run["canary_drop"]
    return (f"{run['condition']:>10} {run['passage']:<10} {run['status']:<9} {took} [{stages}]  "
            f"{score('forward')}  {score('reverse')}  canary -{'?' if drop is None else drop}"
            + ("" if run["scored_on"] == "adapter" else "  (scored on base)")
            + (f"  {run['error'][:120]}" if run["error"] and run["status"] != "published" else ""))


# --- summary and report --------------------------------------------------------------------------


def pooled(answers: list[dict]) -> dict[str, Any] | None:
    if not answers:
        return None
    return {"correct": sum(a["correct"] for a in answers), "questions": len(answers),
            "accuracy": sum(a["correct"] for a in answers) / len(answers),
            "f1": sum(a["f1"] for a in answers) / len(answers)}


def summarise(passages: list[Passage], conditions: dict[str, dict[str, Any]], base: dict[str, dict[str, list]],
              runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """set -> row ("base", then each condition) -> numbers."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for set_name in dict.fromkeys(p.set for p in passages):
        ids = [p.id for p in passages if p.set == set_name]
        rows = {"base": {d: pooled([a for i in ids if i in base for a in base[i][d]]) for d in ("forward", "reverse")}}
        for name in conditions:
            rs = [r for r in runs if r["set"] == set_name and r["condition"] == name]
            if not rs:
                continue
            published = [r for r in rs if r["status"] == "published"]
            latencies = [r["seconds"] for r in published if r["seconds"] is not None]
            drops = [r["canary_drop"] for r in rs if r["canary_drop"] is not None]
            # The work a recipe costs, whatever the verdict: every job that reached the worker.
            worked = [r for r in rs if r["seconds"] is not None and r["stage_seconds"]]
            stages = {k: statistics.median(r["stage_seconds"].get(k, 0.0) for r in worked)
                      for k in dict.fromkeys(k for r in worked for k in r["stage_seconds"])}
            others = [r["seconds"] - sum(r["stage_seconds"].values()) for r in worked]
            rows[name] = {
                "forward": pooled([a for r in rs for a in r["forward"]]),
                "reverse": pooled([a for r in rs for a in r["reverse"]]),
                "passages": len(rs), "on_base": sum(r["scored_on"] == "base" for r in rs),
                "published": len(published), "rejected": sum(r["status"] == "rejected" for r in rs),
                "failed": sum(r["status"] in ("failed", "cancelled") for r in rs),
                "canary_max_drop": max(drops) if drops else None, "canary_jobs": len(drops),
                "canary_drop_over_1": sum(d > 1 for d in drops),
                "median_s": median(latencies), "p95_s": percentile(latencies, 95),
                "verdict_median_s": median([r["seconds"] for r in rs]),
                "stage_median_s": stages, "other_median_s": median(others),
                "served_median_s": median([r["served_seconds"] for r in published]),
            }
        today = rows.get("today", {}).get("verdict_median_s")
        for name, row in rows.items():
            if name != "base":
                mine = row["verdict_median_s"]
                row["time_vs_today"] = mine / today if today and mine is not None else None
        out[set_name] = rows
    return out


def render_table(summary: dict[str, dict[str, dict[str, Any]]], conditions: dict[str, dict[str, Any]]) -> str:
    known = ["generating", "training", "evaluating"]
    stages = known + [k for rows in summary.values() for name, row in rows.items() if name != "base"
                      for k in row["stage_median_s"] if k not in known]
    stages = list(dict.fromkeys(stages))
    headers = ["set", "condition", "forward acc", "fwd F1", "reverse acc", "rev F1", "pub / rej / fail",
               "on base", "canary worst drop", "jobs drop > 1", "POST→published p50", "p95", "POST→verdict p50",
               "× today",
               *stages, "other"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---", ":---"] + ["---:"] * (len(headers) - 2)) + "|"]
    dash = "—"
    sec = lambda v: dash if v is None else f"{v:.1f} s"  # noqa: E731

    def acc(s: dict | None) -> str:
        return dash if not s else f"{s['accuracy']:.0%} ({s['correct']}/{s['questions']})"

    def f1(s: dict | None) -> str:
        return dash if not s else f"{s['f1']:.2f}"

    for set_name, rows in summary.items():
        for name, row in rows.items():
            cells = [set_name, name, acc(row["forward"]), f1(row["forward"]), acc(row["reverse"]), f1(row["reverse"])]
            if name == "base":
                cells += [dash] * (len(headers) - len(cells))
            else:
                drop = row["canary_max_drop"]
                cells += [f"{row['published']} / {row['rejected']} / {row['failed']}", str(row["on_base"]),
                          dash if drop is None else f"{drop} of {CANARY_QUESTIONS}",
                          f"{row['canary_drop_over_1']} of {row['canary_jobs']}" if row["canary_jobs"] else dash,
                          sec(row["median_s"]), sec(row["p95_s"]), sec(row["verdict_median_s"]),
                          dash if row["time_vs_today"] is None else f"{row['time_vs_today']:.2f}",
                          *(sec(row["stage_median_s"].get(k)) for k in stages), sec(row["other_median_s"])]
            lines.append("| " + " | ".join(cells) + " |")
    options = "; ".join(f"{name} = {json.dumps(o)}" for name, o in conditions.items())
    notes = (f"\nClosed-book at {ANSWER_TOKENS} answer tokens, temperature 0, pooled over questions; accuracy is "
             "normalized containment. A rejected or failed job's passage is scored with the base model's answers "
             "(\"on base\" counts them). Canary: answers lost of 24 against the base model, per job the worst "
             "document, from the gate numbers in the job's metrics (rejected candidates included). Times: client "
             "clock, medians; POST→published p50/p95 over published jobs; POST→verdict, × today (its ratio to "
             "today's) and the stages over every job the worker finished, whatever its verdict; stages from the "
             "job's metrics[\"stage_seconds\"]; \"other\" is queueing, the worker's work before its first stage, "
             f"publishing and polling.\nConditions (learn options): {options}.")
    return "\n".join(lines) + "\n" + notes


def render_goals(summary: dict[str, dict[str, dict[str, Any]]], conditions: dict[str, dict[str, Any]]) -> str:
    """Issue 14's goals, for the default condition on the fictional set (or each condition run if it wasn't)."""
    rows = summary.get("fictional", {})
    names = ["default"] if "default" in rows else [n for n in conditions if n in rows]
    if not names:
        return "Goals: not measured (no fictional passages learned)."
    out = []
    for name in names:
        row = rows[name]
        fwd, rev, drop, med = row["forward"], row["reverse"], row["canary_max_drop"], row["median_s"]
        checks = [
            (fwd is not None and fwd["accuracy"] >= 0.9, dash_pct(fwd)),
            (rev is not None and rev["accuracy"] >= 0.6, dash_pct(rev)),
            (drop is not None and drop <= 1 and row["canary_jobs"] == row["passages"],
             "not measured" if drop is None else f"worst {drop} of {CANARY_QUESTIONS}"),
            (med is not None and med <= 60, "—" if med is None else f"{med:.1f} s"),
        ]
        parts = [f"{goal} {target}: {'met' if ok else 'NOT met'} ({value})" for (goal, target), (ok, value) in
                 zip(GOALS, checks, strict=True)]
        label = "default condition" if name == "default" else f"condition {name!r} (default not run)"
        out.append(f"Goals, {label}: " + "; ".join(parts) + ".")
    return "\n".join(out)


def dash_pct(s: dict | None) -> str:
    return "—" if s is None else f"{s['accuracy']:.0%}"


def environment() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
            "openai": openai.__version__}


def write_results(args: argparse.Namespace, stamp: str, conditions: dict[str, dict[str, Any]],
                  passages: list[Passage], base: dict[str, Any], runs: list[dict[str, Any]], summary: dict[str, Any],
                  table: str, goals: str, interrupted: bool) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "created": datetime.now().astimezone().isoformat(), "interrupted": interrupted,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": environment(), "answer_tokens": ANSWER_TOKENS, "conditions": conditions,
        "passages": [{"set": p.set, "id": p.id, "title": p.title} for p in passages],
        "base": base, "runs": runs, "summary": summary, "goals": goals,
    }
    json_path, md_path = args.out / f"learn-{stamp}.json", args.out / f"learn-{stamp}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    md_path.write_text(f"# Learn benchmark {stamp}\n\n`{' '.join(sys.argv)}`\n\n{table}\n\n{goals}\n")
    console.print(f"\nresults: {json_path}\ntable:   {md_path}")


if __name__ == "__main__":
    sys.exit(main())
