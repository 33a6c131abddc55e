"""API keys: bearer required on /v1, scopes enforced, health stays open; open mode binds loopback only."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

from tests.conftest import BASE_MODEL, REPO


def test_missing_and_wrong_key_are_401(stack):
    import httpx

    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"}):
        r = httpx.get(stack.url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()


def test_health_and_metrics_need_no_key(stack):
    import httpx

    assert httpx.get(stack.url + "/healthz").status_code == 200
    assert httpx.get(stack.url + "/readyz").json()["status"] == "ready"
    exposition = httpx.get(stack.url + "/metrics").text
    assert "seal_requests_total" in exposition and 'seal_queue_depth{queue="learn"}' in exposition


def test_scopes(stack):
    with stack.client("acme-reader") as reader:
        assert reader.get("/v1/models").status_code == 200
        r = reader.post("/v1/learn", json={"adapter": "x", "documents": [{"text": "t"}]})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    with stack.client("admin") as admin:
        reply = admin.post("/v1/chat/completions", json={"model": BASE_MODEL, "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200


def test_refuses_open_non_loopback_bind(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SEAL_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no API keys are configured" in result.stderr.replace("\n", " ")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/learn", "/learn",
                                  "/v1/adapters/x/rollback"])
def test_key_is_checked_before_the_body_is_parsed(stack, path):
    import httpx

    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        r = httpx.post(stack.url + path, content=b"{not json", headers={"content-type": "application/json", **headers})
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error" and r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(stack.url + path, content=b"{not json", headers={"content-type": "application/json",
                                                                     **stack.headers("admin")})
    assert r.status_code == 400 and "Malformed JSON" in r.json()["error"]["message"]


def test_unknown_routes_need_a_key_too(stack):
    import httpx

    assert httpx.get(stack.url + "/v1/nothing-here").status_code == 401
    assert httpx.get(stack.url + "/v1/nothing-here", headers=stack.headers()).status_code == 404
    assert httpx.get(stack.url + "/openapi.json").status_code == 200
