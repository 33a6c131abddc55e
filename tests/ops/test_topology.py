"""Production topology on one machine: 2 API processes + 2 workers against real Postgres and Redis.

Each process is a separate OS process with its own data dir, as on separate machines. They share
only the machine's PostgreSQL (a fresh database per run), Redis (a dedicated db number, flushed
before and after) and an S3 adapter store (moto's S3 HTTP server in this test process), so API 2
can serve what a worker published only by downloading it from the store into its own cache.

Memory: each API process runs a vLLM CPU engine (~4.5 GB); workers use the transformers generator
(SEAL_WORKER_GENERATOR=hf, ~1.5 GB each) instead of a second engine each.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.conftest import (
    Stack,
    free_port,
    postgres_database,
    service_env,
    spawn,
    start_server,
    stop,
    wait_job,
    wait_ready,
)

REDIS_URL = "redis://127.0.0.1:6379/11"  # dedicated to this test; flushed before and after
START_TIMEOUT_S = 1200  # engine start is 30-60 s alone, minutes with the machine under load
LEARN_TIMEOUT_S = 1500  # a learn takes a minute or two alone, several under load

# Module setup starts 4 processes (engine start takes minutes under load), above the 900 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@dataclass
class Topology:
    apis: list[Stack]
    api_procs: list[subprocess.Popen]
    worker_procs: list[subprocess.Popen]
    worker_metrics: list[str]
    db_url: str
    root: Path

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))


@pytest.fixture(scope="module")
def s3_store() -> Iterator[tuple[str, dict[str, str]]]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="seal-topology")
    yield endpoint, creds
    server.stop()


@pytest.fixture(scope="module")
def topology(tmp_path_factory, s3_store) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("topology")
    with postgres_database("seal_topo") as db_url:
        yield from _topology(root, db_url, s3_store)


def _topology(root: Path, db_url: str, s3_store: tuple[str, dict[str, str]]) -> Iterator[Topology]:
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    endpoint, creds = s3_store
    common = {"DATABASE_URL": db_url, "SEAL_ADAPTER_STORE_URL": "s3://seal-topology/adapters",
              "SEAL_S3_ENDPOINT_URL": endpoint, "SEAL_WORKER_GENERATOR": "hf",
              # Both cores train: one job trains at a time here (a requeued job starts once its first worker
              # has stopped), and one thread each left a core idle (a learn's training took 180 s on an AVX2 box).
              "SEAL_TRAIN_THREADS": "2", **creds}
    api_procs: list[subprocess.Popen] = []
    worker_procs: list[subprocess.Popen] = []
    apis: list[Stack] = []
    metrics_urls: list[str] = []
    try:
        # Both APIs start at once: both migrate the fresh database, under the advisory lock.
        for i in range(2):
            data_dir = root / f"api{i + 1}"
            data_dir.mkdir()
            env = service_env(data_dir, REDIS_URL, **common)
            port = free_port()
            api_procs.append(start_server(env, port, root / f"api{i + 1}.log"))
            apis.append(Stack(url=f"http://127.0.0.1:{port}", data_dir=data_dir, redis_url=REDIS_URL, env=env,
                              processes=[api_procs[-1]]))
        for i in range(2):
            data_dir = root / f"worker{i + 1}"
            data_dir.mkdir()
            port = free_port()
            env = service_env(data_dir, REDIS_URL, **common, SEAL_WORKER_METRICS_PORT=str(port))
            worker_procs.append(spawn([sys.executable, "-m", "app.cli", "worker"], env, root / f"worker{i + 1}.log"))
            metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
        for api, proc in zip(apis, api_procs, strict=True):
            wait_ready(api.url, proc, timeout=START_TIMEOUT_S)
        topo = Topology(apis, api_procs, worker_procs, metrics_urls, db_url, root)
        yield topo
    except Exception:
        sys.stderr.write(Topology(apis, api_procs, worker_procs, metrics_urls, db_url, root).logs())
        raise
    finally:
        for proc in api_procs + worker_procs:
            stop(proc, timeout=90)
        r.flushdb()


def passage(fictional: list[dict], i: int) -> dict:
    p = fictional[i]
    return {"title": p["title"], "text": p["context"],
            "probes": [{"question": q["question"], "answer": q["answer"]} for q in p["questions"]]}


def submit(api: Stack, adapter: str, doc: dict, **options) -> str:  # noqa: ANN003
    with api.client() as client:
        r = client.post("/v1/learn", json={"adapter": adapter, "documents": [doc],
                                            "options": options})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition (label order does not matter)."""
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")) == labels:
            return float(m.group(2))
    return None


