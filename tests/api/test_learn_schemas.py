import pytest
from pydantic import ValidationError

from app.api.learn_schemas import LearnOptions
from workers.seal.config import SelfEditConfig, TrainConfig
from workers.seal.recipes import Recipe

RECIPE = Recipe(model="m", format="implications", k=2, epochs=6, lr=2e-3, rank=16, alpha=16,
                target_modules=("q_proj", "v_proj"), anchors=4)


def test_without_a_recipe_the_builtin_defaults_apply():
    assert LearnOptions().to_inner_configs() == (SelfEditConfig(), TrainConfig())


def test_the_recipe_is_the_default():
    selfedit, train = LearnOptions().to_inner_configs(RECIPE)
    assert (selfedit.format, selfedit.k) == ("implications", 2)
    assert (train.epochs, train.lr, train.rank, train.alpha, train.target_modules) == (6, 2e-3, 16, 16,
                                                                                      ("q_proj", "v_proj"))


def test_request_options_override_the_recipe():
    opts = LearnOptions(format="passage", k=1, epochs=3, lr=5e-4, rank=32)
    selfedit, train = opts.to_inner_configs(RECIPE)
    assert (selfedit.format, selfedit.k) == ("passage", 1)
    assert (train.epochs, train.lr, train.rank) == (3, 5e-4, 32)
    assert train.alpha == 32  # the recipe's alpha / rank (1) is kept at the requested rank
    assert train.target_modules == ("q_proj", "v_proj")  # not a request option: the recipe's
    assert LearnOptions(rank=8).to_inner_configs()[1].alpha == 16  # built-in alpha / rank = 2


def test_cost_follows_the_recipe():
    assert LearnOptions().cost(3, RECIPE) == 3 * 2 * 6
    assert LearnOptions(epochs=1).cost(3, RECIPE) == 3 * 2 * 1
    assert LearnOptions().cost(3) == 3 * SelfEditConfig().k * TrainConfig().epochs


def test_unknown_format_is_refused():
    with pytest.raises(ValidationError, match="format"):
        LearnOptions(format="poetry")


def test_a_seed_fixes_the_jobs_draws_and_is_bounded():
    from workers.learn_core import job_seed

    job = "8f3a2c1e-0000-4000-8000-000000000000"
    assert job_seed(job, {"seed": 7}) == job_seed("another-job", {"seed": 7}) == 7
    assert job_seed(job, {}) == job_seed(job, {"seed": None}) == 0x8F3A2C1E  # read from the id, stable on retry
    assert LearnOptions(seed=0).seed == 0 and LearnOptions(seed=2**31 - 1).seed == 2**31 - 1
    for bad in (-1, 2**31, 1.5, "7x"):
        with pytest.raises(ValidationError, match="seed"):
            LearnOptions(seed=bad)
