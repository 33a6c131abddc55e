"""A learn or consolidate job into a single-stream adapter (`layout: stream`): one LoRA retrained on
every document it absorbed, under the forgetting gate, published as the adapter's next version.
Every state change of the job goes through app.registry.lifecycle."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.api.learn_schemas import LearnOptions
from app.knowledge.shards import is_kb
from app.publishing import AdapterMoved, publish_version, record_rejected
from app.registry import lifecycle, queries
from app.registry.db import session_scope
from workers.job_control import JobCancelled, JobReporter, PermanentJobError, adapter_lock
from workers.learn_core import (
    MAX_PARENT_MOVES,
    check_owner,
    default_canary,
    document_metrics,
    explain_probes,
    gate_config,
    job_anchors,
    job_metrics,
    job_seed,
    replay_config,
)
from workers.main import WorkerContext

if TYPE_CHECKING:  # the worker imports these lazily: workers.seal pulls in torch
    from workers.seal.continual import StreamMemory

logger = logging.getLogger(__name__)


def run_stream_job(ctx: WorkerContext, job_id: str, adapter: str, tenant: str | None, reporter: JobReporter,
                   *, consolidation: bool) -> dict[str, Any]:
    """Learn into (or consolidate) the stream under its lock, training again on top of whatever it
    serves if a rollback or another publish moves it meanwhile."""
    run = _consolidate if consolidation else _run_and_publish
    with adapter_lock(ctx.redis, adapter, reporter):
        reporter.start()
        moves = 0
        while True:
            check_owner(ctx.settings.sqlalchemy_url, adapter, tenant)
            workdir = Path(tempfile.mkdtemp(prefix=f"{run.__name__.strip('_')}-{job_id}-", dir=ctx.settings.data_dir))
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


@dataclass(frozen=True)
class VersionRef:
    """A published version of an adapter: its number and where its files are."""

    version: int
    path: str


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
    gate_cfg, replay_cfg = gate_config(ctx), replay_config(ctx, recipe)
    parent_dir = ctx.store.localize(parent.path) if parent else None
    memory = load_memory(ctx, parent.path if parent else None)
    policy = resolve_policy_adapter(ctx, options, tenant=tenant)
    if policy is not None and options.get("format") is None:
        from workers.seal.restem import read_policy_format

        # A ReST-EM policy only helps in the prompt format it was trained on (and the default
        # "passage" format samples nothing, so the policy would be silently ignored).
        selfedit_cfg.format = read_policy_format(policy[1]) or selfedit_cfg.format
    seed = job_seed(job_id, options)
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
        anchors = job_anchors(ctx, replay_cfg.anchors, seed=seed + i)
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
        doc_results.append(document_metrics(doc.title, result, report, len(replay)))
        verdict = "accepted" if report.decision.accepted else "rejected"
        reporter.event(f"document {i + 1}: accuracy {result.accuracy_before:.0%} → {result.accuracy_after:.0%},"
                       f" gate {verdict}", data=doc_results[-1]["gate"], type_="metrics")
        if not report.decision.accepted:
            reasons = report.decision.reasons + explain_probes(result.candidates[result.best_index].predictions)
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
    metrics_out = {**job_metrics(doc_results, reporter.stage_totals()), "recipe": recipe_used}
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
            train_cfg=train_cfg, gate_cfg=gate_config(ctx), workdir=str(workdir),
            anchors=job_anchors(ctx, ctx.settings.anchor_count(recipe), seed=job_seed(job_id, options)),
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


def _current_version(session: Any, adapter: str) -> VersionRef | None:
    version = queries.current_version(session=session, name=adapter)
    return VersionRef(version.version, version.path) if version else None


def _reject(ctx: WorkerContext, job_id: str, adapter: str, tenant: str | None, parent: VersionRef | None,
            candidate_dir: Path, doc_results: list[dict[str, Any]], reasons: list[str],
            stage_seconds: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keep serving the current version; record the candidate as a `rejected` version for inspection."""
    db = ctx.settings.sqlalchemy_url
    metrics = {**(job_metrics(doc_results, stage_seconds) if doc_results else {}), **(extra or {}),
               "rejected_because": reasons}
    version = record_rejected(db_url=db, store=ctx.store, adapter=adapter, tenant=tenant, src_dir=candidate_dir,
                              job_id=job_id, metrics=metrics, parent_version=parent.version if parent else None,
                              source=(extra or {}).get("source", "learn"))
    with session_scope(db) as session:
        error = "; ".join(reasons)
        lifecycle.reject(session, queries.get_job(session=session, job_id=job_id),
                         job_metrics={**metrics, "rejected_version": version}, error=error,
                         message=f"rejected by the gate: {error}")
    return {"status": "rejected", "reasons": reasons, "version": version}
