"""CPU cores for the vLLM CPU engines that `seal up` runs side by side on one host.

vLLM's CPU backend pins each engine's OpenMP threads to the cores named by
VLLM_CPU_OMP_THREADS_BIND (vllm/utils/ompmultiprocessing.py, `_parse_omp_threads_bind_env`). Its
default, "auto", takes the allowed cores of NUMA node 0 (one logical CPU per physical core) and
keeps the last one back for the engine's scheduler process, whatever other engine already runs
there. So the API's engine and each worker's engine pin the same cores: on a 2-core host both
sit on core 0, their OpenMP barriers spinning against each other, while core 1 idles.
`plan_cores` gives every engine cores of its own; `place_engines` puts the plan into the
environments of the children `seal up` spawns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
TRAIN_THREADS_ENV = "SEAL_TRAIN_THREADS"
LENT_THREADS_ENV = "SEAL_TRAIN_LENT_THREADS"

# From this many cores in a share, its last core is left out of the engine's OpenMP threads: the
# engine's scheduler process and the server's own threads run there, as vLLM's "auto" keeps one
# back for them. Smaller shares keep every core (a 1-core share has nothing to spare).
RESERVE_FROM = 4


@dataclass(frozen=True)
class CorePlan:
    """Cores per process: disjoint whenever there are at least as many cores as processes."""

    api: tuple[int, ...]  # the API engine's OpenMP threads
    workers: tuple[tuple[int, ...], ...]  # each worker engine's OpenMP threads
    train_threads: tuple[int, ...]  # each worker's torch threads for training: its whole share


def plan_cores(cores: Iterable[int], workers: int) -> CorePlan:
    """Split `cores` (os.sched_getaffinity(0)) between the API engine and `workers` worker engines.

    The API gets half the cores (serving is always on and latency-bound; learns come in bursts),
    but never so many that a worker is left without a core of its own. The workers split the rest
    into contiguous shares. A worker's engine and its trainer share one share: a learn job
    generates, then trains, then scores, and the engine is idle while training (its shm reader
    stops spinning after 1 s), so training uses every core of the share, which is every core no
    engine is decoding on. With fewer cores than processes some must share: the API keeps core 0
    and the workers take turns on the rest.

    Args:
        cores: logical CPU ids this process may run on.
        workers: worker processes, each with one engine.

    Returns:
        The plan; on 2 cores and 1 worker: API engine on core 0, the worker's engine on core 1,
        training 1 thread.
    """
    ids = sorted(set(cores))
    if not ids:
        raise ValueError("no CPU cores to place the engines on")
    if workers < 0:
        raise ValueError(f"workers={workers} is negative")
    n = len(ids)
    if workers == 0:
        return CorePlan(api=_engine_cores(ids), workers=(), train_threads=())
    if n == 1:
        return CorePlan(api=tuple(ids), workers=(tuple(ids),) * workers, train_threads=(1,) * workers)
    api_n = max(1, min(n // 2, n - workers))
    api, rest = ids[:api_n], ids[api_n:]
    if len(rest) < workers:  # more workers than cores left: they take turns, one core each
        shares = [[rest[i % len(rest)]] for i in range(workers)]
    else:
        size, extra = divmod(len(rest), workers)
        shares, start = [], 0
        for i in range(workers):
            end = start + size + (i < extra)
            shares.append(rest[start:end])
            start = end
    return CorePlan(api=_engine_cores(api), workers=tuple(_engine_cores(s) for s in shares),
                    train_threads=tuple(len(s) for s in shares))


def _engine_cores(share: list[int]) -> tuple[int, ...]:
    return tuple(share[:-1] if len(share) >= RESERVE_FROM else share)


def format_cores(cores: Iterable[int]) -> str:
    """The list in vLLM's syntax, runs collapsed: (0, 1, 2, 5) -> "0-2,5"."""
    ids = sorted(set(cores))
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        runs.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(runs)


