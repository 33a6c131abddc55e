"""Per-model recipes at both ends: `seal eval` writes one, Settings (and so the worker) reads it.

The recipe module itself is tested in tests/seal/test_recipes.py."""

from __future__ import annotations

import json

from app.config import Settings
from workers.seal.config import TrainConfig
from workers.seal.harness import HarnessConfig
from workers.seal.recipes import Recipe, recipe_path, save_recipe

MODEL = "Tiny-Model"


def _settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, model=str(tmp_path / MODEL), **kw)


def test_recipe_dir_defaults_under_the_data_dir(tmp_path, monkeypatch):
    assert _settings(tmp_path).resolved_recipe_dir() == tmp_path / "recipes"
    monkeypatch.setenv("SEAL_RECIPE_DIR", str(tmp_path / "elsewhere"))
    assert _settings(tmp_path).resolved_recipe_dir() == tmp_path / "elsewhere"


def test_settings_recipe_reads_the_model_file_and_follows_changes(tmp_path):
    s = _settings(tmp_path)
    assert s.recipe() == Recipe(model=MODEL)  # no file anywhere: the built-in defaults
    save_recipe(Recipe(model=MODEL, epochs=4, anchors=2), recipe_path(tmp_path / "recipes", MODEL))
    assert (s.recipe().epochs, s.recipe().anchors) == (4, 2)  # the next job sees it, no restart
    bundled = Settings(data_dir=tmp_path)
    assert bundled.recipe().model == "SmolLM2-135M-Instruct"  # the packaged recipe


def test_anchor_count_operator_override_wins_over_the_recipe(tmp_path, monkeypatch):
    recipe = Recipe(anchors=3)
    assert _settings(tmp_path).anchor_count(recipe) == 3
    assert _settings(tmp_path, anchor_sequences=0).anchor_count(recipe) == 0
    monkeypatch.setenv("SEAL_ANCHOR_SEQUENCES", "12")
    assert _settings(tmp_path).anchor_count(recipe) == 12
    monkeypatch.delenv("SEAL_ANCHOR_SEQUENCES")
    assert _settings(tmp_path).anchor_count() == Recipe().anchors  # the configured model's recipe


def test_seal_eval_writes_the_winning_condition(tmp_path, monkeypatch):
    from app.cli.eval import _write_recipe

    monkeypatch.setenv("SEAL_DATA_DIR", str(tmp_path))
    save_recipe(Recipe(model=MODEL, k=2, anchors=5), recipe_path(tmp_path / "recipes", MODEL))
    rows = [{"condition": c, "passages": 2, "questions": 8, "accuracy": a, "f1": 0.5, "judge_accuracy": None,
             "seconds": t, "junk_self_edits": 0}
            for c, a, t in [("base", 0.0, 1), ("passage", 0.75, 40), ("self-edit:rewrite", 0.75, 30),
                            ("context", 1.0, 2)]]
    cfg = HarnessConfig(conditions=["base", "passage", "self-edit", "context"],
                        train=TrainConfig(epochs=6, lr=2e-3, rank=16, alpha=32))
    _write_recipe(rows, cfg, str(tmp_path / MODEL), provenance={"dataset": "fictional x"})
    written = json.loads((tmp_path / "recipes" / f"{MODEL}.json").read_text())
    assert {k: written[k] for k in ("model", "format", "k", "epochs", "lr", "rank", "alpha", "anchors")} == {
        "model": MODEL, "format": "rewrite", "k": 2, "epochs": 6, "lr": 2e-3, "rank": 16, "alpha": 32, "anchors": 5}
    assert written["measured"]["dataset"] == "fictional x" and written["measured"]["accuracy"] == 0.75
    assert _settings(tmp_path).recipe().format == "rewrite"


def test_seal_eval_distils_as_the_section_it_may_write(tmp_path, monkeypatch):
    from app.cli.eval import _distill_config

    monkeypatch.setenv("SEAL_DATA_DIR", str(tmp_path))
    save_recipe(Recipe(model=MODEL, distill_questions=12,
                       shard={"format": "distill", "distill_questions": 20, "distill_prefixes": True}),
                recipe_path(tmp_path / "recipes", MODEL))
    shard = _distill_config(str(tmp_path / MODEL), "shard")
    stream = _distill_config(str(tmp_path / MODEL), "stream")
    assert (shard.max_questions, shard.prefixes) == (20, True)
    assert (stream.max_questions, stream.prefixes) == (12, False)
