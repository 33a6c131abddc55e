"""RQ entry point for the `policy` queue: ReST-EM policy training as one long, resumable job.

The job is a thin wrapper around `workers.seal.restem.train_policy`. Its checkpoint directory is
derived from the policy name (`<data_dir>/policies/<name>/`), so a retried job, after a kill or a
worker crash, picks up at the next unfinished passage instead of starting over. The finished
policy is published as adapter `<name>` (registry + store); learn jobs then use it via SEAL_POLICY=<name>.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from rq import get_current_job

from workers.main import get_context

logger = logging.getLogger(__name__)

_POLICY_OPTIONS = {"rounds": int, "k": int, "seeds": int, "format": str, "reward_baseline": str}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def train_policy(request: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume training) a self-edit policy; returns the training report and its store path.

    Args:
        request: `name` (policy adapter name), and optionally `passages` (n, default 30), `rounds`
            (2), `k` (3), `seeds` (1), `format` ("rewrite"), `reward_baseline` ("passage"), `squad_path`,
            `epochs` (10).

    Returns:
        The ReST-EM report plus `store_path`, the immutable store directory of the policy.
    """
    from workers.seal.config import EvalConfig, TrainConfig
    from workers.seal.datasets import DEFAULT_DATA_DIR, load_squad
    from workers.seal.restem import PolicyTrainConfig
    from workers.seal.restem import train_policy as run_restem

    name = request["name"]
    if not _NAME.match(name):
        raise ValueError(f"policy name must match {_NAME.pattern}, got {name!r}")
    ctx = get_context()
    out_dir = Path(ctx.settings.data_dir) / "policies" / name
    # Only the keys the request sets, so PolicyTrainConfig stays the one source of defaults.
    cfg = PolicyTrainConfig(**{key: cast(request[key]) for key, cast in _POLICY_OPTIONS.items() if key in request})
    passages = load_squad(request.get("squad_path") or DEFAULT_DATA_DIR / "squad_val.json", split="train",
                          limit=int(request.get("passages", 30)))
    job = get_current_job()

    def progress(what: str, done: int, total: int) -> None:
        if job is not None:
            job.meta["progress"] = {"stage": what, "done": done, "total": total}
            job.save_meta()

    report = run_restem(
        generator=ctx.generator, scorer=ctx.scorer, trainer=ctx.trainer, passages=passages, out_dir=str(out_dir),
        cfg=cfg, train_cfg=TrainConfig(epochs=int(request.get("epochs", 10))), eval_cfg=EvalConfig(),
        progress=progress,
    )
    # Registered like any adapter version, so SEAL_POLICY=<name> (or a learn's `policy` option)
    # finds it; publishing is idempotent per RQ job id, so a retried job reuses its version.
    from app.publishing import publish_version

    version, store_path = publish_version(
        db_url=ctx.settings.sqlalchemy_url, store=ctx.store, redis=ctx.redis, adapter=name, tenant=None,
        src_dir=out_dir / "policy", job_id=job.id if job is not None else None, source="policy",
        metrics={"rounds": report.get("rounds") if isinstance(report, dict) else None},
        metadata={"source": "policy", "checkpoint_dir": str(out_dir), "report": report},
    )
    logger.info("policy %s v%d published at %s", name, version, store_path)
    return report | {"store_path": store_path, "version": version}
