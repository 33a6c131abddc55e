"""Tenant isolation on every adapter and learn endpoint (404, never 403), admin visibility, quotas."""

from __future__ import annotations

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
        ("POST", "/v1/learn", {"adapter": name, "documents": [DOC]}),
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
    with stack.client("acme") as client:  # nothing globex tried changed anything
        adapter = client.get(f"/v1/adapters/{name}").json()
        assert adapter["current_version"] == private["version"] and not adapter["retired"]


def test_admin_sees_every_tenant(stack, private):
    with stack.client("admin") as admin:
        listed = {a["name"]: a for a in admin.get("/v1/adapters").json()["data"]}
        assert listed[private["adapter"]]["tenant"] == "acme"
        assert admin.get(f"/v1/adapters/{private['adapter']}").status_code == 200
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


def test_tenant_quotas(stack):
    """tiny: 1 concurrent job, 2 documents per rolling day (tests/conftest.py TENANT_QUOTAS)."""
    def learn(client, n: int):  # noqa: ANN001, ANN202
        return client.post("/v1/learn", json={"adapter": "tiny-notes", "documents": [DOC] * n})

    with stack.client("tiny") as client:
        first = learn(client, 1)
        assert first.status_code == 202, first.text
        busy = learn(client, 1)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "quota_concurrent_jobs"
        client.post(f"/v1/learn/{first.json()['id']}/cancel")
    wait_job(stack, first.json()["id"], who="tiny", timeout=600)
    with stack.client("tiny") as client:
        over = learn(client, 2)  # 1 already today + 2 > 2
        assert over.status_code == 429 and over.json()["error"]["code"] == "quota_documents_per_day"
        assert "2" in over.json()["error"]["message"]
        last = learn(client, 1)
        assert last.status_code == 202, last.text
        client.post(f"/v1/learn/{last.json()['id']}/cancel")
    with stack.client("acme") as client:  # other tenants are unaffected
        r = client.post("/v1/learn", json={"adapter": "acme-quota-check", "documents": [DOC]})
        assert r.status_code == 202
        client.post(f"/v1/learn/{r.json()['id']}/cancel")
