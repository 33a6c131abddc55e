"""Reading prompts side by side: how well the base model answers with the document in the prompt.

    .venv/bin/python bench/reading_prompts.py --split tune --variants current,brief,system_brief
    .venv/bin/python bench/reading_prompts.py --split held-out --variants current,brief,system_brief

Reading is what instant recall serves, what a read document is answered with, the bar a shard's
weights must reach, and the teacher whose answers a shard learns (workers/seal/reading.py). So a
better reading prompt would lift every one of them. Each variant puts the document around the
user's chat differently; every question is asked bare and through a wrapper (bench/wrappers.py,
one per question), greedy, 48-token answers, graded by containment and token F1.

- `tune`: the fictional dev set (forward and reverse) and SQuAD paragraphs 300-329 of SEAL's split,
  calibration wrappers: choose on these;
- `held-out`: invented documents (bench/docgen.py, --seed) and SQuAD paragraphs 0-19 (the ones
  `bench/knowledge.py --source squad` posted until it drew them with its seed), held-out wrappers:
  confirm on these.

One vLLM engine (the CPU build here) answers every variant; the table goes to stdout and to
OUT/<split>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docgen import generate_documents  # noqa: E402  (bench/ is on sys.path when run as a script)
from wrappers import load_wrappers  # noqa: E402

from workers.seal.datasets import SQUAD_EVAL_SIZE, load_squad  # noqa: E402
from workers.seal.grade import graded  # noqa: E402
from workers.seal.reading import reading_prompt  # noqa: E402

Chat = list[dict[str, str]]
DATA = REPO.parent / "shared" / "data"
EXAMPLE = ("Passage: Lake Orvane. Lake Orvane lies in the Tessel Valley. It was dammed in 1912 by the engineer "
           "Marta Kell, and its water now supplies the city of Brenholm.\n\nAnswer the question using the passage.\n"
           "Question: Who dammed Lake Orvane?")


EXAMPLE_EXCHANGE: Chat = [{"role": "user", "content": EXAMPLE},
                          {"role": "assistant", "content": "Marta Kell dammed Lake Orvane, in 1912."}]


def _last_turn(build: Callable[[str, str, str], str]) -> Callable[[str, str, Chat], Chat]:
    """A variant that rewrites the chat's last user turn (the question as the user wrapped it)."""
    return lambda title, text, chat: chat[:-1] + [{"role": "user", "content": build(title, text, chat[-1]["content"])}]


def _system(intro: str) -> Callable[[str, str, Chat], Chat]:
    """A variant that puts the document in a system turn and leaves the user's chat as it came."""
    return lambda title, text, chat: [{"role": "system", "content": f"{intro}\n\n{title}. {text}"}] + chat


VARIANTS: dict[str, Callable[[str, str, Chat], Chat]] = {
    "current": _last_turn(lambda t, p, q: reading_prompt(t, p, q)),
    "brief": _last_turn(lambda t, p, q: f"Passage: {t}. {p}\n\nAnswer the question using the passage, in a few words."
                                        f"\nQuestion: {q}"),
    "sandwich": _last_turn(lambda t, p, q: f"Question: {q}\n\nPassage: {t}. {p}\n\nAnswer the question using the "
                                           f"passage.\nQuestion: {q}"),
    "document_then_question": _last_turn(lambda t, p, q: f"{t}. {p}\n\n{q}"),
    "system": _system("Answer the user's question using this document.\n\nDocument:"),
    "system_brief": _system("You answer questions about the document below in a few words, using its own words."),
    "one_example": _last_turn(lambda t, p, q: f"Answer each question in a few words, using its passage.\n\n"
                                             f"{EXAMPLE}\nAnswer: Marta Kell\n\nPassage: {t}. {p}\n\nQuestion: {q}"
                                             "\nAnswer:"),
    "one_example_chat": lambda t, p, chat: EXAMPLE_EXCHANGE + VARIANTS["current"](t, p, chat),
}


