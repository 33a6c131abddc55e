"""Stream memory, replay sizing and the gate's bookkeeping, on fixed inputs (no model)."""

from __future__ import annotations

import pytest

from workers.seal.continual import GateConfig, ReplayConfig, StreamMemory, load_canary, probe_key
from workers.seal.gate import decide
from workers.seal.types import Probe


def memory_with(n_docs: int) -> StreamMemory:
    memory = StreamMemory()
    for i in range(n_docs):
        probes = [Probe(question=f"q{i}-{j}?", answer=f"a{i}-{j}") for j in range(4)]
        memory = memory.absorb(title=f"doc {i}", probes=probes, sequences=[f"seq {i}"],
                               results={probe_key(p.question, p.answer): True for p in probes})
    return memory


def test_absorb_accumulates_and_keeps_only_the_latest_answers():
    memory = memory_with(3)
    assert memory.sequences == ["seq 0", "seq 1", "seq 2"]
    assert memory.documents == ["doc 0", "doc 1", "doc 2"]
    assert len(memory.probes) == 12 and memory.probes[0]["document"] == "doc 0"
    assert memory.since_consolidation == 3
    # results are what the newest version was graded on, never a stale union
    assert len(memory.results) == 4 and probe_key("q2-0?", "a2-0") in memory.results


def test_round_trip_and_versions_without_memory():
    memory = memory_with(2)
    assert StreamMemory.from_dict(memory.to_dict()) == memory
    assert StreamMemory.from_dict(None) == StreamMemory()
    assert StreamMemory.from_dict({"sequences": ["x"], "unknown_later_field": 1}).sequences == ["x"]


@pytest.mark.parametrize(("ratio", "cap", "available", "expected"), [
    (0.0, 64, 9, 0),      # replay off
    (1.0, 64, 9, 1),
    (8.0, 64, 9, 8),
    (8.0, 64, 3, 3),      # fewer earlier sequences than the ratio asks for: all of them
    (100.0, 5, 9, 5),     # the cap wins
])
def test_replay_size(ratio, cap, available, expected):
    memory = memory_with(available)
    replay = memory.replay(1, ReplayConfig(ratio=ratio, max_sequences=cap), seed=7)
    assert len(replay) == expected
    assert set(replay) <= set(memory.sequences)
    assert replay == memory.replay(1, ReplayConfig(ratio=ratio, max_sequences=cap), seed=7)  # fixed seed


def test_old_probe_sample_is_bounded_and_deterministic():
    memory = memory_with(10)  # 40 probes
    cfg = GateConfig(max_old_probes=16)
    sample = memory.old_probes(cfg, seed=3)
    assert len(sample) == 16 and sample == memory.old_probes(cfg, seed=3)
    assert len(memory.old_probes(GateConfig(max_old_probes=100), seed=3)) == 40


def test_consolidation_gate_has_no_new_document_rule():
    assert decide(new_before=None, new_after=None, old_before=0.8, old_after=0.75, old_margin=0.1).accepted
    rejected = decide(new_before=None, new_after=None, old_before=0.8, old_after=0.5, old_margin=0.1)
    assert not rejected.accepted and "new_gain" not in rejected.numbers
    with pytest.raises(ValueError):
        decide(new_before=0.5, new_after=None)


def test_canary_ships_with_the_package():
    canary = load_canary()
    assert len(canary) == 24 and all(p.question.endswith("?") and p.answer for p in canary)
    assert len({p.question for p in canary}) == 24


def test_margins_are_fractions_of_the_questions_asked_never_widened():
    """0.10 of 4 earlier probes allows no flipped answer (it once became "at least one probe"), and the
    canary's 0.05 of 24 allows exactly one."""
    assert not decide(new_before=None, new_after=None, old_before=1.0, old_after=0.75, old_margin=0.10).accepted
    assert decide(new_before=None, new_after=None, canary_before=1.0, canary_after=23 / 24,
                  canary_margin=0.05).accepted
    assert not decide(new_before=None, new_after=None, canary_before=1.0, canary_after=22 / 24,
                      canary_margin=0.05).accepted


class ScriptedBaseModel:
    """Stands in for the base model's greedy answers: what anchor_sequences does with them is under test."""

    def __init__(self, replies: dict[str, str]):
        self.replies, self.calls = replies, 0

    def generate(self, prompts, **_):  # noqa: ANN001, ANN003, ANN201
        self.calls += 1
        return [[self.replies.get(p[0]["content"], "A fine answer.")] for p in prompts]


