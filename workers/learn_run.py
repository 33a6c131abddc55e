"""One learn or consolidate job, run end to end inside a worker: load the job, take the adapter's
lock, train and gate with workers.seal, and publish or reject. Every state change of the job goes
through app.registry.lifecycle."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rq import get_current_job

from app.api.learn_schemas import LearnOptions
from app.knowledge.shards import is_kb
from app.publishing import AdapterMoved, AdapterOwnedElsewhere, publish_version, record_rejected
from app.registry import lifecycle, queries
from app.registry.db import session_scope
from app.registry.models import JobStatus
from workers.job_control import (
    JobCancelled,
    JobInterrupted,
    JobReporter,
    PermanentJobError,
    adapter_lock,
)
from workers.main import WorkerContext

if TYPE_CHECKING:  # the worker imports these lazily: workers.seal pulls in torch
    from workers.seal.continual import GateConfig, ReplayConfig, StreamMemory
    from workers.seal.recipes import Recipe

logger = logging.getLogger(__name__)

# How often a job trains again because a rollback or another publish moved its parent.
MAX_PARENT_MOVES = 2


@dataclass(frozen=True)
class VersionRef:
    """A published version of an adapter: its number and where its files are."""

    version: int
    path: str


def run_job(ctx: WorkerContext, job_id: str) -> dict[str, Any]:
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
            lifecycle.finish(session, job, JobStatus.cancelled, "cancelled before it started")
            return {"status": "cancelled"}

        knowledge_base = is_kb(queries.get_adapter(session=session, name=adapter))
        run = _consolidate if job.kind == "consolidate" else _run_and_publish

    reporter = JobReporter(db, job_id)
    try:
        if knowledge_base:
            # Shards lock themselves: learns into other shards of the same kb run beside this one.
            _check_owner(db, adapter, tenant)
            from workers.kb_run import run_kb_job, run_kb_repack

            return (run_kb_repack if run is _consolidate else run_kb_job)(ctx, job_id, adapter, tenant, reporter)
        with adapter_lock(ctx.redis, adapter, reporter):
            reporter.start()
            moves = 0
            while True:
                _check_owner(db, adapter, tenant)
                workdir = Path(tempfile.mkdtemp(prefix=f"{run.__name__.strip('_')}-{job_id}-",
                                                dir=ctx.settings.data_dir))
                try:
                    return run(ctx, job_id, adapter, tenant, reporter, workdir)
                except AdapterMoved as moved:
                    moves += 1
                    if moved.retired or moves > MAX_PARENT_MOVES:
                        raise
                    reporter.event(f"{adapter} changed while this job trained (a rollback or another publish); "
                                   "training again on top of what it serves now", level="warning")
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
    except JobCancelled:
        _finish_cancelled(db, job_id, "cancelled")
        return {"status": "cancelled"}
    except AdapterMoved as exc:
        if not exc.retired:  # moved again on every retraining: let RQ's retry start afresh
            _record_failure(db, job_id, exc)
            raise
        _finish_cancelled(db, job_id, "cancelled: the adapter was retired")
        return {"status": "cancelled"}
    except JobInterrupted:
        _requeue_interrupted(db, job_id)
        raise
    except Exception as exc:
        _record_failure(db, job_id, exc)
        raise


def _finish_cancelled(db: str, job_id: str, message: str) -> None:
    with session_scope(db) as session:
        lifecycle.finish(session, queries.get_job(session=session, job_id=job_id), JobStatus.cancelled, message)


def _check_owner(db: str, adapter: str, tenant: str | None) -> None:
    """The job's owner must own the adapter before anything of the adapter is loaded.

    The API claims the adapter for the job's tenant when it accepts the job; this catches a
    registry that disagrees (a job recorded before claims existed, or a hand-edited row).
    """
    with session_scope(db) as session:
        row = queries.get_adapter(session=session, name=adapter)
    if row is not None and row.tenant != tenant:
        raise PermanentJobError(f"the adapter '{adapter}' is not owned by this job's tenant")


def _run_and_publish(ctx: WorkerContext, job_id: str, adapter: str, tenant: str | None,
                     reporter: JobReporter, workdir: Path) -> dict[str, Any]:
    from workers.seal import Cancelled, Document, Probe, learn_document
    from workers.seal.continual import gate_candidate

    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        documents = [Document(title=d.title, text=d.text, probes=[Probe(**p) for p in d.probes]) for d in job.documents]
        options = dict(job.options)
        accepted_at = job.created_at
        parent = _current_version(session, adapter)
    recipe = ctx.settings.recipe()  # read per job: a recipe `seal eval` wrote applies from the next job
    selfedit_cfg, train_cfg = LearnOptions.model_validate(options).to_inner_configs(recipe)
    gate_cfg, replay_cfg = _gate_config(ctx), _replay_config(ctx, recipe)
    parent_dir = ctx.store.localize(parent.path) if parent else None
    memory = load_memory(ctx, parent.path if parent else None)
    policy = resolve_policy_adapter(ctx, options, tenant=tenant)
    if policy is not None and options.get("format") is None:
        from workers.seal.restem import read_policy_format

        # A ReST-EM policy only helps in the prompt format it was trained on (and the default
        # "passage" format samples nothing, so the policy would be silently ignored).
        selfedit_cfg.format = read_policy_format(policy[1]) or selfedit_cfg.format
    seed = _seed(job_id)
    # What this job actually ran with: the model's recipe under the request's overrides.
    recipe_used = {"format": selfedit_cfg.format, "k": selfedit_cfg.k, "epochs": train_cfg.epochs, "lr": train_cfg.lr,
                   "rank": train_cfg.rank, "anchors": replay_cfg.anchors, "model": recipe.model}
    doc_results: list[dict[str, Any]] = []
    accepted_dir: str | None = None
    self_edits: list[str] = []

    for i, doc in enumerate(documents):
        reporter.document = (i, len(documents))
        base_dir = accepted_dir or parent_dir
        rebuild = not ctx.settings.warm_start and len(memory.sequences) <= replay_cfg.max_sequences
        # Rebuilding trains from the base weights on every earlier sequence; past the replay cap
        # only a warm start keeps what the replay sample leaves out.
        replay = list(memory.sequences) if rebuild else memory.replay(1, replay_cfg, seed=seed + i)
        anchors = _job_anchors(ctx, replay_cfg.anchors, seed=seed + i)
        try:
            result = learn_document(
                generator=ctx.generator, trainer=ctx.trainer, doc=doc, selfedit_cfg=selfedit_cfg,
                train_cfg=train_cfg, workdir=str(workdir / f"doc-{i}"), parent_adapter_dir=base_dir,
                warm_start=not rebuild,
                replay_sequences=replay + anchors, policy_adapter=policy, eval_generator=ctx.scorer,
                progress=reporter.progress, should_cancel=reporter.should_stop,
            )
        except Cancelled as exc:
            reporter.raise_if_stopping()
            raise JobCancelled() from exc
        reporter.raise_if_stopping()
        reporter.progress("evaluating", 1.0, "gating: earlier documents and the canary set", None)
        report = gate_candidate(
            scorer=ctx.scorer, candidate=(f"cand-{i}", result.best_adapter_dir),
            parent=("parent", base_dir) if base_dir else None, memory=memory, canary=default_canary(), cfg=gate_cfg,
            # A passage with nothing gradeable in it is judged on what it must not break, never
            # rejected for a lack of probes.
            new_before=result.accuracy_before if result.probes else None,
            new_after=result.accuracy_after if result.probes else None,
            new_predictions=result.candidates[result.best_index].predictions, seed=seed + i,
        )
        if reporter.cancel_requested(fresh=True):  # a cancel during evaluation wins over the verdict
            raise JobCancelled()
        doc_results.append(_document_metrics(doc.title, result, report, len(replay)))
        verdict = "accepted" if report.decision.accepted else "rejected"
        reporter.event(f"document {i + 1}: accuracy {result.accuracy_before:.0%} → {result.accuracy_after:.0%},"
                       f" gate {verdict}", data=doc_results[-1]["gate"], type_="metrics")
        if not report.decision.accepted:
            reasons = report.decision.reasons + _explain_probes(result.candidates[result.best_index].predictions)
            return _reject(ctx, job_id, adapter, tenant, parent, Path(result.best_adapter_dir), doc_results,
                           reasons, reporter.stage_totals(), extra={"recipe": recipe_used})
        accepted_dir = result.best_adapter_dir
        self_edits.append(result.self_edits[result.best_index])
        memory = memory.absorb(title=doc.title, probes=result.probes, sequences=result.new_sequences,
                               results=report.results)

    # Last exit before the point of no return: a cancel that arrived during evaluation stops here.
    if reporter.cancel_requested(fresh=True):
        raise JobCancelled()
    reporter.progress("publishing", 0.0, "publishing new version", None)
    metrics_out = {**_job_metrics(doc_results, reporter.stage_totals()), "recipe": recipe_used}
    version, path = publish_version(
        db_url=db, store=ctx.store, redis=ctx.redis, adapter=adapter, tenant=tenant, src_dir=Path(accepted_dir),
        job_id=job_id, metrics=metrics_out, parent_version=parent.version if parent else None, source="learn",
        since=accepted_at,
        metadata={"source": "learn", "base_model": ctx.settings.model_path, "options": options,
                  "documents": [{"title": d.title, "chars": len(d.text)} for d in documents],
                  "self_edits": [e[:4000] for e in self_edits], "stream": memory.to_dict()},
    )
    _finish_published(db, job_id, adapter, version, metrics_out)
    _maybe_schedule_consolidation(ctx, adapter, tenant, memory.since_consolidation)
    return {"status": "published", "version": version, "path": path}


def _consolidate(ctx: WorkerContext, job_id: str, adapter: str, tenant: str | None,
                 reporter: JobReporter, workdir: Path) -> dict[str, Any]:
    """Retrain the adapter from the base weights on its whole stream; same gate, new version."""
    from workers.seal import Cancelled
    from workers.seal.continual import consolidate

    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        options, accepted_at = dict(job.options), job.created_at
        parent = _current_version(session, adapter)
    if parent is None:
        raise LookupError(f"'{adapter}' has no published version to consolidate")
    memory = load_memory(ctx, parent.path)
    recipe = ctx.settings.recipe()
    _, train_cfg = LearnOptions.model_validate(options).to_inner_configs(recipe)
    reporter.progress("training", 0.0, f"retraining on {len(memory.sequences)} sequences from "
                      f"{len(memory.documents)} documents", None)
    try:
        result = consolidate(
            trainer=ctx.trainer, scorer=ctx.scorer, memory=memory, parent=("parent", ctx.store.localize(parent.path)),
            canary=default_canary(),
            train_cfg=train_cfg, gate_cfg=_gate_config(ctx), workdir=str(workdir),
            anchors=_job_anchors(ctx, ctx.settings.anchor_count(recipe), seed=_seed(job_id)),
            progress=reporter.progress, should_cancel=reporter.should_stop,
        )
    except Cancelled as exc:
        reporter.raise_if_stopping()
        raise JobCancelled() from exc
    reporter.raise_if_stopping()
    if reporter.cancel_requested(fresh=True):  # a cancel during the gate wins over its verdict
        raise JobCancelled()
    gate = result.report.to_dict()
    metrics_out = {"source": "consolidate", "documents": len(memory.documents), "sequences": result.sequences,
                   "train_loss": result.train_loss, "train_seconds": round(result.train_seconds, 2), "gate": gate,
                   "stage_seconds": {k: round(v, 2) for k, v in reporter.stage_totals().items()}}
    reporter.event(f"consolidation gate {'accepted' if gate['accepted'] else 'rejected'}", data=gate, type_="metrics")
    if not gate["accepted"]:
        return _reject(ctx, job_id, adapter, tenant, parent, Path(result.adapter_dir), [], gate["reasons"],
                       reporter.stage_totals(), extra=metrics_out)
    reporter.progress("publishing", 0.0, "publishing consolidated version", None)
    memory.results, memory.since_consolidation = result.report.results, 0
    version, path = publish_version(
        db_url=db, store=ctx.store, redis=ctx.redis, adapter=adapter, tenant=tenant,
        src_dir=Path(result.adapter_dir), job_id=job_id, metrics=metrics_out, parent_version=parent.version,
        source="consolidate", since=accepted_at,
        metadata={"source": "consolidate", "base_model": ctx.settings.model_path, "stream": memory.to_dict()},
    )
    _finish_published(db, job_id, adapter, version, metrics_out)
    return {"status": "published", "version": version, "path": path}


def _finish_published(db: str, job_id: str, adapter: str, version: int, metrics_out: dict[str, Any]) -> None:
    with session_scope(db) as session:
        lifecycle.publish(session, queries.get_job(session=session, job_id=job_id), version=version,
                          job_metrics=metrics_out, message=f"published {adapter}@v{version}")
    logger.info("job %s published %s@v%d", job_id, adapter, version)


def _maybe_schedule_consolidation(ctx: WorkerContext, adapter: str, tenant: str | None, absorbed: int) -> None:
    every = ctx.settings.consolidate_after_documents
    if not every or absorbed < every:
        return
    from app.learning import submit_consolidation

    with session_scope(ctx.settings.sqlalchemy_url) as session:
        job, created = submit_consolidation(session=session, redis=ctx.redis, settings=ctx.settings,
                                            adapter=adapter, tenant=tenant,
                                            reason=f"{absorbed} documents since the last consolidation")
    if created:
        logger.info("scheduled consolidation %s of %s after %d documents", job.id, adapter, absorbed)


def _gate_config(ctx: WorkerContext) -> GateConfig:
    from workers.seal.continual import GateConfig

    s = ctx.settings
    return GateConfig(old_margin=s.gate_old_margin, canary_margin=s.gate_canary_margin,
                      max_old_probes=s.gate_max_old_probes)


def _replay_config(ctx: WorkerContext, recipe: Recipe) -> ReplayConfig:
    from workers.seal.continual import ReplayConfig

    s = ctx.settings
    return ReplayConfig(ratio=s.replay_ratio, max_sequences=s.replay_max_sequences, anchors=s.anchor_count(recipe))


_anchor_cache: list[str] | None = None


def _anchors(ctx: WorkerContext) -> list[str]:
    """The base model's answers to general prompts, generated once per model (cached on disk)."""
    global _anchor_cache
    if _anchor_cache is None:
        import hashlib

        from workers.seal.continual import anchor_sequences

        model = ctx.settings.model_path
        cache = ctx.settings.data_dir / "anchors" / f"{hashlib.sha256(model.encode()).hexdigest()[:16]}.json"
        _anchor_cache = anchor_sequences(ctx.generator, ctx.trainer.render_chat, cache_file=str(cache), model_id=model)
    return _anchor_cache


