"""Learn benchmark: time from POST /v1/learn to published, and what the adapter then knows.

Starts an embedded Valkey, one `seal serve` and one `seal worker` in a temporary data dir, then
for each condition (inner-loop format) learns every passage of a fictional-facts file into its own
adapter, without probes, exactly as a client would. Reports per condition: publish latency
(median, p95), the per-stage breakdown, and closed-book accuracy before (base model) and after
(the adapter) on the passage's held-out questions, graded by normalized answer containment.

    .venv/bin/python bench/learn.py                       # passage vs recite, all 10 passages
    .venv/bin/python bench/learn.py --passages 4 --conditions passage,recite,rewrite
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.process import free_port, spawn, stop, wait_ready  # noqa: E402
from app.redis_server import EmbeddedValkey  # noqa: E402
from workers.seal.grade import contains_answer  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fictional_dev.jsonl"
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
BASE = "SmolLM2-135M-Instruct"
ANSWER_TOKENS = 128  # adapters recite what they learned; see workers/seal/config.py EvalConfig


def main() -> None:
    args = parse_args()
    passages = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()][: args.passages]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="seal-bench-learn-") as tmp, services(Path(tmp)) as url:
        http = httpx.Client(base_url=url, timeout=300)
        base_scores = {p["id"]: closed_book(http, BASE, p["questions"]) for p in passages}
        results = {c: [learn_one(http, c, p, base_scores[p["id"]]) for p in passages] for c in conditions}
    report(results, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of {id, title, context, questions}")
    parser.add_argument("--passages", type=int, default=10)
    parser.add_argument("--conditions", default="passage,recite", help="inner-loop formats to compare")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return parser.parse_args()


class services:
    """Valkey + API + worker for the duration of the benchmark; everything is stopped on exit."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.procs: list[subprocess.Popen] = []
        self.valkey = EmbeddedValkey(data_dir)

    def __enter__(self) -> str:
        redis_url = self.valkey.start()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEAL_")}
        env.update(SEAL_DATA_DIR=str(self.data_dir), SEAL_MODEL=str(MODEL_DIR), SEAL_SERVED_MODEL_NAME=BASE,
                   REDIS_URL=redis_url, SEAL_PORT=str(port), VLLM_CPU_KVCACHE_SPACE="1")
        for command in ("serve", "worker"):
            self.procs.append(spawn([sys.executable, "-m", "app.cli", command], env,
                                    self.data_dir / f"{command}.log", cwd=REPO))
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, self.procs[0], timeout=600)
        return url

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            stop(proc)
        self.valkey.stop()


def closed_book(http: httpx.Client, model: str, questions: list[dict]) -> int:
    correct = 0
    for q in questions:
        body = {"model": model, "messages": [{"role": "user", "content": q["question"]}],
                "max_tokens": ANSWER_TOKENS, "temperature": 0}
        reply = http.post("/v1/chat/completions", json=body).raise_for_status().json()
        correct += contains_answer(reply["choices"][0]["message"]["content"], q["answer"])
    return correct


def learn_one(http: httpx.Client, condition: str, passage: dict, base_correct: int) -> dict[str, Any]:
    adapter = f"bench-{condition}-{passage['id']}".lower()
    body = {"adapter": adapter, "documents": [{"title": passage["title"], "text": passage["context"]}],
            "options": {"format": condition}}
    started = time.perf_counter()
    job = http.post("/v1/learn", json=body).raise_for_status().json()
    while job["status"] not in ("published", "rejected", "failed", "cancelled"):
        time.sleep(0.25)
        job = http.get(f"/v1/learn/{job['id']}").raise_for_status().json()
    elapsed = time.perf_counter() - started
    after = closed_book(http, adapter, passage["questions"]) if job["status"] == "published" else base_correct
    row = {"passage": passage["id"], "condition": condition, "status": job["status"], "seconds": elapsed,
           "stage_seconds": job["metrics"].get("stage_seconds", {}), "questions": len(passage["questions"]),
           "correct_before": base_correct, "correct_after": after,
           "probe_accuracy_after": job["metrics"].get("accuracy_after")}
    print(f"{condition:>10} {passage['id']}: {job['status']} in {elapsed:5.1f}s, "
          f"{base_correct}/{row['questions']} → {after}/{row['questions']}", flush=True)
    return row


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    stages = ("generating", "training", "evaluating")
    print()
    print("| condition | published | POST→published median (s) | p95 (s) | "
          + " | ".join(f"{s} (s)" for s in stages) + " | closed-book before | after | passages ≥ 3/4 |")
    print("|---|---|---|---|" + "---|" * len(stages) + "---|---|---|")
    for condition, rows in results.items():
        times = sorted(r["seconds"] for r in rows)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        per_stage = [statistics.median(r["stage_seconds"].get(s, 0.0) for r in rows) for s in stages]
        total_q = sum(r["questions"] for r in rows)
        before = sum(r["correct_before"] for r in rows) / total_q
        after = sum(r["correct_after"] for r in rows) / total_q
        good = sum(r["correct_after"] >= 3 for r in rows)
        published = sum(r["status"] == "published" for r in rows)
        print(f"| {condition} | {published}/{len(rows)} | {statistics.median(times):.1f} | {p95:.1f} | "
              + " | ".join(f"{v:.1f}" for v in per_stage)
              + f" | {before:.0%} | {after:.0%} | {good}/{len(rows)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"learn-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    print(f"\nraw results: {out}")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": sys.platform, "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