def test_anchors_keep_only_what_the_base_model_got_right(tmp_path):
    from workers.seal.continual import anchor_sequences

    model = ScriptedBaseModel({"What is the capital of Portugal?": "Portugal is a country in Europe.",
                               "What is the capital of Kenya?": "The capital of Kenya is Nairobi."})
    cache = tmp_path / "anchors.json"
    anchors = anchor_sequences(model, render_chat=lambda m: f"{m[0]['content']} -> {m[1]['content']}",
                               cache_file=str(cache), model_id="m")
    assert "What is the capital of Kenya? -> The capital of Kenya is Nairobi." in anchors
    assert not any("Portugal" in a for a in anchors)  # a wrong answer is not rehearsed
    assert any(a.startswith("What is photosynthesis?") for a in anchors)  # open prompts are kept
    assert anchor_sequences(model, render_chat=None, cache_file=str(cache), model_id="m") == anchors
    assert model.calls == 1  # cached per model and prompt file


def test_the_bundled_model_s_anchor_set_ships_with_the_package(tmp_path):
    """A fresh worker of the bundled model reads its anchors instead of generating them (minutes on a CPU)."""
    from workers.seal.continual import anchor_sequences

    class MustNotGenerate:
        def generate(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            raise AssertionError("the packaged anchor set was not used")

    anchors = anchor_sequences(MustNotGenerate(), render_chat=None, cache_file=str(tmp_path / "a.json"),
                               model_id="/anywhere/SmolLM2-135M-Instruct")
    assert len(anchors) >= 40 and all("<|im_start|>assistant" in a for a in anchors)


class AdapterAwareModel:
    """Base answers every canary right; the candidate adapter answers `wrong` questions wrongly."""

    def __init__(self, wrong: set[str]):
        self.wrong, self.asked = wrong, []

    def generate(self, prompts, *, adapter=None, **_):  # noqa: ANN001, ANN003, ANN201
        out = []
        for p in prompts:
            question = p[0]["content"]
            if adapter is not None:
                self.asked.append(question)
            out.append(["I do not know." if adapter is not None and question in self.wrong else self.answers[question]])
        return out


def test_behind_a_router_only_the_questions_routed_to_the_candidate_are_asked_of_it():
    from workers.seal.continual import GateConfig, StreamMemory, gate_candidate, load_canary, probe_key
    from workers.seal.types import Probe

    canary = load_canary()
    model = AdapterAwareModel(wrong={canary[0].question, canary[1].question})
    model.answers = {p.question: p.answer for p in canary}
    routed = {canary[0].question}  # the router sends one canary question to this shard
    report = gate_candidate(scorer=model, candidate=("cand", "/nowhere"), parent=None, memory=StreamMemory(),
                            canary=canary, cfg=GateConfig(), new_before=0.0, new_after=1.0,
                            canary_through=lambda p: p.question in routed)
    assert model.asked == [canary[0].question]  # the other 23 keep the base model's answers
    assert report.decision.accepted  # one of 24 lost: within the 0.05 margin
    assert report.decision.numbers["canary_after"] == 23 / 24

    model = AdapterAwareModel(wrong={canary[0].question, canary[1].question})
    model.answers = {p.question: p.answer for p in canary}
    report = gate_candidate(scorer=model, candidate=("cand", "/nowhere"), parent=None, memory=StreamMemory(),
                            canary=canary, cfg=GateConfig(), new_before=0.0, new_after=1.0)
    assert not report.decision.accepted  # asked everything (one adapter for all questions): 2 of 24 lost

    # Earlier probes sent elsewhere count with their cached verdicts on both sides of the margin.
    old = Probe("Who built the Vesk Lighthouse?", "Orsk")
    model = AdapterAwareModel(wrong={old.question})
    model.answers = {old.question: "Orsk"}
    memory = StreamMemory(probes=[{"question": old.question, "answer": old.answer}],
                          results={probe_key(old.question, old.answer): True})
    report = gate_candidate(scorer=model, candidate=("cand", "/nowhere"), parent=None, memory=memory, canary=(),
                            cfg=GateConfig(), new_before=0.0, new_after=1.0, old_unrouted=[True] * 9)
    assert report.decision.numbers["old_before"] == 1.0 and report.decision.numbers["old_after"] == 0.9
    assert report.decision.accepted  # one of ten lost: exactly the 0.10 margin