def place_engines(env: Mapping[str, str], cores: Iterable[int], workers: int, *,
                  train_threads: int | None = None,
                  lent_threads: int | None = None) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The API's and each worker's environment with disjoint engine cores (CPU engines only).

    An operator's own VLLM_CPU_OMP_THREADS_BIND in `env` wins: then nothing is changed, not even
    the training threads, which would no longer match the cores. `train_threads` is the operator's
    SEAL_TRAIN_THREADS (from the environment or .env); when set it is kept. A single worker is lent
    the API engine's cores while the host idles (LentCores) unless `lent_threads`, the operator's
    SEAL_TRAIN_LENT_THREADS, says otherwise. Several workers are lent none: two that start training
    together would both see an idle host and take the same cores.
    """
    if env.get(BIND_ENV):
        return dict(env), [dict(env) for _ in range(workers)]
    plan = plan_cores(cores, workers)
    api = {**env, BIND_ENV: format_cores(plan.api)}
    children = []
    for share, threads in zip(plan.workers, plan.train_threads, strict=True):
        child = {**env, BIND_ENV: format_cores(share)}
        if train_threads is None:
            child[TRAIN_THREADS_ENV] = str(threads)
            if lent_threads is None and workers == 1 and not set(plan.api) & set(share):
                child[LENT_THREADS_ENV] = str(len(plan.api))
        children.append(child)
    return api, children


class LentCores:
    """How many torch threads a worker's training may run right now: its own share always, and
    `lent` more while nothing else on the host has used CPU for `quiet_s`.

    On `seal up`'s 2-core plan the API's engine owns core 0 and the worker trains on core 1 alone,
    yet the API's engine idles between requests (about 1% of a core), so a learn ran at one thread
    beside an idle core. Training asks before every step (`LoraTrainer`'s `threads`); a request that
    arrives mid-step shares its core with one training thread for that step at most, and the next
    step runs on the worker's own share again. Others' CPU is the host's busy time on the cores this
    process may run on (psutil.cpu_times) less this process's and its children's (its own vLLM
    engine's), over the last sample window. CPU only: a GPU trains on the GPU.
    """

    def __init__(self, own: int, lent: int, *, busy_cores: float = 0.25, quiet_s: float = 10.0,
                 interval_s: float = 0.5, stale_s: float = 5.0, clock: Callable[[], float] | None = None,
                 sample: Callable[[], tuple[float, float]] | None = None) -> None:
        """Args:
            own: threads the worker's share always has.
            lent: threads added while the host is quiet.
            busy_cores: others' CPU, in cores, above which the host counts as busy.
            quiet_s: how long the host must have been quiet before the lent threads come back, so a
                trickle of requests does not meet a borrowed core at every one of them.
            interval_s: the shortest sample window; calls within it return the last answer.
            stale_s: a window longer than this (training had stopped) says nothing about now: it is
                only the start of the next one.
            clock, sample: for tests; `sample` returns (the host's busy CPU seconds, this process
                tree's CPU seconds), both cumulative.
        """
        if own < 1 or lent < 0:
            raise ValueError(f"LentCores needs own >= 1 and lent >= 0, got {own} and {lent}")
        self.own, self.lent = own, lent
        self.busy_cores, self.quiet_s, self.interval_s, self.stale_s = busy_cores, quiet_s, interval_s, stale_s
        self._clock = clock or time.monotonic
        self._sample = sample or cpu_seconds
        self._at = self._clock()
        self._busy, self._mine = self._sample()
        self._busy_at = self._at  # unknown before the first window: as if busy
        self._threads = own

    def __call__(self) -> int:
        now = self._clock()
        window = now - self._at
        if window < self.interval_s:
            return self._threads
        busy, mine = self._sample()
        others = max(0.0, (busy - self._busy) - (mine - self._mine)) / window
        self._at, self._busy, self._mine = now, busy, mine
        if window > self.stale_s:
            self._threads = self.own  # the next window decides
            self._busy_at = now - self.quiet_s
        elif others > self.busy_cores:
            self._threads, self._busy_at = self.own, now
        else:
            self._threads = self.own + self.lent if now - self._busy_at >= self.quiet_s else self.own
        return self._threads


def cpu_seconds(*, children: bool = True) -> tuple[float, float]:
    """(busy CPU seconds on the cores this process may run on, this process's CPU seconds, with its
    children's unless `children` is False), both since boot.

    A child that has exited is still counted: its time moves to its parent's `children_*` counters
    when it is reaped, which are summed too. Without them, a child's whole life read as others' CPU
    in the window it exited, and that window kept the lent threads back for `quiet_s`."""
    import psutil

    me = psutil.Process()
    per_core = psutil.cpu_times(percpu=True)
    cores = me.cpu_affinity() if hasattr(me, "cpu_affinity") else range(len(per_core))
    busy = sum(per_core[i].user + per_core[i].nice + per_core[i].system + getattr(per_core[i], "irq", 0.0)
               + getattr(per_core[i], "softirq", 0.0) for i in cores if i < len(per_core))
    mine = 0.0
    for proc in [me, *(me.children(recursive=True) if children else ())]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # a child that just exited
            continue
        mine += times.user + times.system + (times.children_user + times.children_system if children else 0.0)
    return busy, mine