def wait_workers_up(topo: Topology, timeout: float = START_TIMEOUT_S) -> None:
    """Workers serve metrics as soon as they start; they take jobs once their models are loaded."""
    deadline = time.monotonic() + timeout
    for url, proc in zip(topo.worker_metrics, topo.worker_procs, strict=True):
        while True:
            assert proc.poll() is None, f"worker exited with {proc.returncode}\n{topo.logs()}"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "worker metrics endpoint never came up"
            time.sleep(1)


def test_both_apis_migrated_one_database(topology: Topology) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(topology.db_url)
    with engine.connect() as conn:
        (versions,) = conn.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).one()
    engine.dispose()
    assert versions == 1
    for api in topology.apis:
        assert httpx.get(api.url + "/readyz", timeout=10).json()["status"] == "ready"


def ask(api: Stack, question: str, answer_from: str = "auto") -> str:
    """The `seal-route` of one short answer from knowledge base topo-notes (which answered it)."""
    with api.openai() as client:
        reply = client.chat.completions.with_raw_response.create(
            model="topo-notes", messages=[{"role": "user", "content": question}], max_tokens=1, temperature=0,
            extra_headers={"seal-answer-from": answer_from})
    return reply.headers["seal-route"]


def wait_route(api: Stack, question: str, expected: str, within: float, **kw: str) -> float:
    """Seconds until `api` answers `question` by `expected` (a route prefix); fails after `within`. A
    404 counts as not yet: the process may still hold "no such model" until the event reaches it."""
    started = time.monotonic()
    while True:
        try:
            route = ask(api, question, **kw)
        except openai.NotFoundError:
            route = "404"
        if route.startswith(expected):
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"after {within} s still answered by {route}, not {expected}"
        time.sleep(0.05)


def test_learn_through_api1_is_served_by_api2(topology: Topology, fictional) -> None:
    """A document POSTed to API 1 is answered in context by API 2 within 2 s of its 202, from its
    shard once published; a forget through API 1 and a rollback through API 2 reach the other API."""
    api1, api2 = topology.apis
    question = fictional[0]["questions"][0]["question"]
    wait_workers_up(topology)
    # API 2 first finds that no knowledge base topo-notes exists, and keeps that answer in its cache,
    # as a client asking early would leave it: only the 202's event can make it look again.
    with pytest.raises(openai.NotFoundError):
        ask(api2, question)
    job_id = submit(api1, "topo-notes", passage(fictional, 0))
    pending = wait_route(api2, question, "pending:", within=2.0)
    job = wait_job(api1, job_id, timeout=LEARN_TIMEOUT_S)
    assert job["status"] == "published", f"{job['error']}\n{topology.logs()}"
    assert job["version"] == 1

    # API 2 lists the knowledge base at the version the worker published (from the shared registry).
    deadline = time.monotonic() + 120
    while True:
        with api2.client() as c:
            models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        if models.get("topo-notes", {}).get("version") == 1:
            break
        assert time.monotonic() < deadline, f"API 2 never listed topo-notes@v1: {sorted(models)}"
        time.sleep(1)

    # A question about the document reaches its shard on API 2, which downloads the shard from S3
    # into its own cache (acme's knowledge base: its first shard's key is acme~topo-notes+s0). Asked
    # from the weights: served as `auto`, a shard whose weights read worse than its document is not
    # loaded at all (the base model reads the document).
    reply = api2.openai().chat.completions.with_raw_response.create(
        model="topo-notes", messages=[{"role": "user", "content": fictional[0]["questions"][0]["question"]}],
        max_tokens=16, temperature=0, extra_headers={"seal-answer-from": "weights"})
    assert reply.headers["seal-route"] == "topo-notes/s0@v1", reply.headers
    completion = reply.parse()
    assert completion.model == "topo-notes" and completion.choices[0].finish_reason in ("stop", "length")
    assert list((api2.data_dir / "adapter-cache").rglob("acme~topo-notes+s0/v1/adapter_config.json"))

    api_metrics = httpx.get(api2.url + "/metrics", timeout=10).text
    # A shard serves pinned versions (kb/s0@v1), so it has no current version gauge; the router's count
    # and the request's adapter label say that API 2 served the shard.
    assert metric(api_metrics, "seal_kb_routes_total", model="acme~topo-notes", route="shard") == 1.0
    assert metric(api_metrics, "seal_learn_jobs_by_status", status="published") == 1.0
    assert (metric(api_metrics, "seal_requests_total", route="/v1/chat/completions", model="acme~topo-notes+s0",
                   status="200") or 0) >= 1
    published = [metric(httpx.get(u, timeout=10).text, "seal_learn_jobs_total", status="published") or 0
                 for u in topology.worker_metrics]
    assert sum(published) == 1, "the worker that ran the job counts it on its metrics port"

    # Forgotten through API 1 (v2 holds no shard for it), then rolled back to v1 through API 2: each
    # change is routed by the other API as soon as its Redis event arrives.
    with api1.client() as c:
        (doc,) = c.get("/v1/adapters/topo-notes/documents").json()["data"]
        assert c.delete(f"/v1/adapters/topo-notes/documents/{doc['id']}").json()["version"] == 2
    wait_route(api2, question, "base", within=5.0)
    with api2.client() as c:
        assert c.post("/v1/adapters/topo-notes/rollback", json={"version": 1}).status_code == 200
    restored = wait_route(api1, question, "topo-notes/s0@v1", within=5.0, answer_from="weights")
    sys.stderr.write(f"\ntopology: API 2 answered the 202'd document in context after {pending:.2f} s; "
                     f"API 1 served API 2's rollback after {restored:.2f} s\n")


