"""The shard recipe comparison: facts, passage and context distillation on the same documents, in one run.

    .venv/bin/python bench/recipes.py --documents 4 --squad 3 --seed 311

Each recipe learns every document into a fresh LoRA at the shard's LoRA settings (the recipe JSON's
`shard` section: epochs, lr, rank), then the document's questions are asked closed-book with
48-token answers, graded by containment and token F1. Reading (the base model with the document in
the prompt, `context`) is the bar a shard must reach. Invented documents (bench/docgen.py at a seed no
recipe was tuned on) have forward and reverse questions; SQuAD paragraphs (SEAL's evaluation split,
from its end, far from the passages the old recipes were measured on) have their own questions, all
forward.

It runs through `seal eval`'s harness (workers/seal/harness), which trains and grades exactly as a
learn job does, and caches every (recipe, document) in --out: a stopped run resumes. The table goes
to stdout and to OUT/recipes.md. `seal eval ... --formats facts,distill --recipe-section shard`
writes a winner into the recipe; this bench only measures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import generate_documents  # noqa: E402

from workers.seal.datasets import Passage, load_squad  # noqa: E402
from workers.seal.types import Document, Probe  # noqa: E402

RECIPES = ("passage", "self-edit:facts", "self-edit:distill", "context")
LABELS = {"passage": "passage (next-token on the text)", "self-edit:facts": "facts (entity Q&A)",
          "self-edit:distill": "distill (context distillation)", "context": "reading (document in the prompt)"}


def invented(n: int, seed: int) -> tuple[list[Passage], dict[str, str]]:
    """`n` docgen documents as passages, and each question's direction."""
    passages, direction = [], {}
    for d in generate_documents(n, seed=seed):
        probes = [Probe(q.question, q.answer) for q in d.forward + d.reverse]
        direction |= {q.question: "forward" for q in d.forward} | {q.question: "reverse" for q in d.reverse}
        passages.append(Passage(id=f"gen{seed}-{d.doc_id}", doc=Document(text=d.text, title=d.title, probes=probes)))
    return passages, direction


def squad(n: int, seed: int, data: Path) -> tuple[list[Passage], dict[str, str]]:
    """`n` SQuAD paragraphs of SEAL's evaluation split, drawn with `seed` from its second half."""
    split = load_squad(data, split="eval")
    chosen = random.Random(seed).sample(split[len(split) // 2:], n)
    return chosen, {p.question: "forward" for c in chosen for p in c.doc.probes}


def table(records: list[dict], directions: dict[str, str], sources: dict[str, str]) -> list[dict]:
    """One row per (source, recipe): containment and F1 per direction, and seconds per document."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rec in records:
        groups[(sources[rec["passage_id"]], rec["condition"])].append(rec)
    rows = []
    for (source, condition), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], RECIPES.index(kv[0][1]))):
        row = {"source": source, "recipe": condition, "documents": len(recs),
               "seconds_p50": median([r["seconds"] for r in recs])}
        for way in ("forward", "reverse"):
            preds = [p for r in recs for p in r["predictions"] if directions.get(p["question"]) == way]
            row[way] = ({"n": len(preds), "containment": sum(p["correct"] for p in preds) / len(preds),
                         "f1": sum(p["f1"] for p in preds) / len(preds)} if preds else None)
        rows.append(row)
    return rows


def render(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| Documents | Recipe | n | Forward containment | Forward F1 | Reverse containment | Reverse F1 | s per document (p50) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fwd = "– | –" if r["forward"] is None else f"{100 * r['forward']['containment']:.0f}% | {100 * r['forward']['f1']:.0f}"
        rev = "– | –" if r["reverse"] is None else f"{100 * r['reverse']['containment']:.0f}% | {100 * r['reverse']['f1']:.0f}"
        lines.append(f"| {r['source']} | {LABELS[r['recipe']]} | {r['documents']} | {fwd} | {rev} | "
                     f"{r['seconds_p50']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=4, help="invented documents (docgen)")
    parser.add_argument("--squad", type=int, default=3, help="SQuAD paragraphs")
    parser.add_argument("--seed", type=int, default=311, help="docgen and SQuAD draw seed (never one tuned on)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recipes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 beside another job)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "squad_val.json")
    args = parser.parse_args()

    from app.config import Settings
    from workers.seal import recipes
    from workers.seal.config import EvalConfig
    from workers.seal.harness import HarnessConfig, run_harness
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    settings = Settings()
    shard = recipes.load_recipe(settings.model_path, settings.resolved_recipe_dir()).for_shards()
    gen_passages, gen_dirs = invented(args.documents, args.seed)
    sq_passages, sq_dirs = squad(args.squad, args.seed, args.data) if args.squad else ([], {})
    sources = {p.id: "invented (docgen)" for p in gen_passages} | {p.id: "SQuAD paragraphs" for p in sq_passages}
    cfg = HarnessConfig(conditions=("passage", "self-edit", "context"), formats=("facts", "distill"),
                        train=shard.train_config(), eval=EvalConfig(max_tokens=48), seed=args.seed)
    trainer = LoraTrainer(str(Path(settings.model_path).resolve()), device=settings.resolved_device().value,
                          dtype=settings.resolved_dtype(), num_threads=args.threads)
    t0 = time.perf_counter()
    records = run_harness(generator=HFGenerator(trainer), trainer=trainer, passages=gen_passages + sq_passages,
                          cfg=cfg, out_dir=str(args.out),
                          progress=lambda key, done, total: print(f"  {key}: {done}/{total}", flush=True))
    rows = table(records, gen_dirs | sq_dirs, sources)
    t = shard.train_config()
    header = (f"Recipes side by side ({Path(settings.model_path).name}, seed {args.seed}, LoRA r{t.rank} "
              f"{t.epochs} epochs lr {t.lr:g}, 48-token answers, {args.threads} thread(s), "
              f"{time.perf_counter() - t0:.0f} s this run)")
    text = render(rows, header)
    print(text)
    (args.out / "recipes.md").write_text(text)
    (args.out / "recipes.json").write_text(json.dumps({"rows": rows, "seed": args.seed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
