"""ReST-EM: reward and filtering on fixed inputs, completion-only masking, and one real round on 2 passages."""

import json
from pathlib import Path

import pytest

from tests.conftest import TRAIN_THREADS
from workers.seal.restem import EditScore, compute_gain, select_best
from workers.seal.runfiles import pin_settings

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
FICTIONAL = REPO.parent / "shared" / "data" / "fictional_dev.jsonl"


def edit(index: int, accs: list[float], baseline: float = 0.25, losses: list[float] | None = None) -> EditScore:
    return EditScore(index=index, self_edit=f"edit {index}", accuracies=accs,
                     train_losses=losses if losses is not None else [1.0] * len(accs), baseline=baseline)


# --- reward and filtering (pure) ---------------------------------------------------------------


def test_gain_is_mean_accuracy_minus_baseline():
    assert compute_gain([0.5, 0.75], 0.25) == pytest.approx(0.375)
    assert edit(0, [0.25, 0.25]).gain == pytest.approx(0.0)
    with pytest.raises(ValueError):
        compute_gain([], 0.0)


def test_best_positive_gain_is_kept():
    scores = [edit(0, [0.5]), edit(1, [1.0]), edit(2, [0.0])]
    assert select_best(scores).index == 1


def test_nothing_kept_without_positive_gain():
    assert select_best([edit(0, [0.25]), edit(1, [0.0]), edit(2, [0.25, 0.25])]) is None
    assert select_best([]) is None


def test_tie_goes_to_lower_loss_then_lower_index():
    tied = [edit(0, [0.75], losses=[0.9]), edit(1, [0.75], losses=[0.4]), edit(2, [0.75], losses=[0.4])]
    assert select_best(tied).index == 1  # lower loss wins over index 0; index breaks the 1-vs-2 tie
    assert select_best([edit(3, [0.75]), edit(1, [0.75])]).index == 1
    # Means over seeds are compared, not single runs: 0.5+1.0 ties 0.75+0.75.
    assert select_best([edit(0, [0.5, 1.0], losses=[1.0, 1.0]), edit(1, [0.75, 0.75], losses=[0.5, 0.5])]).index == 1


def test_float_noise_counts_as_a_tie_and_as_no_gain():
    a = edit(0, [0.1 + 0.2], baseline=0.0, losses=[2.0])
    b = edit(1, [0.3], baseline=0.0, losses=[1.0])
    assert select_best([a, b]).index == 1
    assert select_best([edit(0, [0.3], baseline=0.1 + 0.2)]) is None


def test_reward_baseline_is_passage_or_base():
    from workers.seal.restem import PolicyTrainConfig

    assert PolicyTrainConfig().reward_baseline == "passage"
    assert PolicyTrainConfig(reward_baseline="base").reward_baseline == "base"
    with pytest.raises(ValueError, match="reward_baseline"):
        PolicyTrainConfig(reward_baseline="context")


def test_checkpoints_are_reused_only_under_their_own_settings(tmp_path):
    record = tmp_path / "settings.json"
    pin_settings(record, {"recipe": 2, "k": (3,)})  # a new run records its settings
    pin_settings(record, {"recipe": 2, "k": (3,)})  # the same settings resume
    with pytest.raises(ValueError, match="other settings"):
        pin_settings(record, {"recipe": 2, "k": (2,)})
    with pytest.raises(ValueError, match="not recorded"):  # results from before settings were recorded
        pin_settings(tmp_path / "older" / "settings.json", {"recipe": 2}, unrecorded_results=True)
    assert not (tmp_path / "older" / "settings.json").exists()


# --- real model ----------------------------------------------------------------------------------

needs_model = pytest.mark.skipif(not MODEL.is_dir() or not FICTIONAL.is_file(), reason="model or data missing")


@pytest.fixture(scope="module")
def trainer():
    from workers.seal.train import LoraTrainer

    return LoraTrainer(str(MODEL), device="cpu", dtype="float32", num_threads=TRAIN_THREADS)


