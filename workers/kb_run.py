"""One learn job into a knowledge base: each of its documents retrains the shard it was assigned
(app/knowledge/shards.py) from the base weights on that shard's <= K documents, is gated at the
shard and through the router, and is published as a new knowledge-base version holding the new
shard version. Only the shard's own lock is held, so learns into other shards of the same
knowledge base run in parallel on other workers. Every state change of the job goes through
app.registry.lifecycle."""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.api.learn_schemas import LearnOptions
from app.events import AdapterEvent, publish_event
from app.knowledge.router import IndexedDocument, LexicalRouter, RouteDecision
from app.knowledge.shards import (
    KbDocument,
    kb_documents,
    kb_version,
    reads_better,
    shard_documents,
    shard_label,
)
from app.publishing import AdapterMoved, publish_shard, record_rejected, shard_version_job
from app.registry import lifecycle, queries
from app.registry.db import session_scope
from app.registry.models import DocumentState, JobStatus
from workers.job_control import JobCancelled, JobReporter, adapter_lock
from workers.learn_core import (
    MAX_PARENT_MOVES,
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

logger = logging.getLogger(__name__)


@dataclass
class NewDocument:
    id: int
    title: str | None
    text: str
    probes: list[dict[str, str]]
    shard: str


@dataclass
class ShardOutcome:
    shard: str
    accepted: bool
    kb_version: int | None
    shard_version: int | None
    documents: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def run_kb_job(ctx: WorkerContext, job_id: str, kb: str, tenant: str | None, reporter: JobReporter) -> dict[str, Any]:
    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        docs = [NewDocument(d.id, d.title, d.text, list(d.probes or []), d.shard) for d in job.documents]
    reporter.start()
    shards = list(dict.fromkeys(d.shard for d in docs))
    outcomes: list[ShardOutcome] = []
    for shard in shards:
        mine = [d for d in docs if d.shard == shard]
        with adapter_lock(ctx.redis, shard, reporter):
            moves = 0
            while True:
                workdir = Path(tempfile.mkdtemp(prefix=f"kb-{job_id}-", dir=ctx.settings.data_dir))
                try:
                    outcomes.append(_train_shard(ctx, job_id, kb, tenant, shard, mine, reporter, workdir))
                    break
                except AdapterMoved as moved:
                    moves += 1
                    if moved.retired or moves > MAX_PARENT_MOVES:
                        raise
                    reporter.event(f"{shard_label(shard)} of {kb} changed while this job trained (a rollback or "
                                   "another learn); training it again on what the knowledge base serves now",
                                   level="warning")
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
    recipe = ctx.settings.recipe().for_shards()
    with session_scope(db) as session:
        options = dict(queries.get_job(session=session, job_id=job_id).options)
    selfedit_cfg, train_cfg = LearnOptions.model_validate(options).to_inner_configs(recipe)
    recipe_used = {"format": selfedit_cfg.format, "k": selfedit_cfg.k, "epochs": train_cfg.epochs, "lr": train_cfg.lr,
                   "rank": train_cfg.rank, "anchors": ctx.settings.anchor_count(recipe), "model": recipe.model,
                   "shard_documents": recipe.shard_documents, "second_recipe": recipe.second_recipe,
                   **({"distill_questions": selfedit_cfg.distill_questions, "distill_checked": selfedit_cfg.distill_checked,
                       "distill_clauses": selfedit_cfg.distill_clauses,
                       "distill_prefixes": selfedit_cfg.distill_prefixes,
                       "distill_answer_tokens": selfedit_cfg.distill_answer_tokens}
                      if selfedit_cfg.format == "distill" else {})}
    return _finish(ctx, job_id, kb, tenant, outcomes, reporter, recipe_used)


def _train_shard(ctx: WorkerContext, job_id: str, kb: str, tenant: str | None, shard: str, new: list[NewDocument],
                 reporter: JobReporter, workdir: Path) -> ShardOutcome:
    from workers.seal import Cancelled, Document, Probe, learn_document
    from workers.seal.continual import StreamMemory, gate_candidate

    db = ctx.settings.sqlalchemy_url
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        options = dict(job.options)
        current = kb_version(session, kb)
        parent = current.shards.get(shard)
        companions = [(d.id, d.title, dict(d.memory or {})) for d in shard_documents(session, shard, current)]
        others = kb_documents(session, kb, current)
        mine = {c[0] for c in companions}
        other_memory = {d.id: dict(d.memory or {}) for d in _learned_rows(session, others) if d.id not in mine}
    if parent is not None and {d.id for d in new} <= set(parent.document_ids):
        # A retry of a job that published this shard and died before finishing: nothing to train.
        return ShardOutcome(shard, True, current.version, parent.version)
    recipe = ctx.settings.recipe().for_shards()
    selfedit_cfg, train_cfg = LearnOptions.model_validate(options).to_inner_configs(recipe)
    gate_cfg, replay_cfg = gate_config(ctx), replay_config(ctx, recipe)
    seed = job_seed(job_id, options)
    parent_dir = ctx.store.localize(parent.path) if parent else None
    # A shard is retrained from the base weights on its own documents only: O(K), never O(N).
    sequences = [s for _, _, memory in companions for s in memory.get("sequences", [])]
    results: dict[str, bool] = {}
    for _, _, memory in companions:
        results.update(memory.get("results", {}))
    earlier_probes = [p for _, _, memory in companions for p in memory.get("probes", [])]
    doc_results: list[dict[str, Any]] = []
    learned: list[tuple[NewDocument, Any]] = []
    candidate_dir: str | None = None
    report = None
    for i, doc in enumerate(new):
        reporter.document = (i, len(new))
        try:
            result = learn_document(
                generator=ctx.generator, trainer=ctx.trainer,
                doc=Document(title=doc.title, text=doc.text, probes=[Probe(**p) for p in doc.probes]),
                selfedit_cfg=selfedit_cfg, train_cfg=train_cfg, workdir=str(workdir / f"doc-{i}"),
                parent_adapter_dir=parent_dir, warm_start=False,
                replay_sequences=sequences + job_anchors(ctx, replay_cfg.anchors, seed=seed + i),
                eval_generator=ctx.scorer, progress=reporter.progress, should_cancel=reporter.should_stop,
                measure_reading=True, second_recipe=recipe.second_recipe,
            )
        except Cancelled as exc:
            reporter.raise_if_stopping()
            raise JobCancelled() from exc
        reporter.raise_if_stopping()
        reporter.progress("evaluating", 1.0, "gating: the shard's documents, routed earlier documents, the canary",
                          None)
        in_shard = {c[0] for c in companions} | {d.id for d, _ in learned} | {doc.id}
        router = _router_after(ctx, others, new_ids=in_shard, shard=shard, new_docs=[*(d for d, _ in learned), doc],
                               new_probes={doc.id: [p.question for p in result.probes]})

        def routes_here(question: str, _router: LexicalRouter = router, _ids: set[int] = in_shard) -> bool:
            return _answered_by(_router.route(question), _ids)

        affected, unrouted = _earlier_probes(earlier_probes, results, other_memory, routes_here,
                                             gate_cfg.max_old_probes, seed=seed + i)
        memory = StreamMemory(probes=affected, results=results)
        candidate = result.best_adapter_dir
        gate_started = time.perf_counter()
        report = gate_candidate(
            scorer=ctx.scorer, candidate=(f"cand-{i}", candidate),
            parent=("parent", parent_dir) if parent_dir else None, memory=memory, canary=default_canary(),
            cfg=gate_cfg, new_before=result.accuracy_before if result.probes else None,
            new_after=result.accuracy_after if result.probes else None,
            new_predictions=result.candidates[result.best_index].predictions, seed=seed + i,
            old_unrouted=unrouted, canary_through=lambda p: routes_here(p.question),
        )
        if reporter.cancel_requested(fresh=True):
            raise JobCancelled()
        metrics = document_metrics(doc.title, result, report, len(sequences))
        metrics["stage_seconds"]["gate"] = round(time.perf_counter() - gate_started, 2)
        metrics["shard"] = shard_label(shard)
        metrics["answers_from"] = _answers_from(result, ctx.settings.weights_margin)
        metrics["routed_probes"] = sum(routes_here(p.question) for p in result.probes)
        doc_results.append(metrics)
        verdict = "accepted" if report.decision.accepted else "rejected"
        reading = "" if result.accuracy_context is None else f" (read in context: {result.accuracy_context:.0%})"
        reporter.event(f"document {i + 1} into {shard_label(shard)}: accuracy {result.accuracy_before:.0%} → "
                       f"{result.accuracy_after:.0%}{reading}, gate {verdict}", data=metrics["gate"], type_="metrics")
        if not report.decision.accepted:
            reasons = report.decision.reasons + explain_probes(result.candidates[result.best_index].predictions)
            return _reject_shard(ctx, job_id, shard, tenant, parent.version if parent else None, Path(candidate),
                                 new, doc_results, reasons)
        results = {**results, **report.results}  # what was not asked keeps its cached verdict
        sequences = sequences + list(result.new_sequences)
        earlier_probes += [{"question": p.question, "answer": p.answer} for p in result.probes]
        learned.append((doc, result))
        candidate_dir = candidate

    if reporter.cancel_requested(fresh=True):
        raise JobCancelled()
    reporter.progress("publishing", 0.0, f"publishing {shard_label(shard)} and a new version of the knowledge base",
                      None)
    document_ids = [c[0] for c in companions] + [d.id for d, _ in learned]
    publish_started = time.perf_counter()
    kb_number, shard_number = publish_shard(
        db_url=db, store=ctx.store, redis=ctx.redis, kb=kb, shard=shard, tenant=tenant, src_dir=Path(candidate_dir),
        job_id=job_id, parent_version=parent.version if parent else None, document_ids=document_ids,
        metrics={"documents": [{k: m[k] for k in ("title", "accuracy_before", "accuracy_after", "f1_after",
                                                  "accuracy_context", "f1_context", "answers_from")}
                               for m in doc_results]},
        metadata={"source": "learn", "kind": "shard", "knowledge_base": kb, "base_model": ctx.settings.model_path},
    )
    _record_learned(db, learned, results, companions)
    for m in doc_results:
        m["stage_seconds"]["publish"] = round(time.perf_counter() - publish_started, 2)
    return ShardOutcome(shard, True, kb_number, shard_number, doc_results)


def _answers_from(result: Any, margin: float) -> str:
    """What serves the document once published (app/knowledge/catalog.route_request decides the same
    from the registry): its weights, or the base model reading it where the weights answered worse
    or were graded on cloze alone."""
    source = result.probe_record.get("source")
    return "context" if reads_better(result.accuracy_after, result.accuracy_context, margin, source) else "weights"


def _learned_rows(session: Any, docs: list[KbDocument]) -> list[Any]:
    from sqlalchemy import select

    from app.registry.models import Document as DocumentRow

    ids = [d.id for d in docs if d.state == DocumentState.learned]
    return list(session.scalars(select(DocumentRow).where(DocumentRow.id.in_(ids)))) if ids else []


def _router_after(ctx: WorkerContext, others: list[KbDocument], *, new_ids: set[int], shard: str,
                  new_docs: list[NewDocument], new_probes: dict[int, list[str]]) -> LexicalRouter:
    """The router as it will be once this shard publishes: what the serving API will route with."""
    indexed = [IndexedDocument(doc_id=d.id, shard=shard if d.id in new_ids else (d.shard.shard if d.shard else None),
                               title=d.title, text=d.text, probes=d.probes,
                               state=DocumentState.learned if d.id in new_ids else d.state)
               for d in others if d.id not in {n.id for n in new_docs}]
    indexed += [IndexedDocument(doc_id=d.id, shard=shard, title=d.title, text=d.text,
                                probes=tuple(new_probes.get(d.id, ())), state=DocumentState.learned)
                for d in new_docs]
    return LexicalRouter(indexed, config=ctx.settings.router_config())


def _answered_by(decision: RouteDecision, shard_documents: set[int]) -> bool:
    """Whether the serving API answers a question routed so with the shard of these documents (an
    unsure route is answered by the base model with the document in the prompt, not by the shard)."""
    return decision.document is not None and decision.sure and decision.document.doc_id in shard_documents


def _earlier_probes(shard_probes: list[dict[str, str]], shard_results: dict[str, bool],
                    other_memory: dict[int, dict[str, Any]], routes_here: Any, limit: int,
                    *, seed: int) -> tuple[list[dict[str, str]], list[bool]]:
    """A fixed-seed sample of every earlier document's probes, split into the ones the router sends
    to this shard (asked of the candidate) and the cached verdicts of the ones it sends elsewhere."""
    from workers.seal.continual import probe_key

    pool = [(p, shard_results.get(probe_key(p["question"], p["answer"]), False)) for p in shard_probes]
    for memory in other_memory.values():
        cached = memory.get("results", {})
        pool += [(p, cached.get(probe_key(p["question"], p["answer"]), False)) for p in memory.get("probes", [])]
    if len(pool) > limit:
        pool = random.Random(seed).sample(pool, limit)
    affected = [p for p, _ in pool if routes_here(p["question"])]
    unrouted = [bool(cached) for p, cached in pool if not routes_here(p["question"])]
    return affected, unrouted


def _record_learned(db: str, learned: list[tuple[NewDocument, Any]], results: dict[str, bool],
                    companions: list[tuple[int, str | None, dict[str, Any]]]) -> None:
    """The documents' memory in the registry: what the shard's next retrain and the gate read back."""
    from app.registry.models import Document as DocumentRow
    from workers.seal.continual import probe_key

    with session_scope(db) as session:
        for doc, result in learned:
            row = session.get(DocumentRow, doc.id)
            probes = [{"question": p.question, "answer": p.answer} for p in result.probes]
            row.state = DocumentState.learned
            row.accuracy_weights, row.accuracy_context = result.accuracy_after, result.accuracy_context
            row.probe_source = result.probe_record.get("source")
            row.memory = {"probes": probes, "sequences": list(result.new_sequences),
                          "results": {k: v for p in probes if (k := probe_key(p["question"], p["answer"])) in results
                                      for v in [results[k]]}}
        for doc_id, _, memory in companions:
            row = session.get(DocumentRow, doc_id)
            keys = {probe_key(p["question"], p["answer"]) for p in memory.get("probes", [])}
            row.memory = {**memory, "results": {k: results[k] for k in keys if k in results}}


def _reject_shard(ctx: WorkerContext, job_id: str, shard: str, tenant: str | None, parent_version: int | None,
                  candidate_dir: Path, new: list[NewDocument], doc_results: list[dict[str, Any]],
                  reasons: list[str]) -> ShardOutcome:
    """The shard keeps serving what it served; the candidate is kept as a rejected version, and the
    job's documents are answered in context from now on (accepted knowledge is never dropped)."""
    from app.registry.models import Document as DocumentRow

    db = ctx.settings.sqlalchemy_url
    record_rejected(db_url=db, store=ctx.store, adapter=shard, tenant=tenant, src_dir=candidate_dir,
                    job_id=shard_version_job(job_id, shard), parent_version=parent_version,
                    metrics={"documents": [m["title"] for m in doc_results], "rejected_because": reasons,
                             "job_id": job_id})
    with session_scope(db) as session:
        for doc in new:
            row = session.get(DocumentRow, doc.id)
            row.state = DocumentState.context
    return ShardOutcome(shard, False, None, None, doc_results, reasons)


def _finish(ctx: WorkerContext, job_id: str, kb: str, tenant: str | None, outcomes: list[ShardOutcome],
            reporter: JobReporter, recipe_used: dict[str, Any]) -> dict[str, Any]:
    """Documents are learned independently: a rejected one does not hold back the others, but the
    job is `published` only when every one of its documents was."""
    db = ctx.settings.sqlalchemy_url
    doc_results = [m for o in outcomes for m in o.documents]
    published = [o for o in outcomes if o.accepted]
    metrics = {**(job_metrics(doc_results, reporter.stage_totals()) if doc_results else {}), "recipe": recipe_used,
               "shards": [{"shard": shard_label(o.shard), "accepted": o.accepted, "version": o.shard_version,
                           "kb_version": o.kb_version} for o in outcomes]}
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if len(published) == len(outcomes):
            version = published[-1].kb_version
            lifecycle.publish(session, job, version=version, job_metrics=metrics, message=f"published {kb}@v{version}")
            logger.info("job %s published %s@v%d", job_id, kb, version)
            result: dict[str, Any] = {"status": "published", "version": version}
        else:
            result = {}
    if result:
        _maybe_schedule_repack(ctx, kb, tenant)
        return result
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        reasons = [r for o in outcomes if not o.accepted for r in o.reasons]
        error = "; ".join(reasons)
        if published:
            # A long document's passages: say what was learned before why the rest was not, or a user
            # reads "rejected" as "nothing learned". The job's version is the last kb version it published.
            error = (f"{len(published)} of {len(outcomes)} shards were learned and are served "
                     f"({', '.join(shard_label(o.shard) for o in published)}); the rest are read in context: {error}")
            job.version = published[-1].kb_version
        lifecycle.reject(session, job, job_metrics={**metrics, "rejected_because": reasons}, error=error,
                         message=f"rejected by the gate: {error}")
    publish_event(ctx.redis, AdapterEvent("documents", kb))  # its documents are answered in context now
    return {"status": "rejected", "reasons": reasons}


def _maybe_schedule_repack(ctx: WorkerContext, kb: str, tenant: str | None) -> None:
    """SEAL_CONSOLIDATE_EVERY=N documents: queue a re-pack once N learns have published since the last."""
    from app.knowledge.shards import learns_since_repack
    from app.learning import submit_consolidation

    every = ctx.settings.consolidate_after_documents
    if not every:
        return
    with session_scope(ctx.settings.sqlalchemy_url) as session:
        due = learns_since_repack(session, queries.get_adapter(session=session, name=kb))
        if due >= every:
            submit_consolidation(session=session, redis=ctx.redis, settings=ctx.settings, adapter=kb, tenant=tenant,
                                 reason=f"{due} learns since the last re-pack")


def run_kb_repack(ctx: WorkerContext, job_id: str, kb: str, tenant: str | None,
                  reporter: JobReporter) -> dict[str, Any]:
    """Consolidation of a knowledge base: re-pack related documents into shared shards
    (app/knowledge/packing.py), retrain only the shards whose documents change, gate each one, and
    publish the new shard set as one knowledge-base version."""
    reporter.start()
    with adapter_lock(ctx.redis, kb, reporter):  # one re-pack of a kb at a time; learns lock only shards
        moves = 0
        while True:
            workdir = Path(tempfile.mkdtemp(prefix=f"repack-{job_id}-", dir=ctx.settings.data_dir))
            try:
                return _repack(ctx, job_id, kb, tenant, reporter, workdir)
            except AdapterMoved as moved:
                moves += 1
                if moved.retired or moves > MAX_PARENT_MOVES:
                    raise
                reporter.event(f"{kb} changed while re-packing; planning the re-pack again", level="warning")
            finally:
                shutil.rmtree(workdir, ignore_errors=True)


def _repack(ctx: WorkerContext, job_id: str, kb: str, tenant: str | None, reporter: JobReporter,
            workdir: Path) -> dict[str, Any]:
    from sqlalchemy import select

    from app.knowledge.packing import PackItem, pack
    from app.knowledge.shards import open_shard
    from app.publishing import publish_shard_set
    from app.registry.models import Document as DocumentRow
    from workers.seal import Cancelled
    from workers.seal.continual import StreamMemory, consolidate

    db = ctx.settings.sqlalchemy_url
    recipe = ctx.settings.recipe().for_shards()
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        options = dict(job.options)
        current = kb_version(session, kb)
        ids = sorted({i for ref in current.shards.values() for i in ref.document_ids})
        rows = list(session.scalars(select(DocumentRow).where(DocumentRow.id.in_(ids)))) if ids else []
        docs = {r.id: (r.title, r.text, dict(r.memory or {})) for r in rows}
        others = kb_documents(session, kb, current)
    groups = pack([PackItem(i, t, x) for i, (t, x, _) in docs.items()], recipe.shard_documents)
    held = {tuple(sorted(ref.document_ids)): ref.shard for ref in current.shards.values()}
    changed = [g for g in groups if tuple(g) not in held]
    if not changed:
        return _finish_repack(db, job_id, kb, current.version, {"changed_shards": 0, "shards": len(held)},
                              "every shard already holds related documents: nothing to re-pack")
    with session_scope(db) as session:
        kb_row = queries.get_adapter(session=session, name=kb)
        new_shards = [open_shard(session, kb_row).name for _ in changed]
    keep = {tuple(g) for g in groups}
    dropped = [shard for docset, shard in held.items() if docset not in keep]
    shard_of = {i: held[tuple(g)] for g in groups if tuple(g) in held for i in g}
    shard_of |= {i: shard for g, shard in zip(changed, new_shards, strict=True) for i in g}
    indexed = [IndexedDocument(doc_id=d.id, shard=shard_of.get(d.id), title=d.title, text=d.text, probes=d.probes,
                               state=d.state) for d in others]
    router = LexicalRouter(indexed, config=ctx.settings.router_config())
    _, train_cfg = LearnOptions.model_validate(options).to_inner_configs(recipe)
    gate_cfg = gate_config(ctx)
    trained: dict[str, tuple[Path, list[int]]] = {}
    reports: list[dict[str, Any]] = []
    for n, (group, shard) in enumerate(zip(changed, new_shards, strict=True)):
        members = set(group)

        def routes_here(question: str, _members: set[int] = members) -> bool:
            return _answered_by(router.route(question), _members)

        probes = [p for i in group for p in docs[i][2].get("probes", [])]
        results = {k: v for i in group for k, v in docs[i][2].get("results", {}).items()}
        affected = [p for p in probes if routes_here(p["question"])]
        reporter.progress("training", n / len(changed), f"re-packing {len(group)} documents into "
                          f"{shard_label(shard)}", None)
        try:
            result = consolidate(
                trainer=ctx.trainer, scorer=ctx.scorer,
                memory=StreamMemory(sequences=[s for i in group for s in docs[i][2].get("sequences", [])],
                                    probes=affected, results=results),
                parent=None, canary=default_canary(), train_cfg=train_cfg, gate_cfg=gate_cfg,
                workdir=str(workdir / shard_label(shard)),
                anchors=job_anchors(ctx, ctx.settings.anchor_count(recipe), seed=job_seed(job_id, options) + n),
                should_cancel=reporter.should_stop, canary_through=lambda p: routes_here(p.question),
            )
        except Cancelled as exc:
            reporter.raise_if_stopping()
            raise JobCancelled() from exc
        reporter.raise_if_stopping()
        gate = result.report.to_dict()
        reports.append({"shard": shard_label(shard), "documents": group, "train_loss": result.train_loss,
                        "train_seconds": round(result.train_seconds, 2), "gate": gate})
        if not gate["accepted"]:
            record_rejected(db_url=db, store=ctx.store, adapter=shard, tenant=tenant, src_dir=Path(result.adapter_dir),
                            job_id=shard_version_job(job_id, shard), parent_version=None, source="consolidate",
                            metrics={"documents": group, "rejected_because": gate["reasons"], "job_id": job_id})
            with session_scope(db) as session:
                lifecycle.reject(session, queries.get_job(session=session, job_id=job_id),
                                 job_metrics={"source": "consolidate", "shards": reports},
                                 error="; ".join(gate["reasons"]),
                                 message=f"re-pack rejected by the gate at {shard_label(shard)}")
            return {"status": "rejected", "reasons": gate["reasons"]}
        trained[shard] = (Path(result.adapter_dir), group)
    if reporter.cancel_requested(fresh=True):
        raise JobCancelled()
    reporter.progress("publishing", 0.0, f"publishing {len(trained)} re-packed shards", None)
    metrics = {"source": "consolidate", "changed_shards": len(trained), "dropped_shards": len(dropped),
               "shards": reports, "stage_seconds": {k: round(v, 2) for k, v in reporter.stage_totals().items()}}
    version = publish_shard_set(
        db_url=db, store=ctx.store, redis=ctx.redis, kb=kb, tenant=tenant, job_id=job_id, trained=trained,
        expected={ref.shard: ref.version for ref in current.shards.values()}, dropped=dropped, metrics=metrics)
    with session_scope(db) as session:
        for shard, (_, group) in trained.items():
            for i in group:
                session.get(DocumentRow, i).shard = shard
    return _finish_repack(db, job_id, kb, version, metrics, f"re-packed {kb}@v{version}")


def _finish_repack(db: str, job_id: str, kb: str, version: int | None, metrics: dict[str, Any],
                   message: str) -> dict[str, Any]:
    with session_scope(db) as session:
        job = queries.get_job(session=session, job_id=job_id)
        if version is None:
            lifecycle.finish(session, job, JobStatus.cancelled, f"{kb} has learned nothing yet: {message}")
            return {"status": "cancelled"}
        lifecycle.publish(session, job, version=version, job_metrics=metrics, message=message)
    return {"status": "published", "version": version}
