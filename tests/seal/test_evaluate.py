"""Probe evaluation on the real base model (no mocks): closed-book and read in context in one batch."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.conftest import TRAIN_THREADS  # noqa: E402
from workers.seal.evaluate import evaluate_probes, evaluate_probes_ways, question_prompt  # noqa: E402
from workers.seal.reading import reading_messages  # noqa: E402
from workers.seal.types import Probe  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
DEV = REPO.parent / "shared" / "data" / "fictional_dev.jsonl"

pytestmark = pytest.mark.skipif(not MODEL.is_dir() or not DEV.is_file(), reason="base model or dev set not found")


@pytest.fixture(scope="module")
def scorer():
    from workers.seal.hfgen import HFGenerator
    from workers.seal.train import LoraTrainer

    return HFGenerator(LoraTrainer(str(MODEL), device="cpu", dtype="float32", num_threads=TRAIN_THREADS))


def test_one_batch_answers_each_way_in_its_own_result(scorer):
    """The invented passage's facts are unknown closed-book and found by reading: the two results of
    the one batch are not swapped or mixed, and each keeps the probes' order."""
    passage = json.loads(DEV.read_text().splitlines()[0])
    probes = [Probe(q["question"], q["answer"]) for q in passage["questions"]]

    def read(question: str) -> list[dict[str, str]]:
        return reading_messages(passage["title"], passage["context"], question)

    closed, reading = evaluate_probes_ways(scorer, probes, (question_prompt, read), max_tokens=24)
    assert [r["question"] for r in closed.predictions] == [p.question for p in probes]
    assert [r["question"] for r in reading.predictions] == [p.question for p in probes]
    assert closed.accuracy == 0.0 and reading.accuracy >= 0.5
    alone = evaluate_probes(scorer, probes, max_tokens=24, prompt=read)
    assert alone.accuracy >= 0.5
    assert evaluate_probes_ways(scorer, [], (question_prompt, read)) == [evaluate_probes(scorer, [])] * 2