def _job_anchors(ctx: WorkerContext, n: int, *, seed: int) -> list[str]:
    """`n` anchors for one training run; with anchors off the set is never generated."""
    from workers.seal.continual import sample_anchors

    return sample_anchors(_anchors(ctx), n, seed=seed) if n > 0 else []


def warm_up(ctx: WorkerContext) -> None:
    """Build what every learn needs once per process (the anchor set, the base model's canary answers)
    before taking a job, so the first job's latency is its own work, not the worker's start."""
    from workers.seal.continual import base_canary

    if ctx.settings.anchor_count(ctx.settings.recipe()) > 0:
        _anchors(ctx)
    if ctx.settings.gate_canary_margin < 1:
        base_canary(ctx.scorer, default_canary())


def load_memory(ctx: WorkerContext, version_dir: str | None) -> StreamMemory:
    from workers.seal.continual import StreamMemory

    if version_dir is None:
        return StreamMemory()
    meta = ctx.store.read_metadata(version_dir)
    if "stream" not in meta and meta.get("replay_pool"):  # versions published before the stream memory existed
        return StreamMemory(sequences=list(meta["replay_pool"]))
    return StreamMemory.from_dict(meta.get("stream"))


def resolve_policy_adapter(ctx: WorkerContext, options: dict[str, Any], *, tenant: str | None = None) -> Any:
    """The adapter that writes self-edits: the request's, else SEAL_POLICY, else the base model.

    A request names an adapter key, which the API already checked; it is checked again here,
    against the job's tenant and the operator's list, because the job row is all the worker
    trusts. Only the operator's SEAL_POLICY may name a directory.
    """
    requested = options.get("policy")
    name = requested or ctx.settings.policy
    if not name:
        return None
    if not requested and Path(name).is_absolute() and Path(name).is_dir():
        return (f"policy-{Path(name).name}", name)
    with session_scope(ctx.settings.sqlalchemy_url) as session:
        row = queries.get_adapter(session=session, name=name)
        current = queries.current_version(session=session, name=name)
        allowed = not requested or name in ctx.settings.policies or (row is not None and row.tenant == tenant)
        if current is None or not allowed or is_kb(row):
            raise PermanentJobError(f"policy adapter '{name}' has no published version this job may use")
        return (f"{name}@v{current.version}", ctx.store.localize(current.path))