def squad(lo: int, hi: int) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """Positions lo..hi-1 of SEAL's shuffled SQuAD list (its evaluation split is the first 200)."""
    if lo < SQUAD_EVAL_SIZE < hi:
        raise ValueError(f"SQuAD {lo}-{hi - 1} spans SEAL's two splits; ask each split on its own")
    split, start = ("eval", 0) if hi <= SQUAD_EVAL_SIZE else ("train", SQUAD_EVAL_SIZE)
    return [(p.doc.title or "", p.doc.text, [("forward", q.question, q.answer) for q in p.doc.probes])
            for p in load_squad(DATA / "squad_val.json", split=split)[lo - start : hi - start]]


def dev() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    out = []
    for line in (DATA / "fictional_dev.jsonl").read_text().splitlines():
        it = json.loads(line)
        qs = [("forward", q["question"], q["answer"]) for q in it["questions"]]
        qs += [("reverse", q["question"], q["answer"]) for q in it.get("reverse_questions", [])]
        out.append((it["title"], it["context"], qs))
    return out


def invented(n: int, seed: int) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    return [(d.title, d.text, [("forward", q.question, q.answer) for q in d.forward]
             + [("reverse", q.question, q.answer) for q in d.reverse]) for d in generate_documents(n, seed=seed)]


def cases(split: str, seed: int) -> list[dict[str, Any]]:
    """Every question of the split, bare and through one wrapper of the split's half."""
    sets = ({"fictional dev": dev(), "SQuAD 300-329": squad(300, 330)} if split == "tune"
            else {f"invented (seed {seed})": invented(20, seed), "SQuAD 0-19": squad(0, 20)})
    wrappers = load_wrappers("calibration" if split == "tune" else "held_out")
    out = []
    for name, docs in sets.items():
        for title, text, questions in docs:
            for direction, question, answer in questions:
                wrapper = wrappers[zlib.crc32(question.encode()) % len(wrappers)]
                for asked, chat in (("bare", [{"role": "user", "content": question}]), ("wrapped", wrapper.wrap(question))):
                    out.append({"set": name, "direction": direction, "asked": asked, "title": title, "text": text,
                                "question": question, "answer": answer, "chat": chat})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("tune", "held-out"), default="tune")
    parser.add_argument("--variants", default="current,brief,system_brief", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=7001, help="invented documents' seed (held-out)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reading_prompts")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    from vllm import LLM, SamplingParams

    from app.config import Settings

    todo = cases(args.split, args.seed)
    # A small KV reservation: on the CPU build the default reserves most of the host's memory.
    llm = LLM(model=str(Settings().model_path), max_model_len=2048, seed=0, gpu_memory_utilization=0.25)
    params = SamplingParams(temperature=0, max_tokens=48)
    graded_rows: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        t0 = time.perf_counter()
        outs = llm.chat([VARIANTS[v](c["title"], c["text"], c["chat"]) for c in todo], params, use_tqdm=False)
        graded_rows[v] = [{**graded(c["question"], c["answer"], o.outputs[0].text), "set": c["set"],
                           "direction": c["direction"], "asked": c["asked"]} for c, o in zip(todo, outs, strict=True)]
        print(f"{v}: {time.perf_counter() - t0:.0f} s", flush=True)

    groups = sorted({(r["set"], r["direction"], r["asked"]) for r in graded_rows[variants[0]]})
    head = " | ".join(f"{s}, {d}, {a} ({sum(1 for c in todo if (c['set'], c['direction'], c['asked']) == (s, d, a))})"
                      for s, d, a in groups)
    lines = [f"Reading prompts, {args.split} split: containment (token F1), 48-token greedy answers", "",
             f"| variant | {head} | all |", "|---|" + "---:|" * (len(groups) + 1)]
    for v, rows in graded_rows.items():
        cells = []
        for g in groups:
            sel = [r for r in rows if (r["set"], r["direction"], r["asked"]) == g]
            cells.append(f"{sum(r['correct'] for r in sel) / len(sel):.0%} ({sum(r['f1'] for r in sel) / len(sel):.2f})")
        lines.append(f"| {v} | {' | '.join(cells)} | {sum(r['correct'] for r in rows) / len(rows):.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.split}.md").write_text(text)
    (args.out / f"{args.split}.json").write_text(json.dumps(graded_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
