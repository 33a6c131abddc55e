"""Who may scrape /metrics (SEAL_METRICS_TOKEN) and how many adapter labels a scrape can show.

In process, on the real app from `create_app` but without its lifespan: the token check, the
error rendering and the request middleware are what is tested, and none of them needs the
engine (a second `seal serve` would cost ~40 s of engine start).
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from app import metrics
from app.config import Settings
from app.main import create_app
from app.middleware import _metric_model
from tests.conftest import free_port
from workers import main as worker_main

TOKEN = "metrics-token-for-tests"


def client(tmp_path, **settings) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path, **settings)))


def test_metrics_open_without_a_token_setting(tmp_path):
    response = client(tmp_path).get("/metrics")
    assert response.status_code == 200
    assert "seal_requests_total" in response.text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer "])
def test_metrics_token_refuses_other_callers(tmp_path, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client(tmp_path, metrics_token=TOKEN).get("/metrics", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]  # the OpenAI error shape, like every other 401
    assert error["type"] == "authentication_error" and TOKEN not in error["message"]
    assert "seal_" not in response.text


def test_metrics_token_admits_the_scraper(tmp_path):
    response = client(tmp_path, metrics_token=TOKEN).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "seal_requests_total" in response.text


def test_probes_stay_open_with_a_metrics_token(tmp_path):
    assert client(tmp_path, metrics_token=TOKEN).get("/healthz").status_code == 200


def test_worker_metrics_port_requires_the_token():
    port = free_port()
    server = worker_main.start_metrics_server(port, TOKEN)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and "seal_worker_busy" in ok.text
    finally:
        server.shutdown()
        server.server_close()


# --- bounded labels -------------------------------------------------------------------------------


def exported_labels(metric_name: str, label: str) -> set[str]:
    values = set()
    for line in generate_latest().decode().splitlines():
        if line.startswith(metric_name + "{"):
            for pair in line[line.index("{") + 1:line.index("}")].split(","):
                key, _, value = pair.partition("=")
                if key == label:
                    values.add(value.strip('"'))
    return values


def test_model_label_keeps_at_most_n_adapters_plus_other_and_base():
    n = 5
    labels = metrics.AdapterLabels(max_adapters=n, base_model_id="base")
    names = [f"tenant-adapter-{i}" for i in range(n + 5)]
    seen = {labels.label(name) for name in names for _ in range(3)}
    seen.add(labels.label("base"))
    assert seen == set(names[:n]) | {metrics.OTHER, "base"}
    assert labels.label(None) == metrics.NO_MODEL


def test_model_label_follows_traffic_without_flapping():
    now = [0.0]
    labels = metrics.AdapterLabels(max_adapters=2, base_model_id="base", decay_s=100, clock=lambda: now[0])
    for _ in range(10):
        labels.label("a")
        labels.label("b")
    for _ in range(10):
        assert labels.label("c") == metrics.OTHER  # as busy as the holders: no label trading
    for _ in range(11):
        last = labels.label("c")
    assert last == "c"  # now more than twice the least busy holder's traffic
    assert labels.label("a", count=False) == metrics.OTHER  # the least busy holder gave its label up
    assert labels.label("b", count=False) == "b"
    # After a quiet spell the old counts have decayed away: a newcomer's first request wins a label.
    now[0] = 1000.0
    assert labels.label("d") == "d"


def test_exported_series_stay_bounded(tmp_path):
    """Labels as the middleware, serving and the engine set them: only N adapters appear by name."""
    n = 3
    app_client = client(tmp_path, metrics_max_adapters=n, served_model_name="base-model")
    names = [f"acme-secret-project-{i}" for i in range(n + 5)]
    for i, name in enumerate(names):
        for _ in range(i + 1):  # later adapters are busier: they take labels from earlier ones
            _metric_model(f"{name}@v1")  # the request middleware's call, which counts the traffic
            metrics.TOKENS.labels(model=metrics.model_label(name, count=False), kind="prompt").inc()
        metrics.ADAPTER_SWAPS.labels(adapter=metrics.model_label(name, count=False)).inc()
        metrics.set_adapter_version(name, 1)
    metrics.TOKENS.labels(model=metrics.model_label("base-model"), kind="prompt").inc()

    scraped = app_client.get("/metrics").text
    token_models = {m for m in exported_labels("seal_tokens_total", "model") if m.startswith("acme-secret")}
    assert 0 < len(token_models) <= n
    assert "base-model" in exported_labels("seal_tokens_total", "model")
    assert metrics.OTHER in exported_labels("seal_tokens_total", "model")
    versions = {m for m in exported_labels("seal_adapter_version", "adapter") if m.startswith("acme-secret")}
    swapped = {m for m in exported_labels("seal_adapter_swaps_total", "adapter") if m.startswith("acme-secret")}
    assert len(versions) <= n and len(swapped) <= n
    assert token_models == versions  # the gauge follows the label table, not the whole adapter list
    assert f"seal_adapters_served {float(len(names))}" in scraped
    for name in names:
        metrics.set_adapter_version(name, 0)
