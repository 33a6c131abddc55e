"""Real peft training on the real base model (no mocks): a few steps on two short sequences."""

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import TRAIN_THREADS  # noqa: E402
from workers.seal.config import TrainConfig  # noqa: E402
from workers.seal.train import LoraTrainer, epoch_batches  # noqa: E402
from workers.seal.types import Cancelled  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "data" / "models" / "SmolLM2-135M-Instruct"
SEQS = [
    "Varnholt Observatory\nThe Varnholt Observatory sits on Mount Ceddra, 2,940 meters above Lissemark.",
    "Varnholt Observatory\nIt was completed in 1987 and is run by the Northern Skies Trust.",
]
CFG = TrainConfig(rank=8, alpha=16, epochs=4, lr=2e-3, batch_size=2, target_modules=("q_proj", "v_proj"))

pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason=f"base model not found at {MODEL}")


@pytest.fixture(scope="module")
def trainer():
    return LoraTrainer(str(MODEL), device="cpu", dtype="float32", num_threads=TRAIN_THREADS)


@pytest.fixture(scope="module")
def base_state(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def first(trainer, base_state, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "a"
    seen: list[float] = []
    res = trainer.train_lora(SEQS, CFG, str(out), progress=seen.append)
    return res, out, seen


def test_loss_decreases_and_files_saved(first):
    res, out, seen = first
    assert res.steps == 4 and res.num_sequences == 2
    assert res.final_loss < res.first_loss
    assert (out / "adapter_model.safetensors").is_file()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and set(cfg["target_modules"]) == {"q_proj", "v_proj"}
    assert len(seen) == 4 and seen[-1] == pytest.approx(1.0)


def test_warm_trainer_does_not_leak_lora(trainer, base_state, first, tmp_path):
    after = trainer.model.state_dict()
    assert set(after) == set(base_state)
    assert all(torch.equal(after[k], base_state[k]) for k in base_state)
    with pytest.raises(Cancelled):
        trainer.train_lora(SEQS, CFG, str(tmp_path / "s"), should_stop=lambda: True)
    second = trainer.train_lora(SEQS, CFG, str(tmp_path / "b"))
    assert second.first_loss == pytest.approx(first[0].first_loss, rel=1e-5)
    assert second.final_loss == pytest.approx(first[0].final_loss, rel=1e-3)


def test_continue_from_adapter_starts_lower(trainer, first, tmp_path):
    cont = trainer.train_lora(SEQS, CFG, str(tmp_path / "c"), init_adapter_dir=str(first[1]))
    assert cont.first_loss < first[0].first_loss  # the parent's weights were loaded, not a fresh LoRA
    assert (tmp_path / "c" / "adapter_model.safetensors").is_file()


def test_chat_sequences_train_on_the_answer_only(trainer):
    """A chat-rendered sequence puts loss on its assistant turn; the system prompt and question are context."""
    chat = trainer.render_chat([{"role": "user", "content": "Where is the Varnholt Observatory?"},
                                {"role": "assistant", "content": "On Mount Ceddra."}])
    (ids, labels), (plain_ids, plain_labels) = trainer.encode([chat, SEQS[0]], max_len=512)
    target = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert trainer.tokenizer.decode(target).startswith("On Mount Ceddra.")
    assert target[-1] == trainer.tokenizer.eos_token_id and len(target) < len(ids) // 2
    assert plain_labels == plain_ids  # a plain passage keeps loss on every token
    # Truncated inside the prompt, nothing is left to learn: such a row is dropped, not trained as NaN.
    assert all(label == -100 for label in trainer.encode([chat], max_len=8)[0][1])


def test_loss_on_labelled_positions_only_equals_the_stock_loss(trainer):
    """The trainer projects only labelled positions onto the vocabulary; the loss must not change."""
    from peft import LoraConfig, get_peft_model

    chat = trainer.render_chat([{"role": "user", "content": "Where is the Varnholt Observatory?"},
                                {"role": "assistant", "content": "On Mount Ceddra."}])
    batch = trainer._batch(trainer.encode([chat, SEQS[0]], max_len=512))
    peft_model = get_peft_model(trainer.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"],
                                                          task_type="CAUSAL_LM"))
    try:
        with torch.no_grad():
            stock = float(peft_model(**batch).loss)
            fast = float(trainer._loss(peft_model, batch))
    finally:
        trainer.model = peft_model.unload()
        if hasattr(trainer.model, "peft_config"):
            del trainer.model.peft_config
    assert fast == pytest.approx(stock, rel=1e-4)


def _with_lora(trainer, run):  # noqa: ANN001, ANN202
    """Run `run(peft_model)` with a fresh, untrained LoRA on the trainer's base, then take it off."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(trainer.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"],
                                                          task_type="CAUSAL_LM"))
    try:
        with torch.no_grad():
            return run(peft_model)
    finally:
        trainer.model = peft_model.unload()
        if hasattr(trainer.model, "peft_config"):
            del trainer.model.peft_config


def test_teacher_rows_hold_the_teachers_distribution_over_the_students_answer(trainer):
    """The student row is the bare question and the answer; the targets are the base model's top-k at
    each answer token while it reads the passage."""
    question = [{"role": "user", "content": "Where is the Varnholt Observatory?"}]
    reading = [{"role": "user", "content": f"Passage: {SEQS[0]}\n\nAnswer the question using the passage.\n"
                                           "Question: Where is the Varnholt Observatory?"}]
    (ids, labels, top_ids, top_logprobs), = trainer.teacher_rows(students=[question], teachers=[reading],
                                                                 answers=["On Mount Ceddra."], top_k=5)
    answer = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert trainer.tokenizer.decode(answer).startswith("On Mount Ceddra.")
    assert answer[-1] == trainer.tokenizer.eos_token_id
    assert top_ids.shape == top_logprobs.shape == (len(answer), 5)
    assert bool((top_logprobs[:, :-1] >= top_logprobs[:, 1:]).all()) and float(top_logprobs.max()) <= 0.0
    # Reading the passage, the teacher puts real mass on the passage's own answer tokens.
    assert any(answer[i] == int(top_ids[i, 0]) for i in range(len(answer)))


def test_distillation_loss_is_cross_entropy_for_one_hot_teachers(trainer):
    """A teacher that is certain of each answer token makes the distillation loss the plain loss."""
    chat = trainer.render_chat([{"role": "user", "content": "Where is the Varnholt Observatory?"},
                                {"role": "assistant", "content": "On Mount Ceddra."}])
    (ids, labels), = trainer.encode([chat], max_len=512)
    answer = [label for label in labels[1:] if label != -100]
    certain = (ids, labels, torch.tensor(answer).view(-1, 1), torch.zeros(len(answer), 1))
    plain_batch, soft_batch = trainer._batch([(ids, labels)]), trainer._batch([certain])
    plain, soft = _with_lora(trainer, lambda m: (float(trainer._loss(m, plain_batch)), float(trainer._loss(m, soft_batch))))
    assert soft == pytest.approx(plain, rel=1e-5)


def test_distillation_and_plain_rows_train_together(trainer, tmp_path):
    question = [{"role": "user", "content": "Where is the Varnholt Observatory?"}]
    reading = [{"role": "user", "content": f"Passage: {SEQS[0]}\n\nQuestion: Where is the Varnholt Observatory?"}]
    rows = trainer.teacher_rows(students=[question], teachers=[reading], answers=["On Mount Ceddra."], top_k=8)
    rows += trainer.encode(SEQS, max_len=512)
    res = trainer.train_rows(rows, CFG, str(tmp_path / "d"))
    assert res.steps == 2 * CFG.epochs and res.final_loss < res.first_loss
    assert (tmp_path / "d" / "adapter_model.safetensors").is_file()


def test_a_bf16_models_adapter_is_saved_in_bf16(trainer, first, tmp_path):
    """A GPU worker trains in bf16: its shards are stored at half the bytes of fp32 (peft alone kept fp32)."""
    from safetensors.torch import load_file

    bf16 = LoraTrainer(str(MODEL), device="cpu", dtype="bfloat16", num_threads=TRAIN_THREADS)
    out = tmp_path / "bf16"
    bf16.train_lora(SEQS[:1], TrainConfig(rank=8, alpha=16, epochs=1, lr=2e-3, batch_size=1,
                                          target_modules=("q_proj", "v_proj")), str(out))
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and {t.dtype for t in saved.values()} == {torch.bfloat16}
    _, fp32_dir, _ = first  # the same rank and modules, trained by the fp32 trainer
    fp32 = load_file(fp32_dir / "adapter_model.safetensors")
    assert set(saved) == set(fp32) and {t.dtype for t in fp32.values()} == {torch.float32}
    assert (out / "adapter_model.safetensors").stat().st_size < 0.6 * (fp32_dir / "adapter_model.safetensors").stat().st_size


@pytest.mark.parametrize("grouped", [True, False])
def test_an_epoch_batches_every_row_once(grouped):
    lengths = [random.Random(i).randint(20, 120) for i in range(83)]
    batches = epoch_batches(lengths, 8, random.Random(0), grouped=grouped)
    assert sorted(i for b in batches for i in b) == list(range(83))
    assert all(1 <= len(b) <= 8 for b in batches)


def test_grouped_batches_pad_little_and_still_change_from_epoch_to_epoch():
    rng = random.Random(0)
    lengths = [rng.choice([40, 41, 43, 44]) for _ in range(40)] + [rng.randint(60, 115) for _ in range(45)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = epoch_batches(lengths, 8, rng, grouped=True)
    # Sorted by bucket, consecutive batches share at most a bucket boundary: few rows pad far.
    assert padding(grouped) < padding(epoch_batches(lengths, 8, random.Random(0), grouped=False)) / 3
    assert [sorted(b) for b in grouped] != [sorted(b) for b in epoch_batches(lengths, 8, rng, grouped=True)]


def test_bf16_autocast_trains_a_float32_adapter_to_the_same_loss(trainer, first, tmp_path):
    from dataclasses import replace

    from safetensors.torch import load_file

    trainer.bf16_autocast = True  # the CPU may (tests run on any CPU: emulated bf16 is slow, not wrong)
    try:
        # A recipe that does not ask for bf16 trains exactly as before.
        same = trainer.train_lora(SEQS, CFG, str(tmp_path / "fp32"))
        assert same.first_loss == first[0].first_loss and same.final_loss == first[0].final_loss
        res = trainer.train_lora(SEQS, replace(CFG, bf16_autocast=True), str(tmp_path / "bf16"))
    finally:
        trainer.bf16_autocast = False
    # Same data and seed in bf16 matrix products: the loss falls as in float32, close to it at each end.
    assert res.final_loss < res.first_loss
    assert res.first_loss == pytest.approx(first[0].first_loss, rel=0.02)
    assert res.final_loss == pytest.approx(first[0].final_loss, rel=0.25, abs=0.05)
    weights = load_file(str(tmp_path / "bf16" / "adapter_model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}, "the adapter is stored in the model's dtype"


def test_teacher_rows_reuse_the_shared_document_and_keep_the_teachers_targets(trainer):
    """The document every teacher prompt opens with is run once; the targets are those of a full pass."""
    import workers.seal.train as train_module

    questions = ["Where is the Varnholt Observatory?", "When was it completed?", "Who runs it?"]
    answers = ["On Mount Ceddra.", "It was completed in 1987.", "The Northern Skies Trust runs it now."]
    kwargs = {"students": [[{"role": "user", "content": q}] for q in questions],
              "teachers": [[{"role": "user", "content": f"Passage: {' '.join(SEQS)}\n\nQuestion: {q}"}]
                           for q in questions],
              "answers": answers, "top_k": 8, "batch_size": 2}
    assert train_module._common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    shared = trainer.teacher_rows(**kwargs)
    full = trainer.teacher_rows(**kwargs, share_prefix=False)
    for (ids, labels, top, lp), (ids_f, labels_f, top_f, lp_f) in zip(shared, full, strict=True):
        assert (ids, labels) == (ids_f, labels_f)
        assert torch.equal(top[:, :3], top_f[:, :3])
        assert torch.allclose(lp, lp_f, atol=1e-4)


def test_chat_rows_share_their_prompt_and_keep_the_loss_and_its_gradients(trainer):
    """A batch of chats runs the template's common prompt once; the loss and the LoRA's gradients are
    those of the rows run whole, including the gradient through the shared keys and values."""
    from peft import LoraConfig, get_peft_model

    import workers.seal.train as train_module

    questions = ["Where is the Varnholt Observatory?", "When was it completed?", "Who runs it?"]
    answers = ["On Mount Ceddra.", "It was completed in 1987.", "The Northern Skies Trust runs it now."]
    rows = trainer.teacher_rows(students=[[{"role": "user", "content": q}] for q in questions],
                                teachers=[[{"role": "user", "content": f"Passage: {' '.join(SEQS)}\n\nQuestion: {q}"}]
                                          for q in questions], answers=answers, top_k=8)
    rows += trainer.encode([trainer.render_chat([{"role": "user", "content": "Who runs it?"},
                                                 {"role": "assistant", "content": "The Northern Skies Trust."}])], 512)
    batch = trainer._batch(rows)
    shared = train_module._shared_context_length(batch["input_ids"], batch["labels"])
    prompt = trainer.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                   add_generation_prompt=True)
    assert 20 <= shared < len(trainer.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    plain = trainer._batch(trainer.encode([SEQS[0], SEQS[1]], 512))
    assert train_module._shared_context_length(plain["input_ids"], plain["labels"]) == 0  # loss from token 1

    peft_model = get_peft_model(trainer.model, LoraConfig(r=8, lora_alpha=16, target_modules=["k_proj", "v_proj", "up_proj"],
                                                          init_lora_weights=False, task_type="CAUSAL_LM"))
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        results = []
        for share in (True, False):
            loss = trainer._loss(peft_model, batch, share_prefix=share)
            grads = torch.autograd.grad(loss, params)
            results.append((float(loss.detach()), grads))
    finally:
        trainer.model = peft_model.unload()
        if hasattr(trainer.model, "peft_config"):
            del trainer.model.peft_config
    (loss_shared, grads_shared), (loss_whole, grads_whole) = results
    assert loss_shared == pytest.approx(loss_whole, rel=1e-5)
    # The two paths sum in different orders, so they agree to float32 rounding, which scales with a
    # tensor's largest terms, not with each element: an element that cancels to near zero may differ in
    # every digit (one did on an Intel Xeon, outside rtol 1e-3 / atol 1e-6). Measured on an AMD EPYC,
    # the paths differ by 2.7e-6 of a tensor's norm and float32 from float64 by 8e-6; dropping the
    # gradient through the shared keys and values differs by 0.52 (the median tensor).
    for g_shared, g_whole in zip(grads_shared, grads_whole, strict=True):
        assert relative_error(g_shared, g_whole) < 1e-4
        assert float((g_shared - g_whole).abs().max()) < 1e-4 * float(g_whole.abs().max())


def relative_error(a: "torch.Tensor", b: "torch.Tensor") -> float:
    """How far `a` is from `b`, as a share of `b`'s norm."""
    return float((a.double() - b.double()).norm() / b.double().norm())


class LentThreads:
    """A `threads` callable that lends a second thread at every other step and records what ran before."""

    def __init__(self) -> None:
        self.calls, self.before = 0, []

    def __call__(self) -> int:
        self.before.append(torch.get_num_threads())
        self.calls += 1
        return 2 if self.calls % 2 else 1


def test_threads_are_asked_before_every_step_and_given_back(trainer, first, tmp_path):
    """What a worker lent the API's idle core does (app.cpus.LentCores): every training step, teacher batch
    and decoding step runs on the threads asked for then, the trainer's own come back after, and the
    weights are those of training on fixed threads."""
    from safetensors.torch import load_file

    from workers.seal.hfgen import HFGenerator

    lent = LentThreads()
    trainer.threads = lent
    try:
        res = trainer.train_lora(SEQS, CFG, str(tmp_path / "lent"))
        assert lent.calls == res.steps == 4
        assert lent.before[1:] == [2, 1, 2]  # each step ran on what the one before it asked for
        assert torch.get_num_threads() == trainer.num_threads

        lent.calls, lent.before = 0, []
        question = [{"role": "user", "content": "Where is the Varnholt Observatory?"}]
        reading = [{"role": "user", "content": f"Passage: {SEQS[0]}\n\nQuestion: Where is it?"}]
        trainer.teacher_rows(students=[question] * 3, teachers=[reading] * 3, answers=["On Mount Ceddra."] * 3,
                             top_k=8, batch_size=2)
        assert lent.calls == 3  # the shared document's pass, then two batches
        assert torch.get_num_threads() == trainer.num_threads

        lent.calls = 0
        HFGenerator(trainer).generate(["The Varnholt Observatory sits on"], max_tokens=4)
        assert lent.calls >= 4  # the prompt, then each new token
        assert torch.get_num_threads() == trainer.num_threads
    finally:
        trainer.threads = None
    fixed, lent_weights = (load_file(str(d / "adapter_model.safetensors")) for d in (first[1], tmp_path / "lent"))
    assert res.final_loss == pytest.approx(first[0].final_loss, rel=1e-5)
    # One and two threads trained bit-identical weights on an AMD EPYC but not on an Intel Xeon, whose
    # kernels reduce in another order per thread count. AdamW turns a near-zero gradient's rounding into
    # a whole step, so float32 training differs from float64 by up to 2.6e-3 of a tensor's norm (AMD
    # EPYC), and another reduction order (ATen's scalar kernels, MKL on SSE4.2) trained weights 2.8e-4
    # away; one step of the four lost differs by 0.055 to 0.25.
    assert max(relative_error(lent_weights[k], fixed[k]) for k in fixed) < 1e-2
