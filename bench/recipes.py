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

`--variants 48x6,24x4,16x3` compares context distillation at several sizes instead: questions the
teacher answers per document x epochs, each optionally with training options the recipe does not
set: `48x6:grouped` (batches grouped by row length), `48x6:bf16` or `48x6:fp32` (the trainer's matrix
products in bf16 or float32, where the default is the worker's: bf16 where the shard recipe asks for it
and the CPU computes it natively), `48x3:lr0.004` (another learning rate than the recipe's),
`48x3:bs4` (another batch size than TrainConfig's 8), `48x6:teach24` (the teacher answers in 24
tokens rather than the recipe's, at most the user's 48: fewer tokens to generate, and shorter rows to
train on every pass), and `48x6:prefixes` or `48x6:wholes` (facts also asked as far as the asked
name, facts.prefix_items, or not; the default is the recipe's). The
learn's minute is spent there (issue 29), so this is the frontier between its time and its recall,
beside reading, on the same documents.

Two arms measure the questions rather than the recipe. `:ceiling` also trains on the graded questions
with their gold answers: what the LoRA can hold. `:asked` asks half of them as users would and teaches
the teacher's answers (reading the document, never the gold); every arm is then graded on the half
users asked and on the half no one asked, apart: does a question in the users' words carry over?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median  # noqa: E402  (bench/ is on sys.path when run as a script)
from docgen import generate_documents  # noqa: E402

from workers.seal.datasets import Passage, draw_squad  # noqa: E402
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
    chosen = draw_squad(data, n, seed)
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


# A variant's options after its size (`48x6:grouped`, `48x6:fp32`, `48x6:checked:clauses`), and their
# labels: batches grouped by length (TrainConfig); matrix products in bf16 or float32 (by default as a
# worker trains the shard recipe: bf16 where the recipe asks for it and the CPU computes it natively);
# the teacher checked, facts asked by clause and as far as the asked name (DistillConfig; by default as
# the recipe sets them); the ceiling, which also trains on the graded questions
# (HarnessConfig.train_on_probes); and `asked`, where half of them are asked as users would and the
# teacher's answers to them are taught (HarnessConfig.users_ask_half). With `asked` in a run, every arm
# is also graded on each half apart.
TRAIN_OPTIONS = {"grouped": "batches grouped by length", "bf16": "bf16 autocast", "fp32": "float32 products",
                 "checked": "teacher answers checked", "unchecked": "every teacher answer",
                 "clauses": "short answers asked by clause too", "sentences": "short answers asked by sentence only",
                 "prefixes": "facts asked as far as the asked name too", "wholes": "facts asked by whole sentence only",
                 "ceiling": "the graded questions trained too (a ceiling, not a recipe)",
                 "asked": "half the graded questions asked by users, read and taught"}


def _option(options: tuple[str, ...], on: str, off: str, recipe: bool) -> bool:
    """A distillation option as the variant names it, else as the recipe sets it."""
    return on in options or (recipe and off not in options)


# Options that carry a value: the learning rate and the batch size, so that fewer epochs can be tried
# at as many optimizer steps (`48x3:bs4`) or at a larger step (`48x3:lr0.004`); and the teacher's answer
# budget (`48x6:teach24`), which bounds the teacher's generation and the longest rows a pass trains on.
VALUE_OPTIONS = {"lr": ("learning rate", float), "bs": ("batch size", int),
                 "teach": ("teacher answer tokens", int)}


def _valued(option: str) -> tuple[str, float | int] | None:
    """"lr0.004" -> ("lr", 0.004), "bs4" -> ("bs", 4); None for anything else."""
    for name, (_, kind) in VALUE_OPTIONS.items():
        if option.startswith(name):
            try:
                value = kind(option[len(name):])
            except ValueError:
                return None
            return (name, value) if value > 0 else None
    return None


def option_label(option: str) -> str:
    valued = _valued(option)
    if valued is None:
        return TRAIN_OPTIONS[option]
    return f"{VALUE_OPTIONS[valued[0]][0]} {valued[1]:g}"


def parse_variants(spec: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """"48x6,48x6:bf16" -> [(48, 6, ()), (48, 6, ("bf16",))]: distillation questions x epochs, and the
    training options (TRAIN_OPTIONS, VALUE_OPTIONS) that differ from the recipe's."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        size, *options = part.split(":")
        questions, sep, epochs = size.partition("x")
        if not (sep and questions.isdigit() and epochs.isdigit() and int(questions) > 0 and int(epochs) > 0
                and all(o in TRAIN_OPTIONS or _valued(o) for o in options)):
            raise argparse.ArgumentTypeError(
                f"a variant is QUESTIONSxEPOCHS[:{'|'.join(TRAIN_OPTIONS)}|lrX|bsN...], like 24x4, 48x6:bf16 "
                f"or 48x3:bs4; got {part!r}")
        out.append((int(questions), int(epochs), tuple(options)))
    if not out:
        raise argparse.ArgumentTypeError("--variants names no variant")
    return out


def render_variants(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| Documents | Distillation | n | Forward containment | Forward F1 | Reverse containment | Reverse F1 "
             "| teacher s (p50) | training s (p50) | s per document (p50) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for way in ("forward", "reverse"):
            m = r[way]
            cells.append("– | –" if m is None else
                         f"{100 * m['containment']:.0f}% ({round(m['containment'] * m['n'])}/{m['n']}) | {100 * m['f1']:.0f}")
        timing = " | ".join("–" if r.get(k) is None else f"{r[k]:.0f}"
                            for k in ("teacher_p50", "train_p50", "seconds_p50"))
        source = r["source"] if r.get("half", "all") == "all" else f"{r['source']}, {r['half']}"
        lines.append(f"| {source} | {r['label']} | {r['documents']} | {cells[0]} | {cells[1]} | {timing} |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--variants", type=parse_variants, default=None,
                        help="compare distillation sizes instead of recipes: QUESTIONSxEPOCHS,... (48x6,24x4)")
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
    if args.variants:
        return run_variants(args, settings, shard, gen_passages + sq_passages, gen_dirs | sq_dirs, sources)
    cfg = HarnessConfig(conditions=("passage", "self-edit", "context"), formats=("facts", "distill"),
                        train=shard.train_config(), eval=EvalConfig(max_tokens=48), seed=args.seed)
    trainer = LoraTrainer(str(Path(settings.model_path).resolve()), device=settings.resolved_device().value,
                          dtype=settings.resolved_dtype(), num_threads=args.threads,
                          bf16_autocast=settings.resolved_train_bf16_autocast())
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


def run_variants(args: argparse.Namespace, settings: Any, shard: Any, passages: list[Passage],
                 directions: dict[str, str], sources: dict[str, str]) -> int:
    """Reading once, then context distillation at each (questions, epochs), on the same documents."""
    from dataclasses import replace

    from workers.seal.config import EvalConfig
    from workers.seal.distill import DistillConfig
    from workers.seal.harness import HarnessConfig, run_harness, users_half
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(Path(settings.model_path).resolve()), device=settings.resolved_device().value,
                          dtype=settings.resolved_dtype(), num_threads=args.threads,
                          bf16_autocast=settings.resolved_train_bf16_autocast())
    generator = HFGenerator(trainer)
    t0 = time.perf_counter()
    runs: list[tuple[str, int | None, int | None, tuple[str, ...]]] = [
        ("reading (document in the prompt)", None, None, ())]
    runs += [(", ".join([f"{q} questions x {e} epochs"] + [option_label(o) for o in options]), q, e, options)
             for q, e, options in args.variants]
    rows = []
    autocast = trainer.bf16_autocast
    halves: list[tuple[str, dict[str, str]]] = [("all", directions)]
    if any("asked" in options for _, _, options in args.variants):
        asked = {p.question for passage in passages for p in users_half(passage.doc.probes)}
        halves += [("asked by users", {q: d for q, d in directions.items() if q in asked}),
                   ("never asked", {q: d for q, d in directions.items() if q not in asked})]
    for label, questions, epochs, options in runs:
        valued = dict(filter(None, map(_valued, options)))
        train = (shard.train_config() if epochs is None else
                 replace(shard.train_config(), epochs=epochs, group_by_length="grouped" in options,
                         **({"bf16_autocast": True} if "bf16" in options else {}),
                         **({"lr": valued["lr"]} if "lr" in valued else {}),
                         **({"batch_size": valued["bs"]} if "bs" in valued else {})))
        trainer.bf16_autocast = "bf16" in options or (autocast and "fp32" not in options)
        # The recipe's distillation, as a learn builds it, with what this arm names instead.
        distill = DistillConfig.of(shard.selfedit_config(), max_questions=questions or shard.distill_questions,
                                   checked=_option(options, "checked", "unchecked", shard.distill_checked),
                                   clauses=_option(options, "clauses", "sentences", shard.distill_clauses),
                                   prefixes=_option(options, "prefixes", "wholes", shard.distill_prefixes),
                                   answer_tokens=valued.get("teach", shard.distill_answer_tokens))
        cfg = HarnessConfig(conditions=("context",) if questions is None else ("self-edit",), formats=("distill",),
                            train=train, eval=EvalConfig(max_tokens=48), seed=args.seed, distill=distill,
                            train_on_probes="ceiling" in options, users_ask_half="asked" in options)
        out = args.out / ("reading" if questions is None
                          else "-".join([f"distill-{questions}x{epochs}", *options]))
        print(f"{label}:", flush=True)
        records = run_harness(generator=generator, trainer=trainer, passages=passages, cfg=cfg, out_dir=str(out),
                              progress=lambda key, done, total: print(f"  {key}: {done}/{total}", flush=True))
        for row in [r | {"half": half} for half, dirs in halves for r in table(records, dirs, sources)]:
            recs = [r for r in records if sources[r["passage_id"]] == row["source"]]
            teacher = [r["teacher_seconds"] for r in recs if "teacher_seconds" in r]
            train_s = [r["train_seconds"] for r in recs if "train_seconds" in r]
            rows.append(row | {"label": label, "questions": questions, "epochs": epochs,
                               "teacher_p50": median(teacher) if teacher else None,
                               "train_p50": median(train_s) if train_s else None})
    rows.sort(key=lambda r: (r["source"], r["half"] != "all", r["half"]))
    header = (f"Context distillation by size ({Path(settings.model_path).name}, seed {args.seed}, LoRA r{shard.rank} "
              f"lr {shard.lr:g}, 48-token answers, {args.threads} thread(s), {time.perf_counter() - t0:.0f} s this run)")
    text = render_variants(rows, header)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variants.md").write_text(text)
    (args.out / "variants.json").write_text(json.dumps({"rows": rows, "seed": args.seed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
