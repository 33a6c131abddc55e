"""The worker process shell: graceful SIGTERM (the SHUTDOWN event), maintenance as soon as a dead worker's
heartbeat lapses, and the metrics endpoint."""

from __future__ import annotations

import faulthandler
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis
from rq import Queue
from rq.utils import now as rq_now

from app import metrics
from tests.conftest import REPO, free_port
from workers import main


def wait_for_shutdown() -> bool:
    """A stand-in job: runs until the worker is told to shut down, as a learn job's checkpoints do."""
    return main.SHUTDOWN.wait(60)


class QuietWorker(main.InProcessWorker):
    def run_maintenance_tasks(self) -> None:  # no registry in this test
        pass


def serve_learn_queue(redis_url: str) -> None:
    """The child process: a worker on the learn queue in burst mode, with the worker's real signal handling."""
    faulthandler.register(signal.SIGUSR1)  # the test dumps our threads' stacks if we fail to stop
    connection = redis.Redis.from_url(redis_url)
    QuietWorker([Queue("learn", connection=connection)], connection=connection).work(burst=True)


def test_sigterm_sets_shutdown_and_the_worker_stops_after_the_job(scratch_redis_url, scratch_redis, tmp_path):
    # The worker runs as its own OS process, as in production: a SIGTERM aimed at pytest itself would
    # kill the whole run whenever it landed outside the worker's handlers.
    queue = Queue("learn", connection=scratch_redis)
    first = queue.enqueue(wait_for_shutdown)
    second = queue.enqueue(wait_for_shutdown)
    log = tmp_path / "worker.log"
    child = subprocess.Popen(
        [sys.executable, "-c", f"from tests.workers.test_worker_main import serve_learn_queue; "
                               f"serve_learn_queue({scratch_redis_url!r})"],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while first.get_status(refresh=True) != "started":
            assert child.poll() is None, f"worker exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the worker never started the job:\n{log.read_text()}"
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(60)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)
            time.sleep(2)
            pytest.fail(f"the worker still ran 60 s after SIGTERM; its log and stacks:\n{log.read_text()}")
        assert code == 0, log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    # The job saw SHUTDOWN (it returns True only then) and the worker took no more work.
    assert first.get_status(refresh=True) == "finished" and first.return_value(refresh=True) is True, log.read_text()
    assert second.get_status(refresh=True) == "queued", "a stopping worker takes no more work"
    assert "shutdown requested" in log.read_text()


def test_teardown_does_not_wait_on_the_command_channel(scratch_redis):
    worker = QuietWorker([Queue("learn", connection=scratch_redis)], connection=scratch_redis)
    worker.subscribe()
    # The channel's thread reads the UNSUBSCRIBE reply before it is told to stop, as it did under the
    # full suite's load: with RQ's 60 s poll, teardown then waited a minute for the thread.
    worker.pubsub.unsubscribe()
    time.sleep(1)
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 10
    assert not worker.pubsub_thread.is_alive()


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


def test_an_idle_worker_starts_maintenance_once_a_running_jobs_heartbeat_lapses(scratch_redis):
    from rq.registry import StartedJobRegistry

    queue = Queue("learn", connection=scratch_redis)
    worker = main.InProcessWorker([queue], connection=scratch_redis)
    worker.last_cleaned_at = rq_now()  # RQ's own interval is not due
    assert worker.dequeue_timeout <= main.HEARTBEAT_TTL_S / 3, "an idle worker must look up well within a TTL"
    started = StartedJobRegistry(queue=queue)
    assert not worker.should_run_maintenance_tasks
    scratch_redis.zadd(started.key, {"live-job:exec": time.time() + main.HEARTBEAT_TTL_S})  # its worker beats on
    assert not worker.should_run_maintenance_tasks
    scratch_redis.zadd(started.key, {"orphan-job:exec": time.time() - 1})  # its worker stopped beating
    assert worker.should_run_maintenance_tasks
    # Maintenance clears the lapsed entry (a job RQ does not know is no job to retry), and the check rests.
    worker.clean_registries()
    assert not worker.should_run_maintenance_tasks
    assert scratch_redis.zrange(started.key, 0, -1) == [b"live-job:exec"]


def test_training_is_lent_cores_on_cpu_only(tmp_path, monkeypatch):
    """SEAL_TRAIN_LENT_THREADS reaches the trainer as app.cpus.LentCores, never beyond the host's cores."""
    from app.config import Settings
    from app.cpus import LentCores

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    lent = main._lent_cores(Settings(data_dir=tmp_path, train_lent_threads=1), "cpu", 1)
    assert isinstance(lent, LentCores) and (lent.own, lent.lent) == (1, 1)
    capped = main._lent_cores(Settings(data_dir=tmp_path, train_lent_threads=4), "cpu", 1)
    assert (capped.own, capped.lent) == (1, 1)
    assert main._lent_cores(Settings(data_dir=tmp_path, train_lent_threads=1), "cpu", 2) is None  # no core left
    assert main._lent_cores(Settings(data_dir=tmp_path, train_lent_threads=1), "cuda", 1) is None
    assert main._lent_cores(Settings(data_dir=tmp_path), "cpu", 1) is None  # default outside `seal up`
