"""RQ job entry points. Each loads its inputs by id, calls workers.seal, and records the outcome.

A learn job may run more than once (a retry after a crash, or a duplicate enqueue by the
reconciler). It is safe because: a finished job returns at once; a per-adapter lock keeps two
learns of one adapter sequential; and publishing is idempotent per job id.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis.lock import Lock
from rq import get_current_job

from app import metrics
from app.logs import job_id_var
from app.publishing import publish_version
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import JobStage, JobStatus, LearnJob, utcnow
from workers.main import WorkerContext, get_context

logger = logging.getLogger(__name__)

# Share of overall progress each stage covers (training dominates the wall time).
STAGE_SPAN = {"generating": (0.0, 0.2), "training": (0.2, 0.75), "evaluating": (0.75, 0.95), "publishing": (0.95, 1.0)}
PROGRESS_WRITE_INTERVAL_S = 1.0
LOCK_TTL_S = 60
REPLAY_MAX_SEQUENCES = 64


class JobCancelled(Exception):
    pass


def learn(job_id: str) -> dict[str, Any]:
    """Run one learn job end to end: inner loop per document, gate, publish."""
    ctx = get_context()
    token = job_id_var.set(job_id)
    try:
        return _learn(ctx, job_id)
    finally:
        job_id_var.reset(token)


def _learn(ctx: WorkerContext, job_id: str) -> dict[str, Any]:
    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if job is None:
            logger.warning("learn job %s is not in the registry; dropping it", job_id)
            return {"status": "missing"}
        if job.status.terminal:
            return {"status": job.status.value, "version": job.version}  # a duplicate delivery
        adapter, tenant = job.adapter, job.tenant
        if job.cancel_requested:
            _finish(session, job, JobStatus.cancelled, "cancelled before it started")
            return {"status": "cancelled"}

    reporter = JobReporter(db, job_id)
    with adapter_lock(ctx.redis, adapter, reporter):
        reporter.start()
        workdir = Path(tempfile.mkdtemp(prefix=f"learn-{job_id}-", dir=ctx.settings.data_dir))
        try:
            return _run_and_publish(ctx, job_id, adapter, tenant, reporter, workdir)
        except JobCancelled:
            with session_scope(db) as session:
                _finish(session, queries.get_job(session=session, job_id=job_id), JobStatus.cancelled, "cancelled")
            return {"status": "cancelled"}
        except Exception as exc:
            _record_failure(db, job_id, exc)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_and_publish(ctx: WorkerContext, job_id: str, adapter: str, tenant: str | None,
                     reporter: JobReporter, workdir: Path) -> dict[str, Any]:
    from workers.seal import Cancelled, Document, Probe, decide, learn_document

    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        documents = [Document(title=d.title, text=d.text, probes=[Probe(**p) for p in d.probes]) for d in job.documents]
        options = dict(job.options)
        parent = _current_version(session, adapter)
    selfedit_cfg, train_cfg = build_configs(options)
    parent_dir = parent[1] if parent else None
    parent_pool = _load_replay_pool(ctx, parent_dir)
    replay = _sample_replay(parent_pool, seed=hash(job_id) & 0xFFFF)
    doc_results: list[dict[str, Any]] = []
    accepted_dir: str | None = None
    all_sequences: list[str] = []

    for i, doc in enumerate(documents):
        reporter.document = (i, len(documents))
        try:
            result = learn_document(
                generator=ctx.generator, trainer=ctx.trainer, doc=doc, selfedit_cfg=selfedit_cfg,
                train_cfg=train_cfg, workdir=str(workdir / f"doc-{i}"),
                parent_adapter_dir=accepted_dir or parent_dir, replay_sequences=replay, eval_generator=ctx.scorer,
                progress=reporter.progress, should_cancel=reporter.cancel_requested,
            )
        except Cancelled as exc:
            raise JobCancelled() from exc
        decision = decide(new_before=result.accuracy_before, new_after=result.accuracy_after)
        doc_results.append(_document_metrics(result, decision))
        reporter.event(f"document {i + 1}: accuracy {result.accuracy_before:.0%} → {result.accuracy_after:.0%}"
                       f" ({'accepted' if decision.accepted else 'rejected'})",
                       data=doc_results[-1], type_="metrics")
        if not decision.accepted:
            return _reject(db, job_id, doc_results, decision.reasons)
        accepted_dir = result.best_adapter_dir
        all_sequences += result.training_sequences

    # Last exit before the point of no return: a cancel that arrived during evaluation stops here.
    if reporter.cancel_requested(fresh=True):
        raise JobCancelled()
    reporter.progress("publishing", 0.0, "publishing new version", None)
    metrics_out = _job_metrics(doc_results, reporter.stage_seconds)
    replay_pool = (parent_pool + all_sequences)[-4 * REPLAY_MAX_SEQUENCES:]
    version, path = publish_version(
        db_url=db, store=ctx.store, redis=ctx.redis, adapter=adapter, tenant=tenant, src_dir=Path(accepted_dir),
        job_id=job_id, metrics=metrics_out, parent_version=parent[0] if parent else None,
        metadata={"source": "learn", "base_model": ctx.settings.model_path, "options": options,
                  "documents": [{"title": d.title, "chars": len(d.text)} for d in documents],
                  "replay_pool": replay_pool},
    )
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        job.version = version
        job.metrics = metrics_out
        job.progress = 1.0
        _finish(session, job, JobStatus.published, f"published {adapter}@v{version}")
    logger.info("learn job published %s@v%d", adapter, version)
    return {"status": "published", "version": version, "path": path}


def build_configs(options: dict[str, Any]) -> tuple[Any, Any]:
    """Inner-loop configs: the measured defaults, overridden by the request's options."""
    from workers.seal import SelfEditConfig, TrainConfig

    selfedit = SelfEditConfig(**{k: v for k, v in (("format", options.get("format")), ("k", options.get("k")))
                                 if v is not None})
    train_kwargs = {"epochs": options.get("epochs"), "lr": options.get("lr"), "rank": options.get("rank")}
    train_kwargs = {k: v for k, v in train_kwargs.items() if v is not None}
    if "rank" in train_kwargs:
        train_kwargs["alpha"] = 2 * train_kwargs["rank"]  # keep the paper's alpha = 2 × rank
    return selfedit, TrainConfig(**train_kwargs)