def _seed(job_id: str) -> int:
    # Stable across retries and processes (str hash() is salted per process).
    return int(job_id.replace("-", "")[:8], 16) if job_id else 0


def _current_version(session: Any, adapter: str) -> VersionRef | None:
    version = queries.current_version(session=session, name=adapter)
    return VersionRef(version.version, version.path) if version else None


def _document_metrics(title: str | None, result: Any, report: Any, replayed: int) -> dict[str, Any]:
    return {
        "title": title, "accuracy_before": result.accuracy_before, "accuracy_after": result.accuracy_after,
        "f1_before": result.f1_before, "f1_after": result.f1_after, "train_loss": result.train_loss,
        "probes": len(result.probes), "self_generated_probes": result.probes_self_generated,
        "replayed_sequences": replayed, "new_sequences": len(result.new_sequences),
        "candidates": [{"index": c.index, "recipe": c.recipe, "accuracy": c.accuracy, "f1": c.f1,
                        "train_loss": c.train_loss, "train_seconds": round(c.train_seconds, 2),
                        "sequences": c.num_sequences}
                       for c in result.candidates],
        "best_candidate": result.best_index,
        "gate": report.to_dict(),
        # Every probe with the parent's and the published candidate's answer: why it published or not.
        "predictions": list(result.candidates[result.best_index].predictions)[:32],
        "probe_source": result.probe_record.get("source"),
        "probe_checks": list(result.probe_record.get("questions", []))[:16],
        "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()},
    }


