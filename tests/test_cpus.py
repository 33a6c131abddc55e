"""CPU placement of the vLLM engines in `seal up`: fixed core sets in, disjoint cores out."""

from __future__ import annotations

import subprocess
import sys
import time
from itertools import combinations

import pytest

from app.cpus import (
    BIND_ENV,
    LENT_THREADS_ENV,
    TRAIN_THREADS_ENV,
    CorePlan,
    LentCores,
    cpu_seconds,
    format_cores,
    place_engines,
    plan_cores,
)


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
    assert workers == [{"REDIS_URL": "redis://x", BIND_ENV: "1", TRAIN_THREADS_ENV: "1", LENT_THREADS_ENV: "1"}]
    assert base == {"REDIS_URL": "redis://x"}  # not mutated


def test_only_a_single_worker_is_lent_the_apis_cores():
    _, workers = place_engines({}, range(8), 1)
    assert workers[0][LENT_THREADS_ENV] == "3"  # the API engine's OpenMP cores (its 4th runs its scheduler)
    _, workers = place_engines({}, range(8), 2)
    assert all(LENT_THREADS_ENV not in w for w in workers)
    _, workers = place_engines({}, range(1), 1)  # one core: the API's is the worker's own already
    assert LENT_THREADS_ENV not in workers[0]
    # SEAL_TRAIN_LENT_THREADS set by the operator (env or .env, 0 included) is theirs: nothing is added.
    _, workers = place_engines({}, range(2), 1, lent_threads=0)
    assert LENT_THREADS_ENV not in workers[0]


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


class Host:
    """A fake clock and CPU counters for LentCores: `run(seconds, others=..., mine=...)` advances both."""

    def __init__(self) -> None:
        self.now, self.busy, self.mine = 100.0, 0.0, 0.0

    def run(self, seconds: float, *, others: float = 0.0, mine: float = 1.0) -> None:
        self.now += seconds
        self.busy += (others + mine) * seconds
        self.mine += mine * seconds

    def lender(self, **kwargs: float) -> LentCores:
        return LentCores(1, 1, clock=lambda: self.now, sample=lambda: (self.busy, self.mine), **kwargs)


def test_lent_cores_lends_while_the_host_is_quiet_and_takes_them_back_at_a_request():
    host = Host()
    lender = host.lender(quiet_s=10.0)
    assert lender() == 1  # nothing known yet
    for _ in range(9):
        host.run(1.0)
        assert lender() == 1  # quiet for less than the 10 s it must be (since construction)
    host.run(1.0)
    assert lender() == 2
    host.run(1.0, others=0.1, mine=2.0)  # the API's idle hum and a Redis tick: still quiet
    assert lender() == 2
    host.run(1.0, others=0.6, mine=1.4)  # a request: the API's engine takes its core back
    assert lender() == 1
    for _ in range(9):
        host.run(1.0)
        assert lender() == 1  # a trickle of requests should not meet a lent core at each one
    host.run(1.0)
    assert lender() == 2


def test_lent_cores_samples_no_more_often_than_its_interval():
    host = Host()
    lender = host.lender(quiet_s=0.0, interval_s=0.5)
    host.run(1.0)
    assert lender() == 2
    host.run(0.2, others=1.0)
    assert lender() == 2  # within the interval: the last answer
    host.run(0.4, others=1.0)
    assert lender() == 1


def test_a_stale_window_says_nothing_about_now():
    host = Host()
    lender = host.lender(quiet_s=10.0, stale_s=5.0)
    host.run(60.0, others=0.1)  # a minute between two trainings, mostly quiet on average
    assert lender() == 1  # ... yet a request may be running now: the next window decides
    host.run(1.0, others=1.0)
    assert lender() == 1
    host2 = Host()
    lender2 = host2.lender(quiet_s=10.0, stale_s=5.0)
    host2.run(60.0)
    assert lender2() == 1
    host2.run(1.0)
    assert lender2() == 2  # a quiet first window after the gap lends at once


def test_lent_cores_refuses_nonsense():
    with pytest.raises(ValueError):
        LentCores(0, 1)
    with pytest.raises(ValueError):
        LentCores(1, -1)


def test_cpu_seconds_keeps_a_child_that_exited_as_this_process_trees():
    """A child's CPU stays this tree's once the child exits and is reaped, so a window in which a
    child (a probe, a tokenizer pool) ends does not read as the host busy."""
    _, mine0 = cpu_seconds()
    # A second of the child's own CPU, however loaded the host is.
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 1.0: pass"])
    child.wait(60)
    _, mine1 = cpu_seconds()
    assert mine1 - mine0 >= 1.0, (mine0, mine1)


def test_cpu_seconds_sees_another_process_spin():
    """The real counters: a process spinning beside this one is others' CPU, not this process's."""
    busy0, mine0 = cpu_seconds(children=False)
    started = time.monotonic()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 1.5\n"
                                                      "while time.monotonic() < end: pass"])
    spinner.wait(30)
    busy1, mine1 = cpu_seconds(children=False)
    others = (busy1 - busy0) - (mine1 - mine0)
    assert others >= 0.5 * 1.5, (others, time.monotonic() - started)
