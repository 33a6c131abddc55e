"""Tenant isolation on every adapter and learn endpoint (404, never 403), admin visibility, quotas."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_adapters_serving import wait_for_model
from tests.conftest import wait_job
from tests.factories import publish, train_fact_adapter

DOC = {"title": "Tenant note", "text": "The tenant isolation test document mentions the colour vermilion twice."}


@pytest.fixture(scope="module")
def private(stack, tmp_path_factory):
    """An adapter of tenant acme with two published versions, and one acme learn job."""
    src = train_fact_adapter(tmp_path_factory.mktemp("private"), "Who guards the vault?", "Oswin Tarrant guards it.")
    publish(stack, "vault-notes", src)
    version, _ = publish(stack, "vault-notes", src)
    wait_for_model(stack, "vault-notes", version)
    with stack.client("acme") as client:
        job = client.post("/v1/learn", json={"adapter": "vault-drafts", "documents": [DOC]}).json()
        client.post(f"/v1/learn/{job['id']}/cancel")
    return {"adapter": "vault-notes", "job": job["id"], "version": version}


def test_other_tenant_gets_404_on_every_endpoint(stack, private):
    name, job = private["adapter"], private["job"]
    calls = [
        ("GET", f"/v1/adapters/{name}", None),
        ("POST", f"/v1/adapters/{name}/rollback", {"version": 1}),
        ("POST", f"/v1/adapters/{name}/consolidate", None),
        ("DELETE", f"/v1/adapters/{name}", None),
        ("GET", f"/v1/learn/{job}", None),
        ("POST", f"/v1/learn/{job}/cancel", None),
        ("GET", f"/v1/learn/{job}/events", None),
        ("POST", "/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/v1/completions", {"model": f"{name}@v1", "prompt": "hi"}),
    ]
    with stack.client("globex") as client:
        for method, path, body in calls:
            r = client.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] in ("adapter_not_found", "job_not_found", "model_not_found"), error
            assert "acme" not in error["message"]  # the owner never leaks
        assert name not in [a["name"] for a in client.get("/v1/adapters").json()["data"]]
        assert name not in [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert job not in [j["id"] for j in client.get("/v1/learn", params={"limit": 100}).json()["data"]]
        # An acme key is not a name globex can address either.
        r = client.post("/v1/chat/completions", json={"model": f"acme~{name}", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    with stack.client("acme") as client:  # nothing globex tried changed anything
        adapter = client.get(f"/v1/adapters/{name}").json()
        assert adapter["current_version"] == private["version"] and not adapter["retired"]


def test_admin_sees_every_tenant(stack, private):
    key = f"acme~{private['adapter']}"  # admins address a tenant's adapter by its key
    with stack.client("admin") as admin:
        listed = {a["name"]: a for a in admin.get("/v1/adapters").json()["data"]}
        assert listed[key]["tenant"] == "acme"
        assert admin.get(f"/v1/adapters/{key}").status_code == 200
        assert admin.get(f"/v1/adapters/{private['adapter']}").status_code == 404  # no admin adapter of that name
        assert admin.get(f"/v1/learn/{private['job']}").status_code == 200


def test_reader_scope_cannot_change_adapters(stack, private):
    with stack.client("acme-reader") as reader:
        assert reader.get(f"/v1/adapters/{private['adapter']}").status_code == 200
        for method, path, body in (("POST", f"/v1/adapters/{private['adapter']}/rollback", {"version": 1}),
                                   ("POST", f"/v1/adapters/{private['adapter']}/consolidate", None),
                                   ("DELETE", f"/v1/adapters/{private['adapter']}", None)):
            assert reader.request(method, path, json=body).status_code == 403


def test_owner_rolls_back_and_versions_show_lineage(stack, private):
    name = private["adapter"]
    with stack.client("acme") as client:
        r = client.post(f"/v1/adapters/{name}/rollback", json={"version": 1})
        assert r.status_code == 200 and r.json()["current_version"] == 1
        assert client.post(f"/v1/adapters/{name}/rollback", json={"version": 99}).status_code == 404
        versions = r.json()["versions"]
        assert [(v["version"], v["status"], v["source"]) for v in versions] == [
            (1, "published", "learn"), (2, "published", "learn")]
    wait_for_model(stack, name, 1)
    with stack.client("acme") as client:  # forward again, so other tests see the newest
        assert client.post(f"/v1/adapters/{name}/rollback", json={"version": 2}).json()["current_version"] == 2


def test_consolidate_needs_a_published_version(stack):
    with stack.client("acme") as client:
        assert client.post("/v1/adapters/never-made/consolidate").status_code == 404


def dispatched(stack, job_ids: list[str]) -> list[str]:  # noqa: ANN001
    """The jobs of `job_ids` that app/dispatch.py sent to the queue."""
    from sqlalchemy import select

    from app.registry.db import session_scope
    from app.registry.models import LearnJob

    with session_scope(stack.db_url) as s:
        sent = set(s.scalars(select(LearnJob.id).where(LearnJob.id.in_(job_ids), LearnJob.dispatched_at.is_not(None))))
    return [j for j in job_ids if j in sent]


def test_tenant_quotas(stack):
    """tiny: 1 concurrent job, 2 documents per rolling day (tests/conftest.py TENANT_QUOTAS)."""
    def learn(client, n: int):  # noqa: ANN001, ANN202
        return client.post("/v1/learn", json={"adapter": "tiny-notes", "documents": [DOC] * n})

    with stack.client("tiny") as client:
        first = learn(client, 1)
        assert first.status_code == 202, first.text
        # The concurrent-jobs quota limits what runs, not what waits: the second is accepted and held.
        second = learn(client, 1)
        assert second.status_code == 202, second.text
        ids = [first.json()["id"], second.json()["id"]]
        assert dispatched(stack, ids) == ids[:1]
        over = learn(client, 1)  # 2 already today + 1 > 2
        assert over.status_code == 429 and over.json()["error"]["code"] == "quota_documents_per_day"
        assert "3" in over.json()["error"]["message"]
        # Room opens when the first document of the window is a day old: the wait says about that.
        assert 23 * 3600 < int(over.headers["retry-after"]) <= 24 * 3600, over.headers
        for job_id in ids:
            client.post(f"/v1/learn/{job_id}/cancel")
    wait_job(stack, ids[0], who="tiny", timeout=600)
    with stack.client("acme") as client:  # other tenants are unaffected
        r = client.post("/v1/learn", json={"adapter": "acme-quota-check", "documents": [DOC]})
        assert r.status_code == 202
        client.post(f"/v1/learn/{r.json()['id']}/cancel")


def test_same_name_in_two_tenants_is_two_adapters(stack, redis_client):
    """The name race: while acme's first learn into `kb-race` is still queued, globex learns into
    `kb-race` too. Each gets an adapter of its own; globex never sees acme's documents or jobs."""
    acme_doc = {"title": "Acme secret", "text": "The Acme launch code is tangerine-4471, kept in vault nine."}
    with stack.client("acme") as acme, stack.client("globex") as globex:
        a = acme.post("/v1/learn", json={"adapter": "kb-race", "documents": [acme_doc]})
        b = globex.post("/v1/learn", json={"adapter": "kb-race", "documents": [DOC]})
        try:
            assert a.status_code == 202 and b.status_code == 202, (a.text, b.text)
            assert a.json()["adapter"] == b.json()["adapter"] == "kb-race"  # each sees its own name
            mine = globex.get("/v1/adapters/kb-race").json()
            assert mine["tenant"] == "globex" and mine["versions"] == []
            assert globex.get(f"/v1/learn/{a.json()['id']}").status_code == 404
            listed = globex.get("/v1/learn", params={"adapter": "kb-race", "limit": 100}).json()["data"]
            assert [j["id"] for j in listed] == [b.json()["id"]]
        finally:
            acme.post(f"/v1/learn/{a.json()['id']}/cancel")
            globex.post(f"/v1/learn/{b.json()['id']}/cancel")
    with stack.client("admin") as admin:  # admins see both, by key
        keys = {a["name"]: a["tenant"] for a in admin.get("/v1/adapters").json()["data"]}
        assert keys["acme~kb-race"] == "acme" and keys["globex~kb-race"] == "globex"
    # Nothing of acme's reached globex's job: its stored documents are globex's own.
    with stack.client("globex") as globex:
        events = globex.get(f"/v1/learn/{b.json()['id']}").json()["events"]
        assert "tangerine" not in str(events)


