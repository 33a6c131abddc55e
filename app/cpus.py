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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
TRAIN_THREADS_ENV = "SEAL_TRAIN_THREADS"

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
                  train_threads: int | None = None) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The API's and each worker's environment with disjoint engine cores (CPU engines only).

    An operator's own VLLM_CPU_OMP_THREADS_BIND in `env` wins: then nothing is changed, not even
    the training threads, which would no longer match the cores. `train_threads` is the operator's
    SEAL_TRAIN_THREADS (from the environment or .env); when set it is kept.
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
        children.append(child)
    return api, children
