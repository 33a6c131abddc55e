import pytest

from workers.seal.config import EvalConfig, SelfEditConfig, TrainConfig


@pytest.mark.parametrize("cls,kwargs,needle", [
    (SelfEditConfig, {"format": "poetry"}, "poetry"),
    (SelfEditConfig, {"k": 0}, "k"),
    (TrainConfig, {"rank": 12}, "12"),
    (TrainConfig, {"lr": 0.0}, "lr"),
    (TrainConfig, {"target_modules": ()}, "target_modules"),
    (TrainConfig, {"min_steps": -1}, "min_steps"),
    (EvalConfig, {"num_probes": 0}, "num_probes"),
])
def test_bad_values_name_themselves(cls, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        cls(**kwargs)


def test_defaults_are_valid():
    SelfEditConfig(), TrainConfig(), EvalConfig()
    assert TrainConfig(target_modules=["q_proj"]).target_modules == ("q_proj",)


def test_min_steps_adds_whole_epochs_to_short_runs_only():
    cfg = TrainConfig(epochs=6, batch_size=8, min_steps=24)
    assert cfg.epochs_for(11) == 12  # 2 steps an epoch: a two-sentence document's rows
    assert cfg.epochs_for(20) == 8  # 3 steps an epoch: 24 steps
    assert cfg.epochs_for(60) == 6  # 8 steps an epoch already give 48
    assert cfg.epochs_for(0) == 6
    assert TrainConfig(epochs=6, batch_size=8).epochs_for(11) == 6  # off by default