def test_policy_must_be_the_callers_own(stack, private):
    """A foreign adapter, a directory or a missing name as `policy`: the same 404, refused at submit."""
    def refusal(who: str, policy: str) -> dict:
        with stack.client(who) as client:
            r = client.post("/v1/learn", json={"adapter": "policy-probe", "documents": [DOC],
                                               "options": {"policy": policy}})
            assert r.status_code == 404, r.text
            error = r.json()["error"]
            assert error["code"] == "policy_not_found" and error["param"] == "options.policy"
            return {**error, "message": error["message"].replace(policy, "<name>")}

    foreign = refusal("globex", private["adapter"])  # acme's adapter, named by globex
    assert refusal("globex", "data") == foreign  # a directory next to the server's working dir
    assert refusal("globex", "results") == foreign
    assert refusal("globex", "no-such-policy") == foreign
    assert refusal("globex", f"acme~{private['adapter']}")["code"] == "policy_not_found"
    with stack.client("acme") as client:  # the owner may use its own published adapter
        r = client.post("/v1/learn", json={"adapter": "policy-probe", "documents": [DOC],
                                           "options": {"policy": private["adapter"]}})
        assert r.status_code == 202, r.text
        assert r.json()["options"]["policy"] == private["adapter"]
        client.post(f"/v1/learn/{r.json()['id']}/cancel")