def _current_version(session: Any, adapter: str) -> tuple[int, str] | None:
    row = queries.get_adapter(session=session, name=adapter)
    if row is None or row.current_version is None or row.retired_at is not None:
        return None
    version = queries.get_version(session=session, name=adapter, version=row.current_version)
    return (version.version, version.path) if version else None


def _load_replay_pool(ctx: WorkerContext, parent_dir: str | None) -> list[str]:
    return list(ctx.store.read_metadata(parent_dir).get("replay_pool", [])) if parent_dir else []


def _sample_replay(pool: list[str], *, seed: int) -> list[str]:
    """A sample of the training sequences earlier versions learned, so new training does not erase them."""
    if len(pool) <= REPLAY_MAX_SEQUENCES:
        return pool
    return random.Random(seed).sample(pool, REPLAY_MAX_SEQUENCES)


def _document_metrics(result: Any, decision: Any) -> dict[str, Any]:
    return {
        "accuracy_before": result.accuracy_before, "accuracy_after": result.accuracy_after,
        "f1_before": result.f1_before, "f1_after": result.f1_after, "train_loss": result.train_loss,
        "probes": len(result.probes), "self_generated_probes": result.probes_self_generated,
        "candidates": [{"index": c.index, "accuracy": c.accuracy, "f1": c.f1, "train_loss": c.train_loss,
                        "train_seconds": round(c.train_seconds, 2), "sequences": c.num_sequences}
                       for c in result.candidates],
        "best_candidate": result.best_index,
        "gate": {"accepted": decision.accepted, "reasons": decision.reasons, "numbers": decision.numbers},
        "predictions": list(result.candidates[result.best_index].predictions)[:32],
        "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()},
    }


