"""The steps every learn job shares, whichever layout it learns into (a single stream,
workers/stream_run.py, or a knowledge base's shards, workers/kb_run.py): the gate's and replay's
settings, the anchor set, the canary, the job's seed, and the metrics a job records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.registry import queries
from app.registry.db import session_scope
from workers.job_control import PermanentJobError
from workers.main import WorkerContext

if TYPE_CHECKING:  # the worker imports these lazily: workers.seal pulls in torch
    from workers.seal.continual import GateConfig, ReplayConfig
    from workers.seal.recipes import Recipe

# How often a job trains again because a rollback or another publish moved its parent.
MAX_PARENT_MOVES = 2


def check_owner(db: str, adapter: str, tenant: str | None) -> None:
    """The job's owner must own the adapter before anything of the adapter is loaded.

    The API claims the adapter for the job's tenant when it accepts the job; this catches a
    registry that disagrees (a job recorded before claims existed, or a hand-edited row).
    """
    with session_scope(db) as session:
        row = queries.get_adapter(session=session, name=adapter)
    if row is not None and row.tenant != tenant:
        raise PermanentJobError(f"the adapter '{adapter}' is not owned by this job's tenant")


def job_seed(job_id: str, options: dict[str, Any] | None = None) -> int:
    """The seed of a job's draws (replay anchors, the gate's sample of earlier probes): the request's
    `seed` option when given, so that the same request learns the same way, else one read from the id."""
    if options and options.get("seed") is not None:
        return int(options["seed"])
    # Stable across retries and processes (str hash() is salted per process).
    return int(job_id.replace("-", "")[:8], 16) if job_id else 0


def gate_config(ctx: WorkerContext) -> GateConfig:
    from workers.seal.continual import GateConfig

    s = ctx.settings
    return GateConfig(old_margin=s.gate_old_margin, canary_margin=s.gate_canary_margin,
                      max_old_probes=s.gate_max_old_probes)


def replay_config(ctx: WorkerContext, recipe: Recipe) -> ReplayConfig:
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


def job_anchors(ctx: WorkerContext, n: int, *, seed: int) -> list[str]:
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


def default_canary() -> list[Any]:
    from workers.seal.continual import load_canary

    global _canary
    if _canary is None:
        _canary = load_canary()
    return _canary


_canary: list[Any] | None = None


def document_metrics(title: str | None, result: Any, report: Any, replayed: int) -> dict[str, Any]:
    return {
        "title": title, "accuracy_before": result.accuracy_before, "accuracy_after": result.accuracy_after,
        "f1_before": result.f1_before, "f1_after": result.f1_after, "train_loss": result.train_loss,
        # The same probes read in context by the base model (knowledge bases): what the weights must match.
        "accuracy_context": result.accuracy_context, "f1_context": result.f1_context,
        "probes": len(result.probes), "self_generated_probes": result.probes_self_generated,
        "replayed_sequences": replayed, "new_sequences": len(result.new_sequences),
        "candidates": [{"index": c.index, "recipe": c.recipe, "accuracy": c.accuracy, "f1": c.f1,
                        "first_loss": c.first_loss, "train_loss": c.train_loss,
                        "train_seconds": round(c.train_seconds, 2),
                        "sequences": c.num_sequences}
                       for c in result.candidates],
        "best_candidate": result.best_index,
        "gate": report.to_dict(),
        # Every probe with the parent's and the published candidate's answer: why it published or not.
        "predictions": list(result.candidates[result.best_index].predictions)[:32],
        "probe_source": result.probe_record.get("source"),
        "probe_checks": list(result.probe_record.get("questions", []))[:16],
        "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()},
        **({"teacher_answers": result.teacher["answers"], "teacher_dropped": result.teacher["dropped"]}
           if result.teacher else {}),
    }


def explain_probes(predictions: list[dict[str, Any]], limit: int = 4) -> list[str]:
    """The probes a rejected candidate missed, with what it answered, for the job's error."""
    missed = [p for p in predictions if not p.get("correct")][:limit]
    return [f"asked {p['question']!r}, expected {p['answer']!r}, answered {p['prediction'][:80]!r}" for p in missed]


def job_metrics(doc_results: list[dict[str, Any]], stage_seconds: dict[str, float]) -> dict[str, Any]:
    n = len(doc_results)
    mean = lambda key: sum(d[key] for d in doc_results) / n  # noqa: E731
    read = [d["accuracy_context"] for d in doc_results if d.get("accuracy_context") is not None]
    return {
        "accuracy_before": mean("accuracy_before"), "accuracy_after": mean("accuracy_after"),
        "accuracy_context": sum(read) / len(read) if read else None,
        "f1_before": mean("f1_before"), "f1_after": mean("f1_after"), "train_loss": mean("train_loss"),
        "probes": sum(d["probes"] for d in doc_results),
        "self_generated_probes": any(d["self_generated_probes"] for d in doc_results),
        "stage_seconds": {k: round(v, 2) for k, v in stage_seconds.items()},
        "documents": doc_results,
    }