def test_quota_holds_under_concurrent_posts(stack, redis_client):
    """20 parallel POSTs from a tenant allowed 3 concurrent jobs: all 20 are accepted, and however the
    API's dispatches interleave, no more of them go to the queue than may run at once."""
    import concurrent.futures

    from rq import Worker

    from app.queue import get_queue

    def post(i: int) -> httpx.Response:
        with stack.client("burst") as client:
            return client.post("/v1/learn", json={"adapter": f"burst-{i}", "documents": [DOC]})

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(post, range(20)))
    ids = [r.json()["id"] for r in replies if r.status_code == 202]
    sent = dispatched(stack, ids)
    with stack.client("burst") as client:
        for job_id in ids:
            client.post(f"/v1/learn/{job_id}/cancel")
    assert [r.status_code for r in replies] == [202] * 20, [r.text for r in replies if r.status_code != 202]
    cap = min(3, max(1, Worker.count(connection=redis_client, queue=get_queue(redis_client))))
    assert len(sent) == cap, (sent, cap)


def test_one_tenants_backlog_never_starves_another_tenants_learn(stack, redis_client):
    """100 documents POSTed one request each into one knowledge base all get 202; a second tenant's
    learn, posted right after, goes to the queue at once, ahead of the whole backlog."""
    from app.queue import get_queue

    with stack.client("acme") as acme, stack.client("globex") as globex:
        backlog = []
        for i in range(100):
            r = acme.post("/v1/learn", json={"adapter": "bulk-kb", "documents": [
                {"title": f"Bulk note {i}", "text": f"Bulk note {i} says the shelf number is {1000 + i}."}]})
            assert r.status_code == 202, r.text
            backlog.append(r.json()["id"])
        single = globex.post("/v1/learn", json={"adapter": "single-kb", "documents": [DOC]})
        assert single.status_code == 202, single.text
        try:
            assert dispatched(stack, [single.json()["id"]]) == [single.json()["id"]]
            queued = get_queue(redis_client).job_ids
            # Only what a worker can run now was sent of acme's 100; globex's learn waits for no more.
            sent = dispatched(stack, backlog)
            assert len(sent) <= 1 and not set(backlog[1:]) & set(queued), (sent, queued)
            assert acme.get("/v1/adapters/bulk-kb/documents").json()["total"] == 100
        finally:
            for job_id in backlog:
                acme.post(f"/v1/learn/{job_id}/cancel")
            globex.post(f"/v1/learn/{single.json()['id']}/cancel")


def test_learn_budget_is_checked_at_submit(stack):
    with stack.client("acme") as client:
        r = client.post("/v1/learn", json={"adapter": "costly", "documents": [DOC] * 32,
                                           "options": {"k": 8, "epochs": 50}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "learn_cost_too_high", r.text
        assert "12800" in r.json()["error"]["message"]
        assert client.get("/v1/adapters/costly").status_code == 404  # nothing was recorded


def test_admin_learns_into_a_tenants_adapter_by_its_key(stack, private):
    """The job belongs to the adapter's tenant; the admin's Idempotency-Key is the admin's own."""
    body = {"adapter": f"acme~{private['adapter']}", "documents": [DOC]}
    with stack.client("admin") as admin:
        first = admin.post("/v1/learn", json=body, headers={"Idempotency-Key": "admin-1"})
        again = admin.post("/v1/learn", json=body, headers={"Idempotency-Key": "admin-1"})
        admin.post(f"/v1/learn/{first.json()['id']}/cancel")
        assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
        assert again.json()["id"] == first.json()["id"]
        # An admin cannot invent an adapter inside a tenant's namespace.
        assert admin.post("/v1/learn", json={"adapter": "acme~made-up", "documents": [DOC]}).status_code == 404
    with stack.client("acme") as client:  # the owner sees the job on its adapter
        assert client.get(f"/v1/learn/{first.json()['id']}").json()["adapter"] == private["adapter"]


def test_retire_cancels_the_adapters_queued_jobs(stack, tmp_path_factory):
    src = train_fact_adapter(tmp_path_factory.mktemp("retiree"), "Who keeps the lamp?", "Ida Venn keeps it.", steps=2)
    publish(stack, "retiree", src)
    with stack.client("acme") as client:
        job = client.post("/v1/learn", json={"adapter": "retiree", "documents": [DOC]}).json()
        retired = client.delete("/v1/adapters/retiree")
        assert retired.status_code == 200 and retired.json()["retired"], retired.text
        after = client.get(f"/v1/learn/{job['id']}").json()
        # Queued: cancelled at once. Already taken by a worker: flagged, and its publish is refused.
        assert after["status"] == "cancelled" or "cancel requested: the adapter was retired" in str(after["events"])
        if after["status"] != "cancelled":
            assert wait_job(stack, job["id"])["status"] == "cancelled"
        assert client.get("/v1/adapters/retiree").json()["current_version"] == 1
