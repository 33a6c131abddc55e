"""The worker process shell: graceful SIGTERM (the SHUTDOWN event) and the metrics endpoint."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job

from app import metrics
from tests.conftest import free_port
from workers import main


def wait_for_shutdown() -> bool:
    """A stand-in job: runs until the worker is told to shut down, as a learn job's checkpoints do."""
    return main.SHUTDOWN.wait(60)


class QuietWorker(main.InProcessWorker):
    def run_maintenance_tasks(self) -> None:  # no registry in this test
        pass


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    main.SHUTDOWN.clear()


def test_sigterm_sets_shutdown_and_the_worker_stops_after_the_job(valkey, scratch_redis, restore_signals):
    queue = Queue("learn", connection=scratch_redis)
    first = queue.enqueue(wait_for_shutdown)
    second = queue.enqueue(wait_for_shutdown)
    worker = QuietWorker([queue], connection=scratch_redis)

    # The observer reads through its own client: the worker's pool is the one the signal handler
    # (RQ's request_stop writes to Redis) interrupts, so the test must not share it.
    observer = redis.Redis.from_url(valkey, db=15)

    def term_when_busy() -> None:
        for _ in range(200):
            if Job.fetch(first.id, connection=observer).get_status() == "started":
                break
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term_when_busy, daemon=True).start()
    worker.work(burst=True)  # burst: would take the second job too if it did not stop

    assert main.SHUTDOWN.is_set()
    finished = Job.fetch(first.id, connection=observer)
    assert finished.get_status() == "finished" and finished.return_value() is True
    assert Job.fetch(second.id, connection=observer).get_status() == "queued", "a stopping worker takes no more work"


def test_metrics_server_exports_worker_metrics():
    port = free_port()
    main.start_metrics_server(port)
    metrics.LEARN_STAGE_SECONDS.labels(stage="training").observe(3.0)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in ("seal_learn_jobs_total", "seal_learn_stage_seconds_bucket", "seal_learn_job_seconds",
                 "seal_worker_busy"):
        assert name in body
    main.start_metrics_server(port)  # a second worker on the same port only logs a warning
    main.start_metrics_server(0)  # disabled
