"""RQ job entry points, kept thin: each takes ids, runs its work elsewhere, and returns a summary.

Two kinds of job share one entry point (`learn`) and one queue, so one per-adapter lock orders them:
- learn: absorb new documents into the adapter's stream (warm start from the current version, replay,
  forgetting gate) and publish the next version;
- consolidate: retrain the stream from the base weights on everything it absorbed ("sleep").

A learn job may run more than once (a retry after a crash, or a duplicate enqueue by the
reconciler). It is safe because: a finished job returns at once; a per-adapter lock keeps two
learns of one adapter sequential; and publishing is idempotent per job id.
"""

from __future__ import annotations

import logging
from typing import Any

from app.logs import job_id_var
from app.registry import queries
from app.registry.db import session_scope
from workers.learn_run import run_job
from workers.main import get_context
from workers.stream_run import load_memory

logger = logging.getLogger(__name__)


def learn(job_id: str) -> dict[str, Any]:
    """Run one learn or consolidate job end to end: train, gate, publish (workers/learn_run.py)."""
    ctx = get_context()
    token = job_id_var.set(job_id)
    try:
        return run_job(ctx, job_id)
    finally:
        job_id_var.reset(token)


def consolidate_due() -> dict[str, Any]:
    """Cron entry point (`seal scheduler`): queue a consolidation of every live adapter that has
    absorbed documents since its last one. Runs on a worker, so it sees the store."""
    from app.knowledge.shards import learns_since_repack, live_knowledge_bases
    from app.learning import submit_consolidation

    ctx = get_context()
    with session_scope(ctx.settings.sqlalchemy_url) as session:
        current = [(a.name, a.tenant, v.path) for a, v in queries.serving_versions(session=session)]
        due = [(a.name, a.tenant) for a in live_knowledge_bases(session) if learns_since_repack(session, a) > 0]
    due += [(name, tenant) for name, tenant, path in current if load_memory(ctx, path).since_consolidation > 0]
    queued = []
    for name, tenant in due:
        with session_scope(ctx.settings.sqlalchemy_url) as session:
            job, created = submit_consolidation(session=session, redis=ctx.redis, settings=ctx.settings,
                                                adapter=name, tenant=tenant, reason="scheduled")
        if created:
            queued.append(name)
    logger.info("scheduled consolidation of %d adapter(s): %s", len(queued), ", ".join(queued) or "-")
    return {"queued": queued}


