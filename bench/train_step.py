"""Training time per epoch on real text (random or length-grouped batches, float32 or bf16
products, each row's chat prompt run whole or once per batch), the teacher's pass with every prompt whole or the document shared, and a new shard's two
base-model measures in two batches or one.

    .venv/bin/python bench/train_step.py --squad 2 --rounds 3

Training and the teacher are most of a learn on real text (docs/RESULTS.md). For each SQuAD paragraph
(SEAL's evaluation split, seeded) the teacher builds the shard recipe's distillation set once,
exactly as a learn job does; then one epoch of the shard's LoRA training runs in each arm, and the
teacher's pass (its targets over the answers) runs with every prompt whole and with the document
shared, all taking turns for --rounds rounds, so that the machine's drift falls on every arm alike.
It prints the median seconds, the ratio to the first arm, and the padding each training arm computes.
Whether an arm learns as well is bench/recipes.py's question (`--variants 48x6:bf16`); the shared
document gives the same targets within 1e-4, and the shared prompt the same loss and gradients
(tests/seal/test_train.py).

`--profile` also runs one more epoch of the learn's arm under torch.profiler and prints where its CPU
time goes, by operator, with the rate the matrix products ran at (the profiler's FLOP count over
their time): whether an epoch is bound by arithmetic or by everything around it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stats import median  # noqa: E402  (bench/ is on sys.path when run as a script)

from workers.seal.datasets import load_squad  # noqa: E402


def training_arms(native_bf16: bool, recipe_bf16: bool) -> list[tuple[str, bool, bool, bool]]:
    """(label, batches grouped by length, matrix products in bf16, the chat prompt run once per batch),
    the first being the reference. bf16 arms run only on a CPU with native bf16 (elsewhere autocast
    emulates bf16 and times nothing a learn could do). The learn's arm trains as a worker would: in bf16
    only where the CPU has it *and* the shard recipe asks for it (TrainConfig.bf16_autocast)."""
    learn_bf16 = native_bf16 and recipe_bf16
    products = "bf16 autocast" if learn_bf16 else "float32"
    arms = [("random batches, float32, every row whole", False, False, False)]
    if native_bf16:
        arms.append(("random batches, bf16 autocast, every row whole", False, True, False))
    arms += [(f"random batches, {products}, prompt shared (the learn's)", False, learn_bf16, True),
             (f"grouped by length, {products}, prompt shared", True, learn_bf16, True)]
    return arms


TEACHER_ARMS = (("every prompt whole", False), ("the document run once and shared (the learn's)", True))
# A new shard's base-model measures of its probes: closed-book and read in context.
MEASURE_ARMS = ("two batches, one per way", "one batch for both (the learn's)")


def padding(lengths: list[int], batch_size: int, seed: int, grouped: bool) -> int:
    from workers.seal.train import epoch_batches

    batches = epoch_batches(lengths, batch_size, random.Random(seed), grouped=grouped)
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def profile_epoch(trainer, rows, cfg, share_prefix: bool) -> str:  # noqa: ANN001
    """One epoch under torch.profiler: the operators that took the most CPU time, and the matrix
    products' rate."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as out, profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        trainer.train_rows(rows, cfg, out, share_prefix=share_prefix)
        wall = time.perf_counter() - t0
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    lines = [f"One epoch of the learn's arm, profiled: {wall:.1f} s", "",
             "| operator | self CPU s | share | calls |", "|---|---:|---:|---:|"]
    lines += [f"| {e.key} | {e.self_cpu_time_total / 1e6:.2f} | {e.self_cpu_time_total / total:.0%} | {e.count} |"
              for e in ops[:8]]
    products = [e for e in ops if e.key in ("aten::mm", "aten::addmm", "aten::bmm") and e.flops]
    if products:
        flops = sum(e.flops for e in products)
        secs = sum(e.self_cpu_time_total for e in products) / 1e6
        lines += ["", f"Matrix products: {flops / 1e9:.0f} GFLOP in {secs:.1f} s, {flops / 1e9 / secs:.0f} GFLOP/s"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=int, default=2, help="SQuAD paragraphs")
    parser.add_argument("--seed", type=int, default=7219, help="paragraph draw seed")
    parser.add_argument("--rounds", type=int, default=3, help="epochs per arm and paragraph, arms taking turns")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "squad_val.json")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_step")
    parser.add_argument("--profile", action="store_true", help="profile one epoch of the learn's arm by operator")
    args = parser.parse_args()

    from app.config import Settings
    from workers.seal import recipes
    from workers.seal.distill import DistillConfig, build_distillation
    from workers.seal.evaluate import evaluate_probes, evaluate_probes_ways, question_prompt
    from workers.seal.hfgen import HFGenerator
    from workers.seal.reading import reading_messages
    from workers.seal.train import LoraTrainer

    settings = Settings()
    shard = recipes.load_recipe(settings.model_path, settings.resolved_recipe_dir()).for_shards()
    arms = training_arms(settings.resolved_train_bf16_autocast(), shard.bf16_autocast)
    trainer = LoraTrainer(str(Path(settings.model_path).resolve()), device=settings.resolved_device().value,
                          dtype=settings.resolved_dtype(), num_threads=args.threads)
    passages = load_squad(args.data)
    chosen = random.Random(args.seed).sample(passages, args.squad)
    seconds: dict[str, list[float]] = {label: [] for label, *_ in arms}
    pads: dict[str, list[int]] = {label: [] for label, *_ in arms}
    teacher: dict[str, list[float]] = {label: [] for label, _ in TEACHER_ARMS}
    measures: dict[str, list[float]] = {label: [] for label in MEASURE_ARMS}
    scorer = HFGenerator(trainer)  # the worker's scorer on a CPU
    sizes: list[dict] = []
    profiles: list[str] = []
    for passage in chosen:
        distillation = build_distillation(scorer, trainer, passage.doc,
                                          DistillConfig.of(shard.selfedit_config()))
        base = shard.train_config()
        rows = distillation.rows + trainer.encode(distillation.short_answers, base.max_seq_len)
        lengths = [len(r[0]) for r in rows]
        sizes.append({"passage": passage.id, "rows": len(rows), "questions": len(distillation.records),
                      "tokens": sum(lengths),
                      "shortest": min(lengths), "longest": max(lengths)})
        print(f"{passage.id}: {len(rows)} rows, {min(lengths)}-{max(lengths)} tokens", flush=True)
        asked = [{"role": "user", "content": r["question"]} for r in distillation.records]
        teachers = [reading_messages(passage.doc.title, passage.doc.text, r["question"]) for r in distillation.records]
        probes = passage.doc.probes[:4]

        def read(question: str, doc=passage.doc) -> list[dict[str, str]]:
            return reading_messages(doc.title, doc.text, question)

        for r in range(args.rounds):
            t0 = time.perf_counter()
            evaluate_probes(scorer, probes)
            evaluate_probes(scorer, probes, prompt=read)
            measures[MEASURE_ARMS[0]].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            evaluate_probes_ways(scorer, probes, (question_prompt, read))
            measures[MEASURE_ARMS[1]].append(time.perf_counter() - t0)
            print(f"  round {r} base measures: {measures[MEASURE_ARMS[0]][-1]:.1f} s against "
                  f"{measures[MEASURE_ARMS[1]][-1]:.1f} s", flush=True)
            for label, share in TEACHER_ARMS:
                t0 = time.perf_counter()
                trainer.teacher_rows(students=[[q] for q in asked], teachers=teachers,
                                     answers=[record["answer"] for record in distillation.records], top_k=32,
                                     share_prefix=share)
                teacher[label].append(time.perf_counter() - t0)
                print(f"  round {r} teacher, {label}: {teacher[label][-1]:.1f} s", flush=True)
            for label, grouped, bf16, share in arms:
                cfg = replace(base, epochs=1, seed=r, group_by_length=grouped, bf16_autocast=True)
                trainer.bf16_autocast = bf16
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    trainer.train_rows(rows, cfg, out, share_prefix=share)
                    seconds[label].append(time.perf_counter() - t0)
                pads[label].append(padding(lengths, cfg.batch_size, r, cfg.group_by_length))
                print(f"  round {r} {label}: {seconds[label][-1]:.1f} s", flush=True)

        if args.profile:
            # The learn's arm: random batches, the prompt shared (training_arms puts it after the whole-row arms).
            _, grouped, bf16, share = next(arm for arm in arms if arm[3] and not arm[1])
            trainer.bf16_autocast = bf16
            profiles.append(f"{passage.id}: " + profile_epoch(
                trainer, rows, replace(base, epochs=1, group_by_length=grouped, bf16_autocast=True), share))

    reference = median(seconds[arms[0][0]])
    lines = [f"One epoch of the shard recipe's training ({Path(settings.model_path).name}, LoRA r{shard.rank}, "
             f"batch {shard.train_config().batch_size}, {args.squad} SQuAD paragraphs x {args.rounds} rounds, "
             f"{args.threads} thread(s); arms as TrainConfig.group_by_length, LoraTrainer.bf16_autocast and "
             "train_rows(share_prefix=) set them)",
             "",
             "| Arm | s per epoch (median) | ratio | padding tokens per epoch (median) |", "|---|---:|---:|---:|"]
    for label, *_ in arms:
        m = median(seconds[label])
        lines.append(f"| {label} | {m:.1f} | {m / reference:.2f} | {median(pads[label]):.0f} |")
    whole = median(teacher[TEACHER_ARMS[0][0]])
    lines += ["", f"The teacher's pass over the same distillation sets ({sum(s['questions'] for s in sizes)} questions in all)", "",
              "| Teacher's pass | s (median) | ratio |", "|---|---:|---:|"]
    for label, _ in TEACHER_ARMS:
        m = median(teacher[label])
        lines.append(f"| {label} | {m:.1f} | {m / whole:.2f} |")
    separate = median(measures[MEASURE_ARMS[0]])
    lines += ["", "A new shard's base-model measures: each paragraph's first 4 questions closed-book and read in context",
              "", "| Measures | s (median) | ratio |", "|---|---:|---:|"]
    for label in MEASURE_ARMS:
        m = median(measures[label])
        lines.append(f"| {label} | {m:.1f} | {m / separate:.2f} |")
    text = "\n".join(lines + [""] + profiles) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step.md").write_text(text)
    (args.out / "train_step.json").write_text(json.dumps({"seconds": seconds, "padding": pads, "teacher": teacher, "measures": measures,
                                                          "sets": sizes},
                                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