def _job_metrics(doc_results: list[dict[str, Any]], stage_seconds: dict[str, float]) -> dict[str, Any]:
    n = len(doc_results)
    mean = lambda key: sum(d[key] for d in doc_results) / n  # noqa: E731
    return {
        "accuracy_before": mean("accuracy_before"), "accuracy_after": mean("accuracy_after"),
        "f1_before": mean("f1_before"), "f1_after": mean("f1_after"), "train_loss": mean("train_loss"),
        "probes": sum(d["probes"] for d in doc_results),
        "self_generated_probes": any(d["self_generated_probes"] for d in doc_results),
        "stage_seconds": {k: round(v, 2) for k, v in stage_seconds.items()},
        "documents": doc_results,
    }


def _reject(db: str, job_id: str, doc_results: list[dict[str, Any]], reasons: list[str]) -> dict[str, Any]:
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        job.metrics = {**_job_metrics(doc_results, {}), "rejected_because": reasons}
        job.error = "; ".join(reasons)
        _finish(session, job, JobStatus.rejected, f"rejected by the gate: {job.error}", level="warning")
    return {"status": "rejected", "reasons": reasons}


def _finish(session: Any, job: LearnJob, status: JobStatus, message: str, level: str = "info") -> None:
    job.status = status
    job.finished_at = utcnow()
    queries.add_event(session=session, job_id=job.id, message=message, level=level)
    metrics.LEARN_JOBS.labels(status=status.value).inc()


def _record_failure(db: str, job_id: str, exc: Exception) -> None:
    """Retry while RQ has attempts left; mark the job failed on the last one."""
    rq_job = get_current_job()
    retries_left = (rq_job.retries_left or 0) if rq_job is not None else 0
    message = f"{type(exc).__name__}: {exc}"[:500]
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if retries_left > 0:
            job.status = JobStatus.queued
            queries.add_event(session=session, job_id=job_id, level="warning",
                              message=f"attempt failed ({message}); retrying")
        else:
            job.error = message
            _finish(session, job, JobStatus.failed, f"failed: {message}", level="error")
    logger.exception("learn job %s failed", job_id)


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
    stop = threading.Event()

    def extend() -> None:
        while not stop.wait(LOCK_TTL_S / 3):
            with contextlib.suppress(Exception):
                lock.reacquire()

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

    def start(self) -> None:
        with session_scope(self.db) as session:
            job = queries.get_job(session=session, job_id=self.job_id)
            job.status = JobStatus.running
            job.started_at = job.started_at or utcnow()
            job.attempts += 1
            queries.add_event(session=session, job_id=self.job_id, message=f"attempt {job.attempts} started")

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
            job = queries.get_job(session=session, job_id=self.job_id)
            job.stage = JobStage(stage)
            job.progress = round(min(overall, 0.99), 4)
            if changed or data is not None:
                queries.add_event(session=session, job_id=self.job_id, message=message, data=data,
                                  type_="metrics" if data else "message")
        rq_job = get_current_job()
        if rq_job is not None:
            rq_job.meta.update(stage=stage, progress=overall)
            with contextlib.suppress(Exception):
                rq_job.save_meta()

    def cancel_requested(self, *, fresh: bool = False) -> bool:
        """Whether a cancel was requested; reads the registry at most once a second unless `fresh`."""
        now = time.perf_counter()
        if not self._cancelled and (fresh or now - self._cancel_checked >= 1.0):
            self._cancel_checked = now
            with session_scope(self.db) as session:
                job = queries.get_job(session=session, job_id=self.job_id)
                self._cancelled = bool(job and job.cancel_requested)
        return self._cancelled
