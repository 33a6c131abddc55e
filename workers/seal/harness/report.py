"""Harness outputs: JSON with every prediction, a Markdown table, and a PNG bar chart."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def render_table(rows: Sequence[dict]) -> str:
    """A Markdown table: one row per condition; accuracy is normalized containment over all questions."""
    judged = any(r.get("judge_accuracy") is not None for r in rows)
    head = "| Condition | Passages | Questions | Accuracy (containment) | Token F1 |"
    sep = "|---|---:|---:|---:|---:|"
    if judged:
        head += " LLM judge |"
        sep += "---:|"
    head += " Wall time |"
    sep += "---:|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['condition']} | {r['passages']} | {r['questions']} | {100 * r['accuracy']:.1f}% "
                f"| {100 * r['f1']:.1f} |")
        if judged:
            ja = r.get("judge_accuracy")
            line += f" {100 * ja:.1f}% |" if ja is not None else " – |"
        line += f" {r['seconds']:.0f} s |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot_chart(rows: Sequence[dict], path: Path, title: str) -> None:
    """A bar chart of accuracy per condition (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["condition"] for r in rows]
    accs = [100 * r["accuracy"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows)), 4.0))
    bars = ax.bar(range(len(rows)), accs, color="#4C72B0")
    for bar, acc in zip(bars, accs, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, f"{acc:.1f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=9)
    ax.set_ylabel("accuracy (%, normalized containment)")
    ax.set_ylim(0, max(100.0, max(accs, default=0) + 10))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out_dir: str, *, rows: Sequence[dict], records: Sequence[dict], meta: dict, title: str) -> dict:
    """Write results.json, results.md and results.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "chart": out / "results.png"}
    paths["json"].write_text(json.dumps({"meta": meta, "summary": list(rows), "records": list(records)}, indent=1))
    paths["markdown"].write_text(f"### {title}\n\n" + render_table(rows))
    plot_chart(rows, paths["chart"], title)
    return {k: str(v) for k, v in paths.items()}
