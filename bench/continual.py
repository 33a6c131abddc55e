"""Continual-learning benchmark: the retention matrix of one adapter stream (SEAL paper, Figure 6).

Learns N passages one after another into one adapter with the worker's own code path
(workers.seal: learn_document -> gate_candidate -> StreamMemory.absorb), and after each step
asks every passage's held-out questions closed-book. Cell (j, i) is the accuracy on passage i
after learning passage j. Conditions, side by side in one run:

    replay+gate     the service's defaults
    gate            the gate, no rehearsal
    replay          rehearsal, every candidate published
    naive           neither: plain sequential fine-tuning, the paper's setting

"Rehearsal" is what the worker mixes into each training run: a sample of earlier documents'
sequences (--replay-ratio per new one) plus base-model answers to general prompts (anchors).

    .venv/bin/python bench/continual.py                          # 10 passages, all four conditions
    .venv/bin/python bench/continual.py --passages 5 --conditions replay+gate,naive
    .venv/bin/python bench/continual.py --replay-ratios 1,4,8      # sweep the replay ratio (with gate)
    .venv/bin/python bench/continual.py --render a/results.json b/results.json   # merge parallel runs

Prints a table per condition and a summary (final mean accuracy, passage-1 retention), and
writes results.json, retention.md and retention.png to --out. Training and scoring run in this
process with peft on the best local device (CPU here: no vLLM needed for the passage format).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from app.config import Settings  # noqa: E402
from workers.seal import Document, Probe, SelfEditConfig, TrainConfig, learn_document  # noqa: E402
from workers.seal.continual import (  # noqa: E402
    GateConfig,
    ReplayConfig,
    StreamMemory,
    anchor_sequences,
    gate_candidate,
    load_canary,
    sample_anchors,
)
from workers.seal.evaluate import evaluate_probes  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fictional_dev.jsonl"
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
console = Console()


@dataclass
class Condition:
    name: str
    replay_ratio: float
    gate: bool


def parse_conditions(names: str, ratios: str | None, default_ratio: float) -> list[Condition]:
    if ratios:
        return [Condition(f"replay×{r}+gate" if float(r) else "gate", float(r), True) for r in ratios.split(",")]
    table = {"replay+gate": Condition("replay+gate", default_ratio, True), "gate": Condition("gate", 0.0, True),
             "replay": Condition("replay", default_ratio, False), "naive": Condition("naive", 0.0, False)}
    return [table[n] for n in names.split(",")]


def load_passages(path: Path, n: int) -> list[tuple[Document, list[Probe]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:n]
    out = []
    for row in rows:
        probes = [Probe(question=q["question"], answer=q["answer"]) for q in row["questions"]]
        out.append((Document(title=row["title"], text=row["context"], probes=probes), probes))
    return out


def run_condition(cond: Condition, passages: list[tuple[Document, list[Probe]]], trainer: Any, scorer: Any,
                  canary: list[Probe], anchors: list[str], workdir: Path, epochs: int,
                  canary_margin: float, old_margin: float) -> dict[str, Any]:
    n = len(passages)
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    memory, current = StreamMemory(), None
    steps = []
    # Re-ask every earlier probe: it is the matrix. The margins are the service's for this model.
    gate_cfg = GateConfig(enabled=cond.gate, max_old_probes=10_000, canary_margin=canary_margin,
                          old_margin=old_margin)
    replay_cfg = ReplayConfig(ratio=cond.replay_ratio)
    for j, (doc, probes) in enumerate(passages):
        t0 = time.perf_counter()
        # As the worker does (SEAL_WARM_START=false): with rehearsal, rebuild from the base weights on
        # every earlier sequence; without it, warm-start from the current version (plain sequential).
        rebuild = cond.replay_ratio > 0
        replay = list(memory.sequences) if rebuild else []
        if rebuild:
            replay += sample_anchors(anchors, replay_cfg.anchors, seed=j)
        result = learn_document(
            generator=scorer, trainer=trainer, doc=doc, selfedit_cfg=SelfEditConfig(format="passage"),
            train_cfg=TrainConfig(epochs=epochs), workdir=str(workdir / f"{cond.name}-{j}"),
            parent_adapter_dir=current, warm_start=not rebuild, replay_sequences=replay, eval_generator=scorer,
        )
        candidate = ("candidate", result.best_adapter_dir)
        report = gate_candidate(
            scorer=scorer, candidate=candidate, parent=("parent", current) if current else None, memory=memory,
            canary=canary, cfg=gate_cfg, new_before=result.accuracy_before, new_after=result.accuracy_after,
            new_predictions=result.candidates[result.best_index].predictions, seed=j,
        )
        accepted = report.decision.accepted
        if accepted:
            kept = workdir / f"{cond.name}-v{j}"
            shutil.copytree(result.best_adapter_dir, kept)
            current = str(kept)
            memory = memory.absorb(title=doc.title, probes=probes, sequences=result.new_sequences,
                                   results=report.results)
            # The gate just graded this version on every earlier probe: reuse it as the matrix row.
            by_q = {r["question"]: r["correct"] for r in report.old_predictions}
            by_q.update({r["question"]: r["correct"] for r in result.candidates[result.best_index].predictions})
        else:
            # Rejected: the parent keeps serving, so the row is the parent's answers.
            preds = evaluate_probes(scorer, [p for _, ps in passages[: j + 1] for p in ps],
                                    adapter=("parent", current) if current else None).predictions
            by_q = {r["question"]: r["correct"] for r in preds}
        for i in range(j + 1):
            qs = passages[i][1]
            matrix[j][i] = sum(by_q.get(p.question, False) for p in qs) / len(qs)
        numbers = report.decision.numbers
        steps.append({"step": j, "title": doc.title, "accepted": accepted, "reasons": report.decision.reasons,
                      "replayed": len(replay), "canary_before": numbers.get("canary_before"), "new_before": result.accuracy_before,
                      "new_after": result.accuracy_after, "canary_after": numbers.get("canary_after"),
                      "seconds": round(time.perf_counter() - t0, 1)})
        console.print(f"[{cond.name}] step {j + 1}/{n} {doc.title}: "
                      f"{'published' if accepted else 'REJECTED'}, new {result.accuracy_before:.2f}->"
                      f"{result.accuracy_after:.2f}, row mean {mean(matrix[j][: j + 1]):.2f}, "
                      f"canary {numbers.get('canary_after', float('nan')):.2f}, {steps[-1]['seconds']} s")
    return {"condition": cond.name, "replay_ratio": cond.replay_ratio, "gate": cond.gate, "matrix": matrix,
            "steps": steps, **summarize(matrix)}


def mean(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else 0.0


def summarize(matrix: list[list[float | None]]) -> dict[str, float]:
    n = len(matrix)
    first_learned, first_final = matrix[0][0] or 0.0, matrix[n - 1][0] or 0.0
    return {"final_mean": mean(matrix[n - 1]), "passage1_learned": first_learned, "passage1_final": first_final,
            "passage1_retention": first_final / first_learned if first_learned else 0.0,
            "mean_just_learned": mean([matrix[j][j] for j in range(n)])}


def print_tables(results: list[dict[str, Any]]) -> str:
    md = []
    for res in results:
        n = len(res["matrix"])
        table = Table(title=f"{res['condition']}: accuracy on passage i (columns) after learning passage j (rows)")
        table.add_column("after j")
        for i in range(n):
            table.add_column(str(i + 1), justify="right")
        md.append(f"### {res['condition']}\n\n| after j | " + " | ".join(str(i + 1) for i in range(n)) + " |")
        md.append("|---" * (n + 1) + "|")
        for j, row in enumerate(res["matrix"]):
            cells = ["" if v is None else f"{v:.2f}" for v in row]
            mark = "" if res["steps"][j]["accepted"] else " (rejected)"
            table.add_row(f"{j + 1}{mark}", *cells)
            md.append(f"| {j + 1}{mark} | " + " | ".join(cells) + " |")
        md.append("")
        console.print(table)
    summary = Table(title="Summary")
    for col in ("condition", "final mean acc", "passage 1 just learned", "passage 1 at end", "retention",
                "mean just-learned", "rejected", "s/step (median)"):
        summary.add_column(col, justify="right")
    md.append("| condition | final mean acc | passage 1 just learned | passage 1 at end | retention | "
              "mean just-learned | rejected | s/step (median) |\n|---|---|---|---|---|---|---|---|")
    for res in results:
        secs = sorted(s["seconds"] for s in res["steps"])
        row = [res["condition"], f"{res['final_mean']:.2f}", f"{res['passage1_learned']:.2f}",
               f"{res['passage1_final']:.2f}", f"{res['passage1_retention']:.0%}", f"{res['mean_just_learned']:.2f}",
               str(sum(not s["accepted"] for s in res["steps"])), f"{secs[len(secs) // 2]:.0f}"]
        summary.add_row(*row)
        md.append("| " + " | ".join(row) + " |")
    console.print(summary)
    return "\n".join(md) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.0), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        n = len(res["matrix"])
        grid = [[float("nan") if v is None else v for v in row] for row in res["matrix"]]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{res['condition']}\nfinal mean {res['final_mean']:.2f}, p1 kept {res['passage1_retention']:.0%}",
                     fontsize=9)
        ax.set_xlabel("passage i evaluated")
        ax.set_ylabel("after learning passage j")
        ax.set_xticks(range(n), [str(i + 1) for i in range(n)], fontsize=7)
        ax.set_yticks(range(n), [str(j + 1) for j in range(n)], fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="closed-book accuracy")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--passages", type=int, default=10)
    ap.add_argument("--conditions", default="naive,replay+gate,gate,replay")
    ap.add_argument("--replay-ratios", default=None, help="sweep these ratios (all with the gate) instead")
    ap.add_argument("--replay-ratio", type=float, default=ReplayConfig().ratio, help="ratio for the replay conditions")
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    service = Settings()
    ap.add_argument("--canary-margin", type=float, default=service.gate_canary_margin)
    ap.add_argument("--old-margin", type=float, default=service.gate_old_margin)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "continual")
    ap.add_argument("--render", type=Path, nargs="+", metavar="RESULTS_JSON",
                    help="no training: merge results.json files of earlier runs (e.g. conditions run in "
                         "parallel processes) into one table and heatmap in --out")
    args = ap.parse_args()
    if args.render:
        results = [r for path in args.render for r in json.loads(path.read_text())]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        (args.out / "retention.md").write_text(print_tables(results))
        plot(results, args.out / "retention.png")
        console.print(f"wrote {args.out}/results.json, retention.md, retention.png")
        return

    import torch

    from workers.seal import HFGenerator, LoraTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainer = LoraTrainer(str(MODEL_DIR), device=device, dtype="bfloat16" if device == "cuda" else "float32",
                          num_threads=args.threads)
    scorer = HFGenerator(trainer)
    canary = load_canary()
    args.out.mkdir(parents=True, exist_ok=True)
    anchors = anchor_sequences(scorer, trainer.render_chat, cache_file=str(args.out / "anchors.json"),
                               model_id=str(MODEL_DIR))
    passages = load_passages(args.data, args.passages)
    conditions = parse_conditions(args.conditions, args.replay_ratios, args.replay_ratio)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="seal-continual-") as tmp:
        for cond in conditions:
            results.append(run_condition(cond, passages, trainer, scorer, canary, anchors, Path(tmp), args.epochs,
                                         args.canary_margin, args.old_margin))
            (args.out / "results.json").write_text(json.dumps(results, indent=2))  # partial results survive a kill
    md = print_tables(results)
    header = (f"Passages: {len(passages)} of {args.data.name}; epochs {args.epochs}; device {device}; "
              f"wall time {(time.time() - started) / 60:.1f} min.\n\n")
    (args.out / "retention.md").write_text(header + md)
    plot(results, args.out / "retention.png")
    console.print(f"wrote {args.out}/results.json, retention.md, retention.png")


if __name__ == "__main__":
    main()