def test_sigterm_to_a_worker_mid_training_requeues_its_job(topology: Topology, fictional) -> None:
    api1 = topology.apis[0]
    wait_workers_up(topology)
    # Default epochs: ten steps of a few seconds each, ample to interrupt between two of them; the
    # worker that takes the requeued job trains it all again.
    job_id = submit(api1, "topo-requeue", passage(fictional, 1))
    job = wait_job(api1, job_id, until=lambda j: j["stage"] == "training" or j["status"] not in ("queued", "running"),
                   timeout=LEARN_TIMEOUT_S)
    assert job["status"] == "running", f"job reached {job['status']} before training"
    busy = [i for i, u in enumerate(topology.worker_metrics)
            if metric(httpx.get(u, timeout=10).text, "seal_worker_busy") == 1.0]
    assert len(busy) == 1, "exactly one worker runs the job"
    victim = topology.worker_procs[busy[0]]
    victim.send_signal(signal.SIGTERM)

    assert victim.wait(300) == 0, "the worker exits cleanly once its job is requeued"
    with api1.client() as c:
        events = [e["message"] for e in c.get(f"/v1/learn/{job_id}").json()["events"]]
    job = wait_job(api1, job_id, timeout=LEARN_TIMEOUT_S)
    assert job["status"] == "published", f"{job['error']}\n{topology.logs()}"
    assert any("requeue" in m.lower() or "shut" in m.lower() for m in events), events


def test_sigterm_to_an_api_finishes_its_stream(topology: Topology) -> None:
    api2, proc = topology.apis[1], topology.api_procs[1]
    lines: list[str] = []
    first_token = threading.Event()

    def stream() -> None:
        body = {"model": "SmolLM2-135M-Instruct", "stream": True, "max_tokens": 48, "temperature": 0,
                "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}]}
        with httpx.stream("POST", api2.url + "/v1/chat/completions", json=body, headers=api2.headers(),
                          timeout=300) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:])
                    first_token.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_token.wait(300), "no streamed chunk"
    proc.send_signal(signal.SIGTERM)  # mid-stream
    reader.join(120)
    assert not reader.is_alive()
    assert lines[-1] == "[DONE]", lines[-3:]
    finish = [c["finish_reason"] for line in lines[:-1] for c in json.loads(line).get("choices", [])
              if c.get("finish_reason")]
    assert finish == ["length"] or finish == ["stop"], finish
    assert proc.wait(120) == 0, "the API exits cleanly after draining"
    # ... and says so: no traceback on the way out (vLLM's AsyncLLM.__del__ once logged one on every stop).
    log = (topology.root / "api2.log").read_text(errors="replace")
    assert "Traceback" not in log[log.index("Shutting down"):], log[-3000:]
    # The other API keeps serving.
    assert httpx.get(topology.apis[0].url + "/readyz", timeout=10).status_code == 200
