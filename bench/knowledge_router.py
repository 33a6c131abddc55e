"""Router-only benchmark (knowledge bases): does a question reach its document, and a general one the base?

No model, no server: app.knowledge.router.LexicalRouter over
- the fictional dev set (`../shared/data/fictional_dev.jsonl`, 10 passages, 4 forward and 2 reverse
  questions each) alone, one passage alone (10 one-document knowledge bases) and three at a time;
- bench/docgen.py's invented documents, 1,000 and 10,000 of them (seed 0), with the 10 fictional
  passages indexed alongside: every generated question at 1k, a seeded sample at 10k;
- the 1k scenario again with every question lowercased, since names (capitalised words) weigh more
  in the router's score and users do not always capitalise.
Questions that should route: each one's own document is the expected decision. Questions that should
go to the base model: workers/seal/data/anchor_prompts.jsonl plus GENERAL_QUESTIONS below (these
two are the calibration negatives), and workers/seal/data/canary.jsonl, reported as a held-out check
and never used to choose the threshold.

The routers are built with threshold 0, so every decision carries the top document and its score,
and the benchmark applies thresholds itself: a question routes when score >= threshold. That gives
the threshold sweep for free; at DEFAULT_THRESHOLD the decisions are the production router's.

Per scenario the table reports top-1 accuracy (the top document is the right one, whatever its
score), routed accuracy (right document and score >= threshold: what a user gets), the fraction of
general questions that fall back to base, index build time and route() latency p50/p95.

Writes bench/results/knowledge-router-<timestamp>.json (every miss, every general question's score)
and knowledge-router-<timestamp>.md.

    .venv/bin/python bench/knowledge_router.py
    .venv/bin/python bench/knowledge_router.py --threshold 0.55 --sample-10k 5000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median, percentile  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import GeneratedDocument, check_unique_names, generate_documents  # noqa: E402

from app.knowledge.router import DEFAULT_THRESHOLD, IndexedDocument, LexicalRouter  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SEAL_DATA = REPO / "workers" / "seal" / "data"
RESULTS = REPO / "bench" / "results"
FICTIONAL_OFFSET = 100_000  # doc_ids of the fictional passages when indexed beside generated documents
SWEEP = [round(0.2 + 0.05 * i, 2) for i in range(15)]  # 0.20 .. 0.90

# General questions for the fallback measurement, written for this benchmark (not the canary set).
# Many share words with the generated templates (bridge, ship, comet, founded, festival, Python,
# gradient) on purpose: those are the ones a lexical router can get wrong.
GENERAL_QUESTIONS = [
    "When was the Golden Gate Bridge opened?",
    "Who designed the Brooklyn Bridge?",
    "Which ship sank on its maiden voyage in 1912?",
    "Who discovered Halley's Comet?",
    "What is the largest telescope in the world?",
    "Who wrote the novel Moby-Dick?",
    "Which company makes the iPhone?",
    "Who founded Microsoft?",
    "What does a giant panda mainly eat?",
    "Where do kangaroos live?",
    "In which month is Oktoberfest held?",
    "Which festival is held in Rio de Janeiro before Lent?",
    "How tall is the Eiffel Tower?",
    "Who was the first person to climb Mount Everest?",
    "What programming language is the Linux kernel written in?",
    "Who composed The Four Seasons?",
    "How long is the Great Wall of China?",
    "In what year did the Titanic sink?",
    "Who painted the ceiling of the Sistine Chapel?",
    "How many players are on a soccer team?",
    "What is the speed of light?",
    "Who is the author of the Harry Potter books?",
    "Which lighthouse was one of the Seven Wonders of the Ancient World?",
    "What do frogs eat?",
    "Where is the Amazon rainforest?",
    "Write a haiku about the sea.",
    "Give me a recipe for pancakes.",
    "Hello! How are you today?",
    "Summarize the plot of Macbeth.",
    "Translate 'good morning' into Spanish.",
    "What is the difference between weather and climate?",
    "How do I reverse a list in Python?",
    "Which river flows through Paris?",
    "What is the tallest building in the world?",
    "Who invented the light bulb?",
    "How many bones are in the human body?",
    "What is the chemical formula for table salt?",
    "Which bird is a symbol of peace?",
    "What is the population of Tokyo?",
    "Who was the first emperor of Rome?",
    "When did the Berlin Wall fall?",
    "What is the main ingredient in guacamole?",
    "What is the largest moon of Saturn?",
    "Who wrote The Odyssey?",
    "Explain how a steam engine works.",
    "What is the longest bridge in the world?",
    "What does a biologist study?",
    "Which company was founded by Steve Jobs?",
    "Name a famous lighthouse in France.",
    "What instrument does a cellist play?",
    "How many strings does a violin have?",
    "Which planet has the most moons?",
    "Who was Napoleon Bonaparte?",
    "What causes the seasons on Earth?",
    "Recommend a good book to read on vacation.",
    "What is the best way to learn a new language?",
    "How many kilometers are in a mile?",
    "What is the gradient of a straight line?",
    "Who won the football World Cup in 2018?",
    "What is the boiling point of ethanol?",
]


@dataclass(frozen=True)
class Case:
    """One question and the doc_id it should route to (None: the base model)."""

    question: str
    expected: int | None
    kind: str  # forward | reverse | general | anchor | canary


@dataclass(frozen=True)
class Outcome:
    case: Case
    top: int | None  # the top document's doc_id (threshold 0), None when nothing matched
    score: float
    seconds: float


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fictional_documents(offset: int = 0) -> tuple[list[IndexedDocument], list[Case]]:
    """The 10 fictional passages as documents (doc_id offset + i) and their forward and reverse questions."""
    docs, cases = [], []
    for i, row in enumerate(load_jsonl(DATA / "fictional_dev.jsonl")):
        doc_id = offset + i
        docs.append(IndexedDocument(doc_id=doc_id, shard=f"kb+s{i // 4}", title=row["title"], text=row["context"]))
        cases += [Case(q["question"], doc_id, "forward") for q in row["questions"]]
        cases += [Case(q["question"], doc_id, "reverse") for q in row.get("reverse_questions", [])]
    return docs, cases


def as_cases(generated: list[GeneratedDocument]) -> tuple[list[IndexedDocument], list[Case]]:
    """Generated documents as router documents (8 to a shard) and their forward and reverse questions."""
    docs, cases = [], []
    for g in generated:
        docs.append(IndexedDocument(doc_id=g.doc_id, shard=f"kb+s{g.doc_id // 8}", title=g.title, text=g.text))
        cases += [Case(qa.question, g.doc_id, "forward") for qa in g.forward]
        cases += [Case(qa.question, g.doc_id, "reverse") for qa in g.reverse]
    return docs, cases


def negative_cases() -> tuple[list[Case], list[Case]]:
    """(calibration negatives: anchors + GENERAL_QUESTIONS, held-out check: the canary)."""
    calibration = [Case(row["prompt"], None, "anchor") for row in load_jsonl(SEAL_DATA / "anchor_prompts.jsonl")]
    calibration += [Case(q, None, "general") for q in GENERAL_QUESTIONS]
    canary = [Case(row["question"], None, "canary") for row in load_jsonl(SEAL_DATA / "canary.jsonl")]
    return calibration, canary


def lowercase(cases: list[Case]) -> list[Case]:
    return [replace(c, question=c.question.lower()) for c in cases]


def run(router: LexicalRouter, cases: list[Case]) -> list[Outcome]:
    outcomes = []
    for case in cases:
        started = time.perf_counter()
        decision = router.route(case.question)
        seconds = time.perf_counter() - started
        top = decision.document.doc_id if decision.document is not None else None
        outcomes.append(Outcome(case, top, decision.score, seconds))
    return outcomes


def routed(o: Outcome, threshold: float) -> int | None:
    return o.top if o.score >= threshold and o.top is not None else None


def summarize(name: str, n_docs: int, build_s: float, positives: list[Outcome], negatives: list[Outcome],
              canary: list[Outcome], threshold: float) -> dict[str, Any]:
    latencies = [o.seconds * 1000 for o in positives + negatives + canary]

    def rate(outcomes: list[Outcome], ok) -> float | None:
        return sum(map(ok, outcomes)) / len(outcomes) if outcomes else None

    return {
        "scenario": name,
        "documents": n_docs,
        "build_s": build_s,
        "positives": len(positives),
        "top1": rate(positives, lambda o: o.top == o.case.expected),
        "routed": rate(positives, lambda o: routed(o, threshold) == o.case.expected),
        "routed_forward": rate([o for o in positives if o.case.kind == "forward"],
                               lambda o: routed(o, threshold) == o.case.expected),
        "routed_reverse": rate([o for o in positives if o.case.kind == "reverse"],
                               lambda o: routed(o, threshold) == o.case.expected),
        "negatives": len(negatives),
        "fallback": rate(negatives, lambda o: routed(o, threshold) is None),
        "canary_fallback": rate(canary, lambda o: routed(o, threshold) is None),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "median_positive_score": median([o.score for o in positives]),
        "median_negative_score": median([o.score for o in negatives]),
    }


def scenario(name: str, docs: list[IndexedDocument], positives: list[Case], negatives: list[Case],
             canary: list[Case], threshold: float) -> tuple[dict[str, Any], dict[str, list[Outcome]]]:
    started = time.perf_counter()
    router = LexicalRouter(docs, threshold=0.0)
    build_s = time.perf_counter() - started
    outcomes = {"positives": run(router, positives), "negatives": run(router, negatives), "canary": run(router, canary)}
    summary = summarize(name, len(docs), build_s, outcomes["positives"], outcomes["negatives"], outcomes["canary"], threshold)
    print(f"  {name}: {len(docs):,} documents, built in {build_s:.2f} s, {sum(map(len, outcomes.values())):,} questions",
          flush=True)
    return summary, outcomes


def small_kb_scenario(name: str, size: int, negatives: list[Case], canary: list[Case],
                      threshold: float) -> tuple[dict[str, Any], dict[str, list[Outcome]]]:
    """The fictional passages as knowledge bases of `size` documents each; outcomes pooled over them."""
    docs, cases = fictional_documents()
    pooled: dict[str, list[Outcome]] = {"positives": [], "negatives": [], "canary": []}
    build = []
    for start in range(0, len(docs), size):
        group = docs[start:start + size]
        ids = {d.doc_id for d in group}
        started = time.perf_counter()
        router = LexicalRouter(group, threshold=0.0)
        build.append(time.perf_counter() - started)
        pooled["positives"] += run(router, [c for c in cases if c.expected in ids])
        pooled["negatives"] += run(router, negatives)
        pooled["canary"] += run(router, canary)
    summary = summarize(name, size, max(build), pooled["positives"], pooled["negatives"], pooled["canary"], threshold)
    return summary, pooled


def sweep(results: dict[str, dict[str, list[Outcome]]]) -> list[dict[str, Any]]:
    """Per threshold: routed accuracy and fallback rate in each scenario, and their balanced mean."""
    rows = []
    for t in SWEEP:
        row: dict[str, Any] = {"threshold": t}
        accs, falls = [], []
        for name, outcomes in results.items():
            pos, neg, can = outcomes["positives"], outcomes["negatives"], outcomes["canary"]
            acc = sum(routed(o, t) == o.case.expected for o in pos) / len(pos)
            fall = sum(routed(o, t) is None for o in neg) / len(neg)
            row[name] = {"routed": acc, "fallback": fall,
                         "canary_fallback": sum(routed(o, t) is None for o in can) / len(can)}
            accs.append(acc)
            falls.append(fall)
        row["balanced"] = (sum(accs) / len(accs) + sum(falls) / len(falls)) / 2
        rows.append(row)
    return rows


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def build_report(summaries: list[dict[str, Any]], sweep_rows: list[dict[str, Any]], threshold: float,
                 misses: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"Threshold {threshold} (route when score >= threshold). Routed = right document and score >= threshold.",
        "Scenarios: `1 doc` / `3 docs` = the fictional passages as ten 1-document / four <=3-document knowledge",
        "bases (pooled); `fictional` = all 10 passages; `1k` / `10k` = 1,000 / 10,000 generated documents plus",
        "the 10 fictional passages (every generated question at 1k, a seeded sample at 10k, plus the fictional ones);",
        "`1k lowercase` = the 1k scenario with every question (and general question) lowercased.",
        "",
        "| scenario | docs | questions | top-1 | routed | routed fwd | routed rev | general → base (n) "
        "| canary → base | build s | route p50 ms | route p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['scenario']} | {s['documents']:,} | {s['positives']:,} | {pct(s['top1'])} | {pct(s['routed'])} "
            f"| {pct(s['routed_forward'])} | {pct(s['routed_reverse'])} | {pct(s['fallback'])} ({s['negatives']}) "
            f"| {pct(s['canary_fallback'])} | {s['build_s']:.2f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} |"
        )
    names = [s["scenario"] for s in summaries]
    lines += ["", "Threshold sweep (routed accuracy / general → base; the canary is not part of `balanced`):", "",
              "| threshold | " + " | ".join(names) + " | canary → base (1k) | balanced |",
              "|---:|" + "---:|" * (len(names) + 2)]
    for row in sweep_rows:
        cells = [f"{pct(row[n]['routed'])} / {pct(row[n]['fallback'])}" for n in names]
        canary_1k = row["1k"]["canary_fallback"] if "1k" in row else None
        mark = " **(used)**" if abs(row["threshold"] - threshold) < 1e-9 else ""
        lines.append(f"| {row['threshold']:.2f}{mark} | " + " | ".join(cells) + f" | {pct(canary_1k)} | {row['balanced']:.3f} |")
    for title, rows in misses.items():
        if rows:
            lines += ["", f"{title} ({len(rows)}):", ""]
            lines += [f"- {r['score']:.2f} `{r['question']}` → {r['got']}" for r in rows[:25]]
            if len(rows) > 25:
                lines.append(f"- … {len(rows) - 25} more in the JSON")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--seed", type=int, default=0, help="docgen seed")
    parser.add_argument("--sample-10k", type=int, default=3000, help="generated questions asked at 10k documents")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    negatives, canary = negative_cases()
    fictional, fictional_cases = fictional_documents()
    fictional_beside, fictional_beside_cases = fictional_documents(FICTIONAL_OFFSET)
    print("generating 10,000 documents", flush=True)
    started = time.perf_counter()
    generated = generate_documents(10_000, seed=args.seed)
    gen_docs, gen_cases = as_cases(generated)
    problems = check_unique_names(generated)
    print(f"  {time.perf_counter() - started:.1f} s; every answer is in its text; "
          f"{sum(len(g.names) for g in generated):,} invented names, {len(problems)} used by more than one document",
          flush=True)
    for problem in problems[:10]:
        print(f"    {problem}")
    by_doc = [c for c in gen_cases if c.expected < 1000]
    sample = random.Random(args.seed).sample(gen_cases, min(args.sample_10k, len(gen_cases)))

    results: dict[str, dict[str, list[Outcome]]] = {}
    summaries = []
    print("routing", flush=True)
    for name, size in (("1 doc", 1), ("3 docs", 3)):
        summary, outcomes = small_kb_scenario(name, size, negatives, canary, args.threshold)
        summaries.append(summary)
        results[name] = outcomes
    for name, docs, positives in (
        ("fictional", fictional, fictional_cases),
        ("1k", gen_docs[:1000] + fictional_beside, by_doc + fictional_beside_cases),
        ("10k", gen_docs + fictional_beside, sample + fictional_beside_cases),
    ):
        summary, outcomes = scenario(name, docs, positives, negatives, canary, args.threshold)
        summaries.append(summary)
        results[name] = outcomes
    # The same 1k questions typed in lowercase: the router weighs as names the terms the top document capitalises.
    summary, outcomes = scenario("1k lowercase", gen_docs[:1000] + fictional_beside, lowercase(by_doc + fictional_beside_cases),
                                 lowercase(negatives), lowercase(canary), args.threshold)
    summaries.append(summary)
    results["1k lowercase"] = outcomes
    sweep_rows = sweep(results)

    def miss_rows(outcomes: list[Outcome]) -> list[dict[str, Any]]:
        return [{"question": o.case.question, "kind": o.case.kind, "expected": o.case.expected,
                 "got": routed(o, args.threshold), "top": o.top, "score": round(o.score, 4)}
                for o in outcomes if routed(o, args.threshold) != o.case.expected]

    misses = {
        "Fictional questions missed (10 passages indexed)": miss_rows(results["fictional"]["positives"]),
        "Questions missed at 1k": miss_rows(results["1k"]["positives"]),
        "General questions routed at 1k": miss_rows(results["1k"]["negatives"]),
        "General questions routed with the 10 fictional passages": miss_rows(results["fictional"]["negatives"]),
        "Canary questions routed at 1k (held out)": miss_rows(results["1k"]["canary"]),
        "Lowercase questions missed at 1k": miss_rows(results["1k lowercase"]["positives"]),
        "Lowercase general questions routed at 1k": miss_rows(results["1k lowercase"]["negatives"]),
    }
    report = build_report(summaries, sweep_rows, args.threshold, misses)
    print()
    print(report)

    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"knowledge-router-{stamp}.json", args.out / f"knowledge-router-{stamp}.md"
    scores = {name: {kind: [{"question": o.case.question, "expected": o.case.expected, "top": o.top,
                             "score": round(o.score, 4)} for o in outcomes[kind]]
                     for kind in ("negatives", "canary")} for name, outcomes in results.items()}
    payload = {
        "argv": sys.argv, "stamp": stamp, "threshold": args.threshold, "seed": args.seed,
        "python": platform.python_version(), "machine": platform.machine(),
        "name_problems": problems[:100], "summaries": summaries, "sweep": sweep_rows, "misses": misses, "general_scores": scores,
    }
    json_path.write_text(json.dumps(payload, indent=1))
    md_path.write_text(f"# Knowledge router benchmark {stamp}\n\n`{' '.join(sys.argv)}`\n\n{report}\n")
    print(f"\nJSON: {json_path}\nMarkdown: {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
