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
