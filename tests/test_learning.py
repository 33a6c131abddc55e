"""Submitting learns (app/learning.py) from many requests at once, on SQLite and PostgreSQL: the
tenant's row lock is what keeps the daily quota and the shard plan exact when API processes race."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from app.api.learn_schemas import LearnRequest
from app.auth import Principal, Scope
from app.config import Settings
from app.errors import RateLimited
from app.learning import submit_learn
from app.registry.db import session_scope
from app.registry.models import Document
from tests.conftest import MODEL_DIR, REPO

SUBMITTERS = 12
QUOTA = 5
CAPACITY = 2
RECIPES = REPO / "workers" / "seal" / "data" / "recipes"


def test_concurrent_submits_keep_the_daily_quota_and_fill_shards_in_turn(database, scratch_redis, tmp_path) -> None:
    # Shards of 2: with the bundled recipe's K = 1 every shard is full at once, and an interleaving
    # that opened a shard while an earlier one had room could not show.
    recipe = json.loads((RECIPES / f"{MODEL_DIR.name}.json").read_text())
    (tmp_path / f"{MODEL_DIR.name}.json").write_text(json.dumps({**recipe, "shard_documents": CAPACITY}))
    settings = Settings(database_url=database, model=str(MODEL_DIR), recipe_dir=tmp_path,
                        tenant_quotas={"acme": {"documents_per_day": QUOTA}})
    capacity = settings.recipe().for_shards().shard_documents
    assert capacity == CAPACITY
    acme = Principal("acme", frozenset({Scope.learn, Scope.infer}))
    barrier = threading.Barrier(SUBMITTERS)

    def submit(i: int) -> str | None:
        body = LearnRequest(adapter="notes", documents=[{"text": f"Note {i} says the shelf number is {100 + i}."}])
        barrier.wait()
        try:
            with session_scope(database) as session:
                job, created = submit_learn(session=session, redis=scratch_redis, settings=settings, principal=acme,
                                            body=body, idempotency_key=None, count_tokens=lambda t: len(t.split()))
                assert created
                return job.id
        except RateLimited:
            return None

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        accepted = [j for j in pool.map(submit, range(SUBMITTERS)) if j is not None]
    assert len(accepted) == QUOTA, f"{len(accepted)} accepted against a quota of {QUOTA}"
    with session_scope(database) as session:
        per_shard = dict(session.execute(select(Document.shard, func.count(Document.id))
                                         .where(Document.adapter == "acme~notes").group_by(Document.shard)).all())
    # Every document has a shard, no shard holds more than the recipe's capacity, and no shard was
    # opened while an earlier one had room (the shards an interleaving would leave half empty).
    assert sum(per_shard.values()) == QUOTA and None not in per_shard, per_shard
    assert sorted(per_shard.values(), reverse=True) == [min(capacity, QUOTA - i) for i in range(0, QUOTA, capacity)]
