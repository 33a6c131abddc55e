import pytest

from workers.seal.config import EvalConfig, SelfEditConfig, TrainConfig


@pytest.mark.parametrize("cls,kwargs,needle", [
    (SelfEditConfig, {"format": "poetry"}, "poetry"),
    (SelfEditConfig, {"k": 0}, "k"),
    (TrainConfig, {"rank": 12}, "12"),
    (TrainConfig, {"lr": 0.0}, "lr"),
    (TrainConfig, {"target_modules": ()}, "target_modules"),
    (EvalConfig, {"num_probes": 0}, "num_probes"),
])
def test_bad_values_name_themselves(cls, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        cls(**kwargs)


def test_defaults_are_valid():
    SelfEditConfig(), TrainConfig(), EvalConfig()
    assert TrainConfig(target_modules=["q_proj"]).target_modules == ("q_proj",)
