"""Session fixtures: one real `seal serve` process (real vLLM CPU engine), one embedded Valkey,
a temporary data dir with SQLite, and API keys for two tenants plus an admin."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from app import process
from app.process import free_port, kill_group, stop, wait_ready  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
BASE_MODEL = "SmolLM2-135M-Instruct"
# Threads for the trainers the tests/seal modules run in the test process. The session's engine and
# worker sit idle then (about 1% of a core), so both cores train: the ReST-EM round took 138 s
# beside an idle stack, against 181 s on one thread (2026-12-07, 2 vCPUs). The 6x slowdown once
# measured for 2 threads came from a busy engine, which these tests never have. Adapters trained while
# the stack serves (tests/factories.py) stay on one thread.
TRAIN_THREADS = 2

KEYS = {
    "acme": ("sk-test-acme", ["infer", "learn"]),
    "globex": ("sk-test-globex", ["infer", "learn"]),
    "acme-reader": ("sk-test-acme-reader", ["infer"]),
    "admin": ("sk-test-admin", ["admin"]),
    "tiny": ("sk-test-tiny", ["infer", "learn"]),  # a tenant with tight quotas (TENANT_QUOTAS)
    "burst": ("sk-test-burst", ["infer", "learn"]),  # concurrent submits against its job quota
}
# The machine's PostgreSQL (CI runs it too): the production registry, where row locks are real.
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TENANT_QUOTAS = {"tiny": {"documents_per_day": 2, "concurrent_jobs": 1}, "burst": {"concurrent_jobs": 3}}


# A phase this slow is named as it ends, not only in the --durations table at the session's end: a
# CI run stopped at its time limit never prints that table, and its log must still say where the time went.
SLOW_PHASE_S = 60.0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.duration >= SLOW_PHASE_S:
        sys.stderr.write(f"\n[slow] {report.duration:.0f}s {report.when} {report.nodeid}\n")


def api_keys_json() -> str:
    tenant_of = {"acme-reader": "acme", "admin": "ops"}
    return json.dumps([{"tenant": tenant_of.get(name, name), "scopes": scopes, "key": key}
                       for name, (key, scopes) in KEYS.items()])


@dataclass
class Stack:
    """Handles on the running service for tests."""

    url: str
    data_dir: Path
    redis_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'seal.db'}"

    def headers(self, who: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[who][0]}"}

    def client(self, who: str = "acme") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(who), timeout=120)

    def openai(self, who: str = "acme", **kwargs):  # noqa: ANN003, ANN201
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEYS[who][0], max_retries=0, **kwargs)

    def async_openai(self, who: str = "acme"):  # noqa: ANN201
        import openai

        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=KEYS[who][0], max_retries=0)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A service process in a session of its own, run from the repository, logging to `log`."""
    return process.spawn(args, env, log, cwd=REPO)


def service_env(data_dir: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAL_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update({
        "SEAL_DATA_DIR": str(data_dir),
        "SEAL_MODEL": str(MODEL_DIR),
        "SEAL_SERVED_MODEL_NAME": BASE_MODEL,
        "REDIS_URL": redis_url,
        "SEAL_API_KEYS": api_keys_json(),
        "SEAL_TENANT_QUOTAS": json.dumps(TENANT_QUOTAS),
        "SEAL_LOG_LEVEL": "INFO",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # The session publishes more adapters than the default label budget; tests that read a
        # series by adapter must find it (the budget itself is tested in test_metrics_access.py).
        "SEAL_METRICS_MAX_ADAPTERS": "1000",
    })
    env.update(extra)
    return env


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env, log)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory) -> Iterator[str]:
    """A real embedded Valkey (AOF on) for the whole session."""
    from app.redis_server import EmbeddedValkey

    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, valkey: str) -> Iterator[Stack]:
    """The API server (one real vLLM engine, shared by the session)."""
    assert MODEL_DIR.exists(), "run scripts/setup.sh first (it bootstraps the bundled model)"
    data_dir = tmp_path_factory.mktemp("data")
    port = free_port()
    env = service_env(data_dir, valkey)
    url = f"http://127.0.0.1:{port}"
    proc = start_server(env, port, data_dir / "api.log")
    try:
        wait_ready(url, proc)
    except Exception:
        stop(proc)
        sys.stderr.write((data_dir / "api.log").read_text()[-5000:])
        raise
    s = Stack(url=url, data_dir=data_dir, redis_url=valkey, env=env, processes=[proc])
    yield s
    stop(proc)


@pytest.fixture(scope="session")
def redis_client(valkey: str) -> redis.Redis:
    return redis.Redis.from_url(valkey)


@pytest.fixture(scope="session")
def fictional() -> list[dict]:
    return [json.loads(line) for line in (SHARED_DATA / "fictional_dev.jsonl").read_text().splitlines() if line.strip()]


class Workers:
    """Real `seal worker` processes against the session's stack; tests may kill and restart them."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.procs: list[subprocess.Popen] = []

    def start(self, **env: str) -> subprocess.Popen:
        log = self.stack.data_dir / f"worker-{len(self.procs)}.log"
        # Both cores train: these tests never decode through the API while a job trains, and one thread
        # left the second core idle (a training step took ~1.25x as long). So do the topology test's two
        # workers, which never train at once.
        env = {"SEAL_TRAIN_THREADS": "2", **env}
        proc = spawn([sys.executable, "-m", "app.cli", "worker"], {**self.stack.env, **env}, log)
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.alive():
            stop(proc)


@pytest.fixture(scope="session")
def workers(stack: Stack) -> Iterator[Workers]:
    manager = Workers(stack)
    manager.start()
    yield manager
    manager.stop_all()


def wait_job(stack: Stack, job_id: str, *, who: str = "acme", until=None, timeout: float = 600) -> dict:  # noqa: ANN001
    """Poll a learn job until `until(job)` (default: a terminal status)."""
    until = until or (lambda j: j["status"] in ("published", "rejected", "failed", "cancelled"))
    deadline = time.monotonic() + timeout
    with stack.client(who) as client:
        while True:
            job = client.get(f"/v1/learn/{job_id}").json()
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} stuck: {job['status']}/{job['stage']}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def scratch_redis_url(valkey: str) -> str:
    """DB 15 of the session's Valkey. It goes in the URL: redis-py lets a URL's /0 override a `db=` argument."""
    return urlsplit(valkey)._replace(path="/15").geturl()


@pytest.fixture
def scratch_redis(scratch_redis_url: str) -> Iterator[redis.Redis]:
    """An empty Redis DB of the session's Valkey, apart from the one the running stack uses."""
    client = redis.Redis.from_url(scratch_redis_url)
    assert client.connection_pool.connection_kwargs["db"] == 15, "flushing the stack's own DB would lose its jobs"
    client.flushdb()
    yield client
    client.flushdb()


@contextlib.contextmanager
def postgres_database(prefix: str = "seal_test") -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (its SQLAlchemy URL), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        from app.registry.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path) -> Iterator[str]:
    """A fresh, empty registry database on each backend: SQLite (the embedded default) and PostgreSQL
    (production). SQLite serialises every writer and ignores SELECT ... FOR UPDATE, so a
    compare-and-set or a quota that holds there proves nothing about API processes racing on
    Postgres; the tests that take this fixture (or `database`) run on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'seal.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def database(empty_database: str) -> str:
    """`empty_database` with the schema at head."""
    from app.registry.db import migrate

    migrate(empty_database)
    return empty_database
