"""`seal eval`'s harness end to end on 2 fictional passages with every condition, on the real 135M model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TRAIN_THREADS
from workers.seal.datasets import load_jsonl, load_squad
from workers.seal.harness import HarnessConfig, parse_verdict, render_table, shard_passages, summarize

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
DATA = REPO.parent / "shared" / "data"
FICTIONAL = DATA / "fictional_dev.jsonl"
SQUAD = DATA / "squad_val.json"


@pytest.mark.skipif(not SQUAD.is_file(), reason="squad_val.json missing")
def test_squad_split_is_seals():
    evals = load_squad(SQUAD)
    assert len(evals) == 200 and sum(p.num_questions for p in evals) == 974
    assert [p.id for p in load_squad(SQUAD, limit=5)] == [p.id for p in evals[:5]]
    train = load_squad(SQUAD, split="train", limit=50)
    assert not {p.doc.text for p in train} & {p.doc.text for p in evals}


def test_squad_draws_are_seeded_held_out_and_leave_the_global_rng_alone():
    import random

    from workers.seal.datasets import draw_squad

    drawn = [p.id for p in draw_squad(SQUAD, 5, seed=7)]
    assert drawn == [p.id for p in draw_squad(SQUAD, 5, seed=7)] != [p.id for p in draw_squad(SQUAD, 5, seed=8)]
    assert len(set(drawn)) == 5 and all(100 <= int(i.removeprefix("squad-")) < 200 for i in drawn)
    for bad in (0, 101):
        with pytest.raises(ValueError, match="n must be"):
            draw_squad(SQUAD, bad, seed=7)
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    load_squad(SQUAD)
    assert random.random() == expected


def test_fictional_loads_and_config_checks(tmp_path):
    passages = load_jsonl(FICTIONAL)
    assert len(passages) == 10 and all(p.num_questions == 4 for p in passages)
    with pytest.raises(ValueError, match="policy_dir"):
        HarnessConfig(conditions=("self-edit+policy",))
    with pytest.raises(ValueError, match="unknown conditions"):
        HarnessConfig(conditions=("oracle",))
    cfg = HarnessConfig(formats=("rewrite", "self-qa"), policy_dir=str(tmp_path))
    assert cfg.condition_keys() == ["base", "passage", "self-edit:rewrite", "self-edit:self-qa",
                                    "self-edit+policy:rewrite", "context"]


def test_shards_cover_the_passages_once_and_bad_specs_are_refused():
    passages = load_jsonl(FICTIONAL)
    shards = [[p.id for p in shard_passages(passages, f"{i}/3")] for i in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sorted(sum(shards, [])) == sorted(p.id for p in passages)
    assert [p.id for p in shard_passages(passages, "0/1")] == [p.id for p in passages]
    for bad in ("3/3", "0/0", "-1/2", "1", "a/b", ""):
        with pytest.raises(ValueError, match="I/N"):
            shard_passages(passages, bad)
    # The CLI refuses a bad shard while parsing, before it loads a model.
    refused = subprocess.run([sys.executable, "-m", "app.cli", "eval", "fictional", "--shard", "2/2"], cwd=REPO,
                             env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "I/N" in refused.stderr


def test_users_ask_every_other_question_so_both_directions_are_split():
    from workers.seal.harness import users_half
    from workers.seal.types import Probe

    probes = [Probe(f"forward {i}?", "a") for i in range(4)] + [Probe(f"reverse {i}?", "b") for i in range(3)]
    asked = users_half(probes)
    assert [p.question for p in asked] == ["forward 0?", "forward 2?", "reverse 0?", "reverse 2?"]
    assert users_half([]) == []


def test_judge_verdicts():
    assert parse_verdict("Yes.") and parse_verdict(" yes") and not parse_verdict("No") and not parse_verdict("")
    assert not parse_verdict("yesterday")


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_all_conditions_end_to_end_and_resume(tmp_path):
    from workers.seal.config import EvalConfig, TrainConfig
    from workers.seal.harness import run_harness, write_outputs
    from workers.seal.hfgen import HFGenerator
    from workers.seal.restem import policy_messages
    from workers.seal.sft import SftExample, train_completion_lora
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(MODEL), device="cpu", dtype="float32", num_threads=TRAIN_THREADS)
    gen = HFGenerator(trainer)
    passages = load_jsonl(FICTIONAL, limit=2)
    # A real (tiny) policy: one SFT step on a (prompt -> rewrite) pair from a passage outside the run.
    other = load_jsonl(FICTIONAL)[5]
    policy = tmp_path / "policy"
    train_completion_lora(trainer, [SftExample(policy_messages(other, "rewrite"), other.doc.text)],
                          TrainConfig(rank=8, alpha=16, epochs=1, lr=3e-4), str(policy))
    # Fast settings (documented in docs/RESULTS.md): r8 on 3 projections, 3 epochs at 2e-3, 32-token answers.
    cfg = HarnessConfig(policy_dir=str(policy), selfedit_max_tokens=64, eval=EvalConfig(max_tokens=32),
                        train=TrainConfig(rank=8, alpha=16, epochs=3, lr=2e-3,
                                          target_modules=("q_proj", "v_proj", "o_proj")))
    out = tmp_path / "eval"
    judged: list[str] = []

    def judge(question: str, answer: str, prediction: str) -> bool:  # stands in for the HTTP judge
        judged.append(question)
        return answer.lower() in prediction.lower()

    records = run_harness(generator=gen, trainer=trainer, passages=passages, cfg=cfg, out_dir=str(out), judge=judge)
    keys = cfg.condition_keys()
    assert len(records) == len(keys) * 2 and len(judged) == 8 * len(keys)
    rows = summarize(records, keys)
    assert [r["condition"] for r in rows] == keys and all(r["questions"] == 8 for r in rows)
    by = {r["condition"]: r for r in rows}
    assert by["context"]["accuracy"] > by["base"]["accuracy"]  # the passage in the prompt answers fictional facts
    policy_rec = next(r for r in records if r["condition"].startswith("self-edit+policy"))
    assert policy_rec["policy_dir"] == str(policy) and policy_rec["self_edit"] is not None
    assert all(r["predictions"][0].keys() >= {"question", "answer", "prediction", "correct", "f1", "judge"}
               for r in records)
    paths = write_outputs(str(out), rows=rows, records=records, meta={"test": True}, title="test")
    assert json.loads(Path(paths["json"]).read_text())["summary"] == rows
    assert "| context |" in Path(paths["markdown"]).read_text() and "LLM judge" in render_table(rows)
    assert Path(paths["chart"]).read_bytes()[:4] == b"\x89PNG"

    # Resume: every (condition, passage) is cached, so a rerun needs neither generator nor trainer.
    again = run_harness(generator=None, trainer=None, passages=passages, cfg=cfg, out_dir=str(out))
    assert [(r["condition"], r["accuracy"]) for r in again] == [(r["condition"], r["accuracy"]) for r in records]
    with pytest.raises(ValueError, match="other settings"):
        run_harness(generator=None, trainer=None, passages=passages, out_dir=str(out),
                    cfg=HarnessConfig(conditions=("base",), seed=1))


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_distill_condition_trains_on_the_teachers_answers(tmp_path):
    """`self-edit:distill` samples no self-edit: the base model reads the passage and answers questions
    built from it, and a fresh LoRA learns those answers, as a knowledge base's shards do. Its question
    set is part of the cache's settings (the smallest real run here: 4 questions, 1 epoch)."""
    from dataclasses import replace

    from workers.seal.config import EvalConfig, TrainConfig
    from workers.seal.distill import DistillConfig
    from workers.seal.harness import run_harness
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(MODEL), device="cpu", dtype="float32", num_threads=TRAIN_THREADS)
    passages = load_jsonl(FICTIONAL, limit=1)
    cfg = HarnessConfig(conditions=("self-edit",), formats=("distill",), eval=EvalConfig(max_tokens=16),
                        train=TrainConfig(rank=8, alpha=16, epochs=1, lr=2e-3), distill=DistillConfig(max_questions=4))
    assert cfg.condition_keys() == ["self-edit:distill"]
    [rec] = run_harness(generator=HFGenerator(trainer), trainer=trainer, passages=passages, cfg=cfg,
                        out_dir=str(tmp_path))
    assert rec["self_edit"] is None and rec["teacher_seconds"] > 0 and rec["questions"] == 4
    # 4 teacher answers (whichever came back non-empty) beside the short entity answers
    assert rec["distill_rows"] > 0 and rec["train_loss"] > 0
    with pytest.raises(ValueError, match="other settings"):
        run_harness(generator=None, trainer=None, passages=passages, out_dir=str(tmp_path),
                    cfg=HarnessConfig(conditions=("self-edit",), formats=("distill",), eval=EvalConfig(max_tokens=16),
                                      train=cfg.train, distill=DistillConfig(max_questions=8)))
    # Teaching half the graded questions as users' is a measurement of its own: it never reads this cache.
    with pytest.raises(ValueError, match="other settings"):
        run_harness(generator=None, trainer=None, passages=passages, out_dir=str(tmp_path),
                    cfg=replace(cfg, users_ask_half=True))


@pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")
def test_regrade_at_fewer_tokens_matches_a_run_at_that_budget(tmp_path):
    """`seal eval regrade` cuts a finished run's greedy answers: it must grade them as a run made at
    the shorter budget does, prediction for prediction, and refuse what it cannot know."""
    from typer.testing import CliRunner

    from app.cli import app
    from workers.seal.config import EvalConfig
    from workers.seal.harness import run_harness, write_outputs
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    trainer = LoraTrainer(str(MODEL), device="cpu", dtype="float32", num_threads=TRAIN_THREADS)
    gen = HFGenerator(trainer)
    passages = load_jsonl(FICTIONAL, limit=2)
    keys = ["base"]  # closed-book answers run on to the budget, so the cut changes them

    def config(max_tokens: int) -> HarnessConfig:
        return HarnessConfig(conditions=keys, eval=EvalConfig(max_tokens=max_tokens))

    def run(max_tokens: int) -> list[dict]:
        return run_harness(generator=gen, trainer=trainer, passages=passages, cfg=config(max_tokens),
                           out_dir=str(tmp_path / f"run-{max_tokens}"))

    long, short = run(24), run(6)
    write_outputs(str(tmp_path / "run-24"), rows=summarize(long, keys), records=long, title="24 tokens",
                  meta={"dataset": "fictional", "conditions": keys, "config": config(24).fingerprint()})
    result = CliRunner().invoke(app, ["eval", "regrade", str(tmp_path / "run-24"), "--max-tokens", "6",
                                      "--out", str(tmp_path / "cut"), "--model", str(MODEL)])
    assert result.exit_code == 0, result.output
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    pairs = [(a, b) for x, y in zip(cut["records"], short, strict=True)
             for a, b in zip(x["predictions"], y["predictions"], strict=True)]
    assert len(pairs) == 8 and all(a == b for a, b in pairs)  # question, prediction, correct and F1 alike
    assert sum(len(p["prediction"]) for p, _ in pairs) < sum(len(p["prediction"]) for r in long for p in r["predictions"])
    assert [(r["accuracy"], r["f1"]) for r in cut["summary"]] == [(r["accuracy"], r["f1"]) for r in summarize(short, keys)]
    assert cut["meta"]["config"]["eval"]["max_tokens"] == 6 and cut["meta"]["regraded_from"]["answer_tokens"] == 24

    longer = CliRunner().invoke(app, ["eval", "regrade", str(tmp_path / "run-24"), "--max-tokens", "48"])
    assert longer.exit_code == 2 and "only be shorter" in longer.output
    missing = CliRunner().invoke(app, ["eval", "regrade", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no finished run" in missing.output