def _explain_probes(predictions: list[dict[str, Any]], limit: int = 4) -> list[str]:
    """The probes a rejected candidate missed, with what it answered, for the job's error."""
    missed = [p for p in predictions if not p.get("correct")][:limit]
    return [f"asked {p['question']!r}, expected {p['answer']!r}, answered {p['prediction'][:80]!r}" for p in missed]


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


def _reject(ctx: WorkerContext, job_id: str, adapter: str, tenant: str | None, parent: VersionRef | None,
            candidate_dir: Path, doc_results: list[dict[str, Any]], reasons: list[str],
            stage_seconds: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keep serving the current version; record the candidate as a `rejected` version for inspection."""
    db = ctx.settings.sqlalchemy_url
    job_metrics = {**(_job_metrics(doc_results, stage_seconds) if doc_results else {}), **(extra or {}),
                   "rejected_because": reasons}
    version = record_rejected(db_url=db, store=ctx.store, adapter=adapter, tenant=tenant, src_dir=candidate_dir,
                              job_id=job_id, metrics=job_metrics, parent_version=parent.version if parent else None,
                              source=(extra or {}).get("source", "learn"))
    with session_scope(db) as session:
        error = "; ".join(reasons)
        lifecycle.reject(session, queries.get_job(session=session, job_id=job_id),
                         job_metrics={**job_metrics, "rejected_version": version}, error=error,
                         message=f"rejected by the gate: {error}")
    return {"status": "rejected", "reasons": reasons, "version": version}


def _requeue_interrupted(db: str, job_id: str) -> None:
    """A shutdown is not a failure: give the attempt back, so RQ's retry hands the job to another worker."""
    rq_job = get_current_job()
    if rq_job is not None:
        rq_job.retries_left = (rq_job.retries_left or 0) + 1
    with session_scope(db) as session:
        lifecycle.requeue(session, queries.get_job(session=session, job_id=job_id),
                          "worker shutting down: job handed back to the queue", give_back_attempt=True)
    logger.warning("learn job %s interrupted by shutdown; requeued", job_id)


def _record_failure(db: str, job_id: str, exc: Exception) -> None:
    """Retry while RQ has attempts left; mark the job failed on the last one, or at once when
    no retry can help (a deterministic failure would only take a worker three more times)."""
    rq_job = get_current_job()
    # ValueError is how the inner loop and vLLM refuse an input (a prompt past the context window, a
    # malformed adapter): the same input fails the same way on every attempt.
    permanent = isinstance(exc, (PermanentJobError, AdapterOwnedElsewhere, ValueError))
    if permanent and rq_job is not None:
        rq_job.retries_left = 0
    retries_left = (rq_job.retries_left or 0) if rq_job is not None else 0
    message = f"{type(exc).__name__}: {exc}"[:500]
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if retries_left > 0:
            lifecycle.requeue(session, job, f"attempt failed ({message}); retrying")
        else:
            lifecycle.fail(session, job, message)
            adapter = job.adapter
    if retries_left <= 0:
        _documents_changed(adapter)
    logger.exception("learn job %s failed", job_id)


def _documents_changed(adapter: str) -> None:
    """A knowledge base answers a failed job's documents in context: tell every API process."""
    from app.events import AdapterEvent, publish_event
    from workers.main import get_context

    publish_event(get_context().redis, AdapterEvent("documents", adapter))  # never raises: a hint


def default_canary() -> list[Any]:
    from workers.seal.continual import load_canary

    global _canary
    if _canary is None:
        _canary = load_canary()
    return _canary


_canary: list[Any] | None = None


