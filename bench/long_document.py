"""A long real document, posted as one request, through the service (issue 29).

The first `--paragraphs` paragraphs of one SQuAD article (`--article`; Wikipedia text with its own
questions) are joined into one document and POSTed once to a fresh knowledge base. The API splits it
into passages of at most SEAL_MAX_PASSAGE_TOKENS (paragraphs, then sentences) and one worker learns
each into a shard of its own. Every question of every paragraph is asked with 48-token answers:

- right after the 202 (`pending`: the base model reading the passage the router picks);
- once the job ends: by the base model alone, reading the passage (`seal-answer-from: context`), from
  the passage's shard alone (`weights`), and as served (`auto`);

graded by containment and token F1, with how often the router picked the passage that holds the
question's paragraph. Learn time is reported in total and per passage, from the job's own stage timings.

    .venv/bin/python bench/long_document.py --article "Black Death" --paragraphs 10

Writes bench/results/long-document-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median  # noqa: E402  (bench/ is on sys.path when run as a script)
from learn import ANSWER_TOKENS, ASK_CONCURRENCY, BASE, TERMINAL, Services  # noqa: E402

from workers.seal.grade import contains_answer, token_f1  # noqa: E402

SQUAD = REPO.parent / "shared" / "data" / "squad_val.json"
RESULTS = REPO / "bench" / "results"
KB = "long-document"
SUB_STAGES = {"probes", "teacher"}
ROUTE_DOC = re.compile(r"(?:pending|context):(\d+)$")


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def article(title: str, paragraphs: int) -> list[dict[str, Any]]:
    """The article's first `paragraphs` paragraphs, in the dataset's order, with their questions."""
    items = [p for p in json.loads(SQUAD.read_text()) if p["title"] == title]
    if not items:
        raise SystemExit(f"no SQuAD article titled {title!r} in {SQUAD}")
    return items[:paragraphs]


class Client:
    """learn.py's Bench.ask with what this bench needs beside it: a path (`seal-answer-from`) and the route."""

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=300)
        self.openai = openai.OpenAI(base_url=url + "/v1", api_key="bench", timeout=600, max_retries=2)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()
        self.openai.close()

    def ask(self, model: str, cases: list[dict[str, Any]], answer_from: str | None) -> list[dict[str, Any]]:
        """Each case's question, answered at 48 tokens through `answer_from`, graded, with its route."""
        headers = {"seal-answer-from": answer_from} if answer_from else {}

        def one(case: dict[str, Any]) -> dict[str, Any]:
            try:
                raw = self.openai.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": case["question"]}],
                    max_tokens=ANSWER_TOKENS, temperature=0, extra_headers=headers)
                prediction, route, error = raw.parse().choices[0].message.content or "", raw.headers.get("seal-route"), None
            except openai.APIStatusError as exc:
                prediction, route, error = "", exc.response.headers.get("seal-route"), f"{exc.status_code} {exc.message}"
            return {**case, "prediction": prediction, "route": route, "error": error,
                    "correct": contains_answer(prediction, case["answer"]), "f1": token_f1(prediction, case["answer"])}

        with ThreadPoolExecutor(ASK_CONCURRENCY) as pool:
            return list(pool.map(one, cases))


def passage_of(paragraph: str, passages: list[dict[str, Any]]) -> int | None:
    """The document id of the passage holding `paragraph` (the splitter cuts at paragraphs first); a
    paragraph split across passages belongs to the one with its first sentence."""
    head = paragraph.strip()[:80]
    return next((p["id"] for p in passages if head in p["text"]), None)


def routed_to(reply: dict[str, Any], shard_of: dict[str, int]) -> int | None:
    """The document a reply's route names: `pending:17` / `context:17`, or a shard label (`kb/s3@v1`)."""
    route = reply.get("route") or ""
    match = ROUTE_DOC.search(route)
    if match:
        return int(match.group(1))
    shard = route.rpartition("/")[2].partition("@")[0]
    return shard_of.get(shard)


