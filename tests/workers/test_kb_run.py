"""The knowledge-base job's gate sample: which earlier probes reach the retrained shard."""

from __future__ import annotations

from workers.kb_run import _earlier_probes
from workers.seal.continual import probe_key


def test_earlier_probes_are_split_by_where_the_router_sends_them() -> None:
    mine = {"question": "Who built the Vesk Lighthouse?", "answer": "Orsk Yards"}
    theirs = {"question": "Where is the Saltren Festival held?", "answer": "Port Halden"}
    stolen = {"question": "Which lighthouse stands on Corran Point?", "answer": "Vesk Lighthouse"}
    other_memory = {7: {"probes": [theirs, stolen], "results": {probe_key(theirs["question"], theirs["answer"]): True,
                                                                  probe_key(stolen["question"], stolen["answer"]): True}}}
    shard_results = {probe_key(mine["question"], mine["answer"]): False}
    affected, unrouted = _earlier_probes([mine], shard_results, other_memory, lambda q: "Vesk" in q or "Corran" in q,
                                         32, seed=0)
    # Its own document's probe and another document's probe it now attracts are asked of the candidate;
    # the probe the router sends elsewhere counts with its cached verdict.
    assert affected == [mine, stolen] and unrouted == [True]
    affected, unrouted = _earlier_probes([mine], shard_results, other_memory, lambda q: False, 32, seed=0)
    assert affected == [] and sorted(unrouted) == [False, True, True]
    assert len(_earlier_probes([mine] * 40, shard_results, {}, lambda q: True, 32, seed=0)[0]) == 32


def test_a_partly_rejected_job_says_what_it_learned_first(database, scratch_redis) -> None:
    """A long document's passages are learned shard by shard: when some publish and some are rejected,
    the job (rejected: not every document was learned) leads with what is served, and its version."""
    import uuid
    from types import SimpleNamespace

    from app.config import Settings
    from app.registry import queries
    from app.registry.db import session_scope
    from app.registry.models import JobStatus
    from workers.kb_run import ShardOutcome, _finish

    job_id = str(uuid.uuid4())
    with session_scope(database) as s:
        queries.create_learn_job(session=s, job_id=job_id, adapter="acme~long", tenant="acme",
                                 documents=[{"text": "passage one"}, {"text": "passage two"}], options={},
                                 idempotency_key=None, request_hash=None)
    # The worker's context and reporter, as far as _finish reads them; the registry and Redis are real.
    ctx = SimpleNamespace(settings=Settings(database_url=database), redis=scratch_redis)
    reporter = SimpleNamespace(stage_totals=dict)
    outcomes = [ShardOutcome("acme~long+s0", True, 1, 1),
                ShardOutcome("acme~long+s1", False, None, None, reasons=["new-fact accuracy did not rise (0.25 -> 0.25)"])]
    assert _finish(ctx, job_id, "acme~long", "acme", outcomes, reporter, {})["status"] == "rejected"
    with session_scope(database) as s:
        job = queries.get_job(session=s, job_id=job_id)
        assert job.status is JobStatus.rejected and job.version == 1
        assert job.error == ("1 of 2 shards were learned and are served (s0); the rest are read in context: "
                             "new-fact accuracy did not rise (0.25 -> 0.25)")
