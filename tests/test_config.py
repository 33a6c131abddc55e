"""Settings: validation, normalisation and the safety checks."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_defaults_are_embedded(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'seal.db'}"
    assert s.model_path == str(tmp_path / "models" / "SmolLM2-135M-Instruct")
    assert s.base_model_id == "SmolLM2-135M-Instruct"
    assert s.adapter_root == tmp_path / "adapters"
    assert not s.auth_enabled


def test_gate_margins_are_strict_and_the_same_for_every_model(tmp_path):
    bundled = Settings(data_dir=tmp_path)
    other = Settings(data_dir=tmp_path, model=str(tmp_path / "Qwen2.5-7B-Instruct"))
    for s in (bundled, other):  # at most 1 earlier question in 10, at most 1 of the 24 canaries
        assert (s.gate_old_margin, s.gate_canary_margin) == (0.10, 0.05)
    assert not hasattr(bundled, "canary_margin") and not hasattr(bundled, "old_margin")
    chosen = Settings(data_dir=tmp_path, gate_old_margin=0.0, gate_canary_margin=0.0)
    assert (chosen.gate_old_margin, chosen.gate_canary_margin) == (0.0, 0.0)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, gate_canary_margin=1.5)


def test_paths_are_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert Settings(data_dir="rel").data_dir == tmp_path / "rel"


def test_env_names(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db/seal")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("SEAL_API_KEYS", '[{"tenant": "t", "scopes": ["infer"], "key": "secret"}]')
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@db/seal"
    assert s.redis_url == "redis://r:6379/1"
    assert s.api_keys[0].sha256 == hashlib.sha256(b"secret").hexdigest()
    assert "secret" not in s.model_dump_json()


def test_max_lora_rank_covers_what_the_recipe_trains_and_no_more(tmp_path):
    from workers.seal.recipes import Recipe, save_recipe

    # The bundled model's recipe trains rank 16 (its shards and the ReST-EM policy too): the engines
    # reserve 16, not 64, for every adapter (bench/lora_rank.py measures what the difference costs).
    assert Settings(data_dir=tmp_path).resolved_max_lora_rank() == 16
    model = str(tmp_path / "Qwen2.5-7B-Instruct")
    assert Settings(data_dir=tmp_path, model=model).resolved_max_lora_rank() == 32  # the built-in defaults: r32
    save_recipe(Recipe(model="Qwen2.5-7B-Instruct", rank=8, shard={"rank": 64}),
                tmp_path / "recipes" / "Qwen2.5-7B-Instruct.json")
    assert Settings(data_dir=tmp_path, model=model).resolved_max_lora_rank() == 64  # its shards train r64
    assert Settings(data_dir=tmp_path, model=model, max_lora_rank=128).resolved_max_lora_rank() == 128  # the operator's


@pytest.mark.parametrize("field, value", [("max_lora_rank", 48), ("log_format", "xml"), ("kv_cache_gib", 0)])
def test_bad_values_are_refused(field, value, tmp_path):
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, **{field: value})


def test_open_mode_binds_loopback_only(tmp_path):
    open_settings = Settings(data_dir=tmp_path)
    open_settings.check_bind_address("127.0.0.1")
    open_settings.check_bind_address("::1")
    with pytest.raises(ValueError, match="no API keys"):
        open_settings.check_bind_address("0.0.0.0")
    keyed = Settings(data_dir=tmp_path, api_keys=[{"tenant": "t", "key": "k"}])
    keyed.check_bind_address("0.0.0.0")


def test_bf16_autocast_follows_the_cpu_unless_set(monkeypatch, tmp_path):
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert Settings(data_dir=tmp_path, device="cpu").resolved_train_bf16_autocast() is native
    assert Settings(data_dir=tmp_path, device="cpu", train_bf16_autocast=False).resolved_train_bf16_autocast() is False
    # A model loaded in bf16 computes in bf16 already.
    assert Settings(data_dir=tmp_path, device="cpu", dtype="bfloat16").resolved_train_bf16_autocast() is False
    monkeypatch.setenv("SEAL_TRAIN_BF16_AUTOCAST", "true")
    assert Settings(data_dir=tmp_path, device="cpu").resolved_train_bf16_autocast() is True