def score(replies: list[dict[str, Any]], shard_of: dict[str, int]) -> dict[str, Any]:
    n = len(replies)
    return {"n": n, "containment": sum(r["correct"] for r in replies) / n, "f1": sum(r["f1"] for r in replies) / n,
            "routed_to_its_passage": sum(routed_to(r, shard_of) == r["passage"] for r in replies) / n,
            "errors": sum(r["error"] is not None for r in replies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--article", default="Black Death")
    parser.add_argument("--paragraphs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=7200, help="seconds the learn may take")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    paragraphs = article(args.article, args.paragraphs)
    text = "\n\n".join(p["context"].strip() for p in paragraphs)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out: dict[str, Any] = {"argv": sys.argv, "stamp": stamp, "article": args.article, "paragraphs": len(paragraphs),
                           "words": len(text.split()), "characters": len(text)}
    work = Path(tempfile.mkdtemp(prefix="seal-long-document-"))
    with contextlib.ExitStack() as cleanup, Services(work) as svc:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        client = cleanup.enter_context(Client(svc.url))
        started = time.perf_counter()
        job = client.http.post("/v1/learn", json={"adapter": KB, "documents": [
            {"title": args.article, "text": text}]}).raise_for_status().json()
        listing = client.http.get(f"/v1/adapters/{KB}/documents", params={"limit": 200}).raise_for_status().json()
        out["passages"] = listing["total"]
        log(f"202 after {time.perf_counter() - started:.1f}s: {listing['total']} passages, job {job['id']}")
        # The listing carries no text; the passages' texts are the split the API made, read back in order.
        texts = split_texts(svc.data_dir, [d["id"] for d in listing["data"]])
        passages = [{"id": d["id"], "text": texts[d["id"]]} for d in listing["data"]]
        cases = [{"question": q["question"], "answer": q["answer"], "paragraph": i,
                  "passage": passage_of(p["context"], passages)}
                 for i, p in enumerate(paragraphs) for q in p["questions"]]
        at_once = client.ask(KB, cases, None)
        out["at_once_s"] = time.perf_counter() - started
        log(f"asked {len(cases)} questions in context right after the 202 ({out['at_once_s']:.0f}s)")
        while job["status"] not in TERMINAL:
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"learn {job['id']} still {job['status']} after {args.timeout:.0f}s")
            svc.check()
            time.sleep(2)
            job = client.http.get(f"/v1/learn/{job['id']}").raise_for_status().json()
        out["learn_s"] = time.perf_counter() - started
        out["job"] = {k: job.get(k) for k in ("status", "error", "version")}
        log(f"job {job['status']} after {out['learn_s']:.0f}s")
        documents = client.http.get(f"/v1/adapters/{KB}/documents", params={"limit": 200}).raise_for_status().json()
        shard_of = {d["shard"].partition("@")[0]: d["id"] for d in documents["data"] if d.get("shard")}
        out["documents"] = [{k: d.get(k) for k in ("id", "state", "answered_from", "shard", "accuracy_weights",
                                                   "accuracy_context", "characters")} for d in documents["data"]]
        per_passage = passage_seconds(job)
        out["per_passage_s"] = per_passage
        routes = {"base model, no passage": (BASE, None), "reading (context)": (KB, "context"),
                  "from weights": (KB, "weights"), "served (auto)": (KB, "auto")}
        replies = {"in context at once (pending)": at_once}
        for name, (model, answer_from) in routes.items():
            replies[name] = client.ask(model, cases, answer_from)
        out["routes"] = {name: score(r, shard_of) for name, r in replies.items()}
        out["replies"] = replies
        out["by_state"] = dict(sorted(count_states(out["documents"]).items()))
    args.out.mkdir(parents=True, exist_ok=True)
    report = render(out)
    (args.out / f"long-document-{stamp}.json").write_text(json.dumps(out, indent=2, default=str))
    (args.out / f"long-document-{stamp}.md").write_text(report)
    print(report)
    return 0


def split_texts(data_dir: Path, ids: list[int]) -> dict[int, str]:
    """The passages' texts as the API stored them (the registry is the bench's to read: same machine)."""
    import sqlite3

    with sqlite3.connect(f"file:{data_dir / 'seal.db'}?mode=ro", uri=True) as con:
        marks = ",".join("?" * len(ids))
        return dict(con.execute(f"SELECT id, text FROM documents WHERE id IN ({marks})", ids).fetchall())  # noqa: S608


def passage_seconds(job: dict[str, Any]) -> list[float]:
    """Each passage's learn seconds (its stages: probe writing, teacher, training, gate, publish)."""
    documents = (job.get("metrics") or {}).get("documents") or []
    # `probes` and `teacher` are parts of `generating`, timed apart: counted once, in it.
    return [round(sum(v for k, v in d["stage_seconds"].items() if k not in SUB_STAGES), 1)
            for d in documents if "stage_seconds" in d]


def count_states(documents: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for d in documents:
        counts[f"{d['state']} ({d['answered_from']})"] += 1
    return counts


def render(out: dict[str, Any]) -> str:
    per = out["per_passage_s"]
    lines = [f"# A long document through the service ({out['stamp']})", "",
             f"`{' '.join(out['argv'])}`: the first {out['paragraphs']} paragraphs of the SQuAD article "
             f"*{out['article']}*, {out['words']:,} words, POSTed as one document; split into {out['passages']} "
             f"passages, one shard each; one worker.", "",
             f"Learn: job {out['job']['status']} after {out['learn_s']:.0f} s in total; per passage "
             f"median {median(per) or 0:.0f} s (min {min(per, default=0):.0f}, max {max(per, default=0):.0f}). "
             f"Passages: {', '.join(f'{n} {s}' for s, n in out['by_state'].items())}.", "",
             "| route (48-token answers) | questions | containment | token F1 | routed to its passage |",
             "|---|---:|---:|---:|---:|"]
    for name, s in out["routes"].items():
        routed = "" if name.startswith("base") else f"{s['routed_to_its_passage']:.0%}"
        lines.append(f"| {name} | {s['n']} | {s['containment']:.0%} | {s['f1']:.2f} | {routed} |")
    if out["job"].get("error"):
        lines += ["", f"Job error (its own words): {out['job']['error'][:400]}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