@needs_model
def test_completion_only_labels_mask_the_prompt(trainer):
    from workers.seal.sft import SftExample, encode_example

    ex = SftExample(messages=[{"role": "user", "content": "Rewrite: the sky is blue."}], completion="Blue sky.")
    ids, labels = encode_example(trainer, ex, 512)
    prompt = trainer.tokenizer.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True)
    n_prompt = len(trainer.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(labels) and all(x == -100 for x in labels[:n_prompt])
    target = trainer.tokenizer.decode([t for t in labels if t != -100])
    assert target.startswith("Blue sky.") and labels[-1] == trainer.tokenizer.eos_token_id


@needs_model
def test_one_round_yields_a_policy_that_learn_can_use(trainer, tmp_path):
    from workers.seal.config import EvalConfig, SelfEditConfig, TrainConfig
    from workers.seal.datasets import load_jsonl
    from workers.seal.hfgen import HFGenerator
    from workers.seal.inner import learn_document
    from workers.seal.restem import POLICY_MANIFEST, PolicyTrainConfig, score_self_edit, train_policy

    gen = HFGenerator(trainer)
    passages = load_jsonl(FICTIONAL, limit=2)
    # Fast settings (documented): r8, 3 epochs at 2e-3 instead of the paper's r32/10 epochs/1e-3.
    inner = TrainConfig(rank=8, alpha=16, epochs=3, lr=2e-3, target_modules=("q_proj", "v_proj", "o_proj"))
    cfg = PolicyTrainConfig(rounds=1, k=2, seeds=1, format="rewrite", max_tokens=64,
                            sft=TrainConfig(rank=8, alpha=16, epochs=1, lr=3e-4, batch_size=2))
    out = tmp_path / "policy-run"
    seen = []
    report = train_policy(generator=gen, trainer=trainer, passages=passages, out_dir=str(out), cfg=cfg,
                          train_cfg=inner, eval_cfg=EvalConfig(max_tokens=32),
                          progress=lambda what, done, total: seen.append((what, done, total)))
    (r1,) = report["rounds"]
    assert r1["passages"] == 2 and r1["sampled_edits"] == 4 and 0 <= r1["kept"] <= 2
    for p in passages:
        res = json.loads((out / "round-1" / "passages" / f"{p.id}.json").read_text())
        best = select_best([EditScore(**{k: v for k, v in e.items() if k != "gain"}) for e in res["edits"]])
        assert res["kept"] == (best.index if best else None)
    # Rewards are measured against a LoRA on the passage alone, trained with the same seed: recomputing that
    # adapter outside the loop gives the recorded baseline (training and greedy decoding are deterministic).
    passage_only, _ = score_self_edit(trainer=trainer, scorer=gen, passage=passages[0], self_edit="", fmt="passage",
                                      train_cfg=inner, seeds=[inner.seed], workdir=str(tmp_path / "passage-only"),
                                      eval_cfg=EvalConfig(max_tokens=32), baseline=0.0)
    first = json.loads((out / "round-1" / "passages" / f"{passages[0].id}.json").read_text())
    assert first["baseline_kind"] == "passage" and first["baseline"] == passage_only.accuracies[0]
    assert 0.0 <= first["no_adapter_accuracy"] <= 1.0
    policy = out / "policy"
    assert (policy / "adapter_config.json").is_file() and (policy / "adapter_model.safetensors").is_file()
    assert json.loads((policy / POLICY_MANIFEST).read_text())["format"] == "rewrite"
    assert ("round 1: passages", 2, 2) in seen

    # Resume: everything is checkpointed, so a rerun trains nothing and returns the same rounds.
    mtime = (out / "round-1" / "policy" / "adapter_model.safetensors").stat().st_mtime
    ckpt_mtime = (out / "round-1" / "passages" / f"{passages[0].id}.json").stat().st_mtime
    report2 = train_policy(generator=gen, trainer=trainer, passages=passages, out_dir=str(out), cfg=cfg,
                           train_cfg=inner, eval_cfg=EvalConfig(max_tokens=32))
    assert json.dumps(report2["rounds"]) == json.dumps(report["rounds"])  # as JSON: no steps gives NaN losses
    assert (out / "round-1" / "policy" / "adapter_model.safetensors").stat().st_mtime == mtime
    assert (out / "round-1" / "passages" / f"{passages[0].id}.json").stat().st_mtime == ckpt_mtime

    # A learn job generates its self-edits with the policy adapter.
    result = learn_document(generator=gen, trainer=trainer, doc=passages[0].doc,
                            selfedit_cfg=SelfEditConfig(format="rewrite", k=1, max_tokens=64),
                            train_cfg=inner, eval_cfg=EvalConfig(max_tokens=32), workdir=str(tmp_path / "learn"),
                            policy_adapter=("policy", str(policy)))
    assert result.self_edits and Path(result.best_adapter_dir, "adapter_config.json").is_file()
