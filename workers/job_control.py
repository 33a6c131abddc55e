"""What a running job needs from its surroundings: progress and events in the registry, the
per-adapter lock, and the stop signals (a cancel request, a worker shutdown, a lost lock)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import LockNotOwnedError
from redis.lock import Lock
from rq import get_current_job

from app.registry import lifecycle, queries
from app.registry.db import session_scope

# Share of overall progress each stage covers (training dominates the wall time).
STAGE_SPAN = {"generating": (0.0, 0.2), "training": (0.2, 0.75), "evaluating": (0.75, 0.95), "publishing": (0.95, 1.0)}
PROGRESS_WRITE_INTERVAL_S = 1.0
LOCK_TTL_S = 60


class JobCancelled(Exception):
    pass


class PermanentJobError(Exception):
    """A failure no retry can fix (bad input, a policy the tenant may not use): fail at once."""


class LockLost(Exception):
    """The adapter lock expired under this job (Redis restarted, or a long stall): another worker
    may now be learning into the same adapter, so this attempt stops and is retried."""


class JobInterrupted(Exception):
    """The worker is shutting down (SIGTERM): stop at a checkpoint and hand the job back to the queue."""


@contextlib.contextmanager
def adapter_lock(redis: Any, adapter: str, reporter: JobReporter) -> Iterator[None]:
    """Serialise learns into one adapter across all workers: version N+1 must start from N.

    The lock expires LOCK_TTL_S after its holder dies, so a killed worker cannot wedge an adapter.
    """
    lock = Lock(redis, f"seal:lock:adapter:{adapter}", timeout=LOCK_TTL_S, thread_local=False)
    waited = False
    while not lock.acquire(blocking=True, blocking_timeout=5):
        if not waited:
            reporter.event(f"waiting for another learn into '{adapter}' to finish")
            waited = True
        if reporter.cancel_requested():
            raise JobCancelled()
        reporter.raise_if_stopping()
    stop = threading.Event()

    def extend() -> None:
        failures = 0
        while not stop.wait(LOCK_TTL_S / 3):
            try:
                lock.reacquire()
                failures = 0
            except LockNotOwnedError:
                reporter.lock_lost = True  # the key expired or changed hands: nothing left to renew
                return
            except Exception:  # noqa: BLE001 - Redis briefly away: the lock holds for the rest of its TTL
                failures += 1
                if failures * LOCK_TTL_S / 3 >= LOCK_TTL_S:
                    reporter.lock_lost = True
                    return

    keeper = threading.Thread(target=extend, daemon=True, name=f"lock-{adapter}")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join(5)
        with contextlib.suppress(Exception):
            lock.release()


class JobReporter:
    """Writes stage, progress and events to the registry (throttled) and to the RQ job's meta."""

    def __init__(self, db: str, job_id: str):
        self.db = db
        self.job_id = job_id
        self.document = (0, 1)
        self.stage_seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._stage_started = time.perf_counter()
        self._last_write = 0.0
        self._cancel_checked = 0.0
        self._cancelled = False
        self.lock_lost = False  # set by adapter_lock's keeper thread

    def stage_totals(self) -> dict[str, float]:
        """Seconds per stage so far, the stage still running included (a verdict ends a job mid-stage)."""
        totals = dict(self.stage_seconds)
        if self._stage is not None:
            totals[self._stage] = totals.get(self._stage, 0.0) + time.perf_counter() - self._stage_started
        return totals

    def start(self) -> None:
        with session_scope(self.db) as session:
            if not lifecycle.start_attempt(session, queries.get_job(session=session, job_id=self.job_id)):
                raise JobCancelled(f"learn job {self.job_id} was cancelled before it started")

    def event(self, message: str, *, data: dict[str, Any] | None = None, type_: str = "message",
              level: str = "info") -> None:
        with session_scope(self.db) as session:
            queries.add_event(session=session, job_id=self.job_id, message=message, data=data, type_=type_, level=level)

    def progress(self, stage: str, fraction: float, message: str, data: dict[str, Any] | None) -> None:
        """The inner loop's progress callback."""
        now = time.perf_counter()
        changed = stage != self._stage
        if changed:
            if self._stage is not None:
                self.stage_seconds[self._stage] = self.stage_seconds.get(self._stage, 0.0) + now - self._stage_started
            self._stage, self._stage_started = stage, now
        lo, hi = STAGE_SPAN.get(stage, (0.0, 1.0))
        doc_index, doc_count = self.document
        overall = (doc_index + lo + (hi - lo) * max(0.0, min(1.0, fraction))) / doc_count
        if not changed and data is None and now - self._last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self._last_write = now
        with session_scope(self.db) as session:
            lifecycle.report_progress(queries.get_job(session=session, job_id=self.job_id), stage, overall)
            if changed or data is not None:
                queries.add_event(session=session, job_id=self.job_id, message=message, data=data,
                                  type_="metrics" if data else "message")
        rq_job = get_current_job()
        if rq_job is not None:
            rq_job.meta.update(stage=stage, progress=overall)
            with contextlib.suppress(Exception):
                rq_job.save_meta()

    def should_stop(self) -> bool:
        """The inner loop's stop check: a cancel request, a worker shutdown or a lost adapter lock."""
        return shutting_down() or self.lock_lost or self.cancel_requested()

    def raise_if_stopping(self) -> None:
        if shutting_down():
            raise JobInterrupted()
        if self.lock_lost:
            raise LockLost(f"the adapter lock of job {self.job_id} expired while it ran")

    def cancel_requested(self, *, fresh: bool = False) -> bool:
        """Whether a cancel was requested; reads the registry at most once a second unless `fresh`."""
        now = time.perf_counter()
        if not self._cancelled and (fresh or now - self._cancel_checked >= 1.0):
            self._cancel_checked = now
            with session_scope(self.db) as session:
                job = queries.get_job(session=session, job_id=self.job_id)
                self._cancelled = bool(job and job.cancel_requested)
        return self._cancelled


def shutting_down() -> bool:
    from workers.main import SHUTDOWN

    return SHUTDOWN.is_set()
