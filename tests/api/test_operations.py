"""GET /v1/operations: the console's numbers, the same as /metrics, scoped like every other read."""

from __future__ import annotations

import re
import time

from tests.api.test_errors import assert_error


def _metric(text: str, name: str, label: str) -> float:
    match = re.search(rf'^{name}\{{{label}\}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name}{{{label}}} not in /metrics"
    return float(match.group(1))


def test_admins_see_the_queue_and_workers_as_metrics_does(stack, workers) -> None:  # noqa: ANN001
    with stack.client("admin") as client:
        for _ in range(10):  # a job a worker finishes between the two reads moves the counts: read again
            ops = client.get("/v1/operations").json()
            metrics = client.get("/metrics").text
            again = client.get("/v1/operations").json()
            if (ops["jobs"], ops["queues"]) == (again["jobs"], again["queues"]):
                break
    assert ops["object"] == "operations" and re.fullmatch(r".+:\d+", ops["process"])
    assert set(ops["queues"]) == {"learn", "policy"}
    for queue, depth in ops["queues"].items():
        assert depth == _metric(metrics, "seal_queue_depth", f'queue="{queue}"')
    for status, count in ops["jobs"].items():
        assert count == _metric(metrics, "seal_learn_jobs_by_status", f'status="{status}"')
    with stack.client("admin") as client:  # the session's worker registers with RQ once its model is loaded
        deadline = time.monotonic() + 300
        while (workers_now := client.get("/v1/operations").json()["workers"])["total"] < 1:
            assert time.monotonic() < deadline, "the session's worker never registered"
            time.sleep(1)
    assert 0 <= workers_now["busy"] <= workers_now["total"]


def test_a_tenant_sees_its_own_jobs_and_no_shared_queue(stack) -> None:  # noqa: ANN001
    with stack.client("globex") as client:
        ops = client.get("/v1/operations").json()
    # Other tenants' load is not a tenant's to see, nor the deployment's hosts.
    assert ops["queues"] is None and ops["workers"] is None and ops["process"] is None
    assert all(s["name"].count("~") == 0 for s in ops["served"])  # its own names, as it addresses them
    with stack.client("admin") as client:
        everyone = client.get("/v1/operations").json()["jobs"]
    assert all(ops["jobs"][status] <= n for status, n in everyone.items())


def test_operations_needs_a_key(stack) -> None:  # noqa: ANN001
    import httpx

    assert_error(httpx.get(stack.url + "/v1/operations"), 401)
