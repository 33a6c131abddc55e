"""Could a served route choose, question by question, between a shard's weights and reading the document?

    .venv/bin/python bench/knowledge.py --documents 20 --old-documents 0 --router-only-sizes 0 --seed S --keep
    .venv/bin/python bench/route_choice.py bench/results/knowledge-<stamp>.json /tmp/seal-bench-knowledge-<x>/data

`bench/knowledge.py` asks every question from the weights (`seal-answer-from: weights`) and read in
context (`context`), so its report holds both answers to each question. Today's route chooses per
document, on the learn's probes. This takes the run's answers and its shards (the data dir the run
kept with `--keep`) and asks what a per-question choice would buy. It scores each answer by its
log-probability under the route that wrote it and under the other one (transformers + peft, float32,
the run's model): the shard closed-book, and the base model reading the document with the prompt
serving uses (workers/seal/reading.py). Each rule then picks one answer per question. The table gives
the correct answers (containment) and the mean token F1 of the picks, beside the oracle that always
picks a right one. Questions about documents with no published shard are left out.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workers.seal.reading import reading_messages  # noqa: E402

# (label, picks the weights' answer for a scored question). Each score is (sum, mean) token log-probability.
RULES: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("never (reading: the route today)", lambda r: False),
    ("always (the weights)", lambda r: True),
    ("the shard is surer of its answer than the reader of its own (mean log-probability)",
     lambda r: r["w_by_shard"][1] > r["r_by_reader"][1]),
    ("the reader finds it likelier than its own answer (sum)", lambda r: r["w_by_reader"][0] > r["r_by_reader"][0]),
    ("the reader finds it likelier than its own answer (mean)", lambda r: r["w_by_reader"][1] > r["r_by_reader"][1]),
    ("both together find it likelier (product of experts, sum)",
     lambda r: r["w_by_reader"][0] + r["w_by_shard"][0] > r["r_by_reader"][0] + r["r_by_shard"][0]),
    ("both together find it likelier (product of experts, mean)",
     lambda r: r["w_by_reader"][1] + r["w_by_shard"][1] > r["r_by_reader"][1] + r["r_by_shard"][1]),
]


def published_shards(data: Path) -> dict[str, Path]:
    """Shard name → its newest published version's directory, found under `data`/adapters (the run's
    registry records absolute paths, which a copied data dir no longer has)."""
    con = sqlite3.connect(f"file:{data / 'seal.db'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT a.name, v.path FROM adapter_versions v JOIN adapters a ON a.id = v.adapter_id "
                           "WHERE v.status = 'published' ORDER BY v.version").fetchall()
    finally:
        con.close()
    return {name: data / "adapters" / path.split("/adapters/", 1)[1] for name, path in rows}


def paired_answers(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per question with both routes' answers and the document it is about."""
    kb = report["run"]["kb"]
    docs = {e["index"]: (report["documents"][e["index"] - 1], (e.get("document") or {}).get("shard"))
            for e in kb["entries"]}
    by_question: dict[tuple[int, str, str], dict[str, Any]] = {}
    for a in kb["answers"]:
        by_question.setdefault((a["index"], a["direction"], a["question"]), {})[a["way"]] = a
    rows = []
    for (index, direction, question), ways in by_question.items():
        weights, reading = ways.get("weights"), ways.get("reading")
        if not weights or not reading or weights.get("error") or reading.get("error"):
            continue  # no shard answers it (a rejected document: 409 not_learned)
        doc, shard = docs[index]
        rows.append({"index": index, "direction": direction, "question": question, "doc": doc, "shard": shard,
                     "weights": weights["prediction"], "reading": reading["prediction"],
                     "w_correct": weights["correct"], "r_correct": reading["correct"],
                     "w_f1": weights["f1"], "r_f1": reading["f1"]})
    return rows


def score(rows: list[dict[str, Any]], shards: dict[str, Path], model_path: str, threads: int) -> list[dict[str, Any]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32).eval()

    def logprob(model: Any, messages: list[dict[str, str]], answer: str) -> tuple[float, float]:
        prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        target = tok(answer, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + target])).logits[0, len(prompt) - 1 : -1]
        lp = logits.log_softmax(-1).gather(1, torch.tensor(target)[:, None])[:, 0]
        return lp.sum().item(), lp.mean().item()

    scored = []
    for shard in sorted({r["shard"] for r in rows if r["shard"] in shards}):
        mine = [r for r in rows if r["shard"] == shard]
        for r in mine:
            read = reading_messages(r["doc"]["title"], r["doc"]["text"], r["question"])
            r["r_by_reader"], r["w_by_reader"] = logprob(base, read, r["reading"]), logprob(base, read, r["weights"])
        model = PeftModel.from_pretrained(base, str(shards[shard])).eval()
        for r in mine:
            bare = [{"role": "user", "content": r["question"]}]
            r["w_by_shard"], r["r_by_shard"] = logprob(model, bare, r["weights"]), logprob(model, bare, r["reading"])
        base = model.unload()
        scored += mine
    return scored


def table(rows: list[dict[str, Any]]) -> str:
    n = len(rows)
    lines = ["| rule: pick the weights' answer when… | correct | F1 |", "|:---|---:|---:|"]
    for label, picks_weights in RULES:
        correct = sum(r["w_correct"] if picks_weights(r) else r["r_correct"] for r in rows)
        f1 = sum(r["w_f1"] if picks_weights(r) else r["r_f1"] for r in rows) / n
        lines.append(f"| {label} | {correct} of {n} ({correct / n:.0%}) | {f1:.2f} |")
    oracle = sum(r["w_correct"] or r["r_correct"] for r in rows)
    disagree = sum(r["w_correct"] != r["r_correct"] for r in rows)
    only_weights = sum(r["w_correct"] and not r["r_correct"] for r in rows)
    lines.append(f"| *the right one whenever either is right (an oracle)* | *{oracle} of {n} ({oracle / n:.0%})* | – |")
    return "\n".join(lines) + (f"\n\nThe routes disagree on {disagree} questions; the weights alone are right on "
                               f"{only_weights} of them.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a bench/knowledge.py JSON report")
    parser.add_argument("data", type=Path, help="that run's data dir (kept with --keep, or a copy of it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the scored rows here (JSON)")
    args = parser.parse_args()
    from app.config import Settings

    report = json.loads(args.report.read_text())
    rows = score(paired_answers(report), published_shards(args.data), Settings().model_path, args.threads)
    if args.out:
        args.out.write_text(json.dumps([{k: v for k, v in r.items() if k != "doc"} for r in rows], indent=1))
    run = " ".join(f"--{k} {report['args'][k]}" for k in ("source", "documents", "seed") if k in report["args"])
    print(f"bench/knowledge.py {run}: {len(rows)} questions with both answers\n")
    print(table(rows))


if __name__ == "__main__":
    main()
