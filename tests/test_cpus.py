"""CPU placement of the vLLM engines in `seal up`: fixed core sets in, disjoint cores out."""

from __future__ import annotations

from itertools import combinations

import pytest

from app.cpus import BIND_ENV, TRAIN_THREADS_ENV, CorePlan, format_cores, place_engines, plan_cores


def engines(plan: CorePlan) -> list[tuple[int, ...]]:
    return [plan.api, *plan.workers]


def test_two_cores_one_worker():
    # The dev box: before, both engines sat on core 0 ("auto" keeps the last core back).
    assert plan_cores({0, 1}, 1) == CorePlan(api=(0,), workers=((1,),), train_threads=(1,))


def test_one_core_is_shared():
    assert plan_cores({0}, 1) == CorePlan(api=(0,), workers=((0,),), train_threads=(1,))


def test_sixteen_cores_one_worker():
    plan = plan_cores(range(16), 1)
    # Half to serving; each engine leaves the last core of its share to its scheduler process.
    assert plan == CorePlan(api=tuple(range(7)), workers=(tuple(range(8, 15)),), train_threads=(8,))


def test_sixteen_cores_two_workers():
    plan = plan_cores(range(16), 2)
    assert plan.api == tuple(range(7))
    assert plan.workers == ((8, 9, 10), (12, 13, 14))
    assert plan.train_threads == (4, 4)


@pytest.mark.parametrize("n", range(1, 33))
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_engines_are_disjoint_when_there_are_enough_cores(n, workers):
    plan = plan_cores(range(n), workers)
    assert len(plan.workers) == len(plan.train_threads) == workers
    assert all(engine and set(engine) <= set(range(n)) for engine in engines(plan))
    assert all(t >= 1 for t in plan.train_threads)
    if n > workers:
        for a, b in combinations(engines(plan), 2):
            assert not set(a) & set(b), plan
        # Training threads never exceed the cores no other engine pins.
        assert sum(plan.train_threads) <= n - len(plan.api)


def test_two_workers_on_two_cores_share_the_second():
    plan = plan_cores({0, 1}, 2)
    assert plan.api == (0,) and plan.workers == ((1,), (1,)) and plan.train_threads == (1, 1)


def test_few_cores_leave_every_worker_a_core():
    # Half would be 2 for the API; with 3 workers it keeps 1 so that no worker shares.
    assert plan_cores(range(4), 3) == CorePlan(api=(0,), workers=((1,), (2,), (3,)), train_threads=(1, 1, 1))


def test_cores_need_not_be_contiguous():
    # A cgroup or taskset may allow any subset.
    plan = plan_cores({3, 5, 9, 12}, 1)
    assert plan == CorePlan(api=(3, 5), workers=((9, 12),), train_threads=(2,))


def test_no_workers_the_api_takes_all():
    assert plan_cores(range(2), 0) == CorePlan(api=(0, 1), workers=(), train_threads=())


def test_bad_inputs():
    with pytest.raises(ValueError):
        plan_cores([], 1)
    with pytest.raises(ValueError):
        plan_cores([0], -1)


def test_format_cores_in_vllm_syntax():
    assert format_cores([0]) == "0"
    assert format_cores([2, 0, 1, 5, 7, 8]) == "0-2,5,7-8"
    assert format_cores(range(8, 15)) == "8-14"


def test_place_engines_sets_each_childs_env():
    base = {"REDIS_URL": "redis://x"}
    api, workers = place_engines(base, {0, 1}, 1)
    assert api == {"REDIS_URL": "redis://x", BIND_ENV: "0"}
    assert workers == [{"REDIS_URL": "redis://x", BIND_ENV: "1", TRAIN_THREADS_ENV: "1"}]
    assert base == {"REDIS_URL": "redis://x"}  # not mutated


def test_place_engines_keeps_the_operators_choices():
    api, workers = place_engines({BIND_ENV: "nobind"}, range(16), 2)
    assert api == {BIND_ENV: "nobind"} and workers == [{BIND_ENV: "nobind"}] * 2
    # SEAL_TRAIN_THREADS set by the operator (env or .env): the cores are placed, the threads kept.
    api, workers = place_engines({}, range(16), 1, train_threads=3)
    assert api[BIND_ENV] == "0-6" and workers == [{BIND_ENV: "8-14"}]


def test_seal_up_places_engines_on_cpu_only(tmp_path, monkeypatch):
    from app.cli.service import _place_cpu_engines
    from app.config import Settings

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    env = {"REDIS_URL": "redis://x"}
    api, workers = _place_cpu_engines(Settings(data_dir=tmp_path, device="cpu", train_threads=None), env, 1)
    assert (api[BIND_ENV], workers[0][BIND_ENV], workers[0][TRAIN_THREADS_ENV]) == ("0", "1", "1")
    assert _place_cpu_engines(Settings(data_dir=tmp_path, device="cuda"), env, 1) == (env, [env])
