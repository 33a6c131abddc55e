"""The learn worker process: warm models, an in-process RQ worker, and queue reconciliation.

Why in-process: RQ's default `Worker` forks a "work horse" per job. Forking a parent that
has initialised CUDA breaks the child, and reloading a 7B model per job would cost more than
the job. So jobs run in this process (`SimpleWorker`), next to a vLLM engine (self-edits,
evaluation) and the peft base weights (training), both loaded once.

`SimpleWorker` cannot heartbeat while a job runs (the main thread is busy), so RQ would only
notice a killed worker after job_timeout + 60 s. `InProcessWorker` heartbeats from a thread
with a short TTL, and an idle worker looks for lapsed heartbeats every few seconds, so a SIGKILLed
worker's job is retried within seconds of its heartbeat lapsing.

SIGTERM (a rollout or scale-down) sets `SHUTDOWN`: a learn job checks it at its progress
checkpoints and puts itself back on the queue for another worker; this worker then exits
instead of taking more work. A second SIGTERM/SIGINT exits at once (the heartbeat TTL then
hands the job on). Metrics are served on SEAL_WORKER_METRICS_PORT for Prometheus.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from app import metrics
from app.config import Settings
from app.dispatch import dispatch
from app.knowledge.forgetting import purge_forgotten
from app.queue import LEARN_FUNC, SERIALIZER, get_queue, reconcile
from app.redis_server import ensure_redis, riding_redis_client, wait_for_redis
from app.registry.db import migrate, session_scope
from app.registry.models import LearnJob
from app.retention import purge_expired
from app.store import AdapterStore, S3AdapterStore, open_store

if TYPE_CHECKING:
    from workers.seal.generator import Generator
    from workers.seal.train import LoraTrainer

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10
# A job whose worker stopped heartbeating for this long is treated as abandoned and retried.
HEARTBEAT_TTL_S = 45
MAINTENANCE_INTERVAL_S = 30
# How often an idle worker looks up from the queue: a lapsed heartbeat then starts maintenance at once
# instead of at the next interval (one Redis round trip per queue each time).
IDLE_POLL_S = 5
PUBSUB_POLL_S = 1.0

# Set on the first SIGTERM/SIGINT. Jobs poll it (`workers.main.SHUTDOWN.is_set()`) at their
# checkpoints and requeue themselves rather than hold a terminating pod for up to an hour.
SHUTDOWN = threading.Event()


@dataclass
class WorkerContext:
    """What every job in this process shares: settings, connections and the warm models."""

    settings: Settings
    redis: redis.Redis
    store: AdapterStore | S3AdapterStore
    generator: Generator
    trainer: LoraTrainer
    scorer: Any  # answers probes with candidate adapters (see load_models)


_context: WorkerContext | None = None


def get_context() -> WorkerContext:
    if _context is None:
        raise RuntimeError("no worker context: jobs run inside `seal worker`")
    return _context


def load_models(settings: Settings) -> tuple[Any, Any, Any]:
    """Build the generation engine, the training base and the probe scorer once per process.

    Scoring candidates means decoding with a fresh LoRA each time. vLLM's LoRA kernels on this
    CPU decoded 4 probes x 48 tokens in 35-66 s against 9 s for the base, so on CPU the scorer is
    peft on the trainer's already-loaded weights; on GPU it is the vLLM engine.

    SEAL_WORKER_GENERATOR=hf drops the vLLM engine altogether and generates with transformers on
    the trainer's weights: a CPU vLLM engine costs ~4.5 GB of RAM per process, too much for
    several workers on a small host (the production topology test runs two).
    """
    from workers.seal.train import LoraTrainer

    device = settings.resolved_device().value
    if settings.worker_generator == "hf":
        from workers.seal.hfgen import HFGenerator

        trainer = LoraTrainer(settings.model_path, device=device, dtype=settings.resolved_dtype(),
                              num_threads=settings.train_threads,
                              bf16_autocast=settings.resolved_train_bf16_autocast(),
                              threads=_lent_cores(settings, device, settings.train_threads))
        hf = HFGenerator(trainer)
        return hf, trainer, hf
    from workers.seal.generator import VLLMGenerator

    if device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    generator = VLLMGenerator(
        settings.model_path, dtype=settings.resolved_dtype(), max_model_len=settings.max_model_len,
        max_lora_rank=settings.resolved_max_lora_rank(), max_loras=2,
        # On a GPU worker the engine shares the card with training: leave room for it.
        gpu_memory_utilization=settings.worker_gpu_memory_utilization if device == "cuda" else None,
    )
    threads = settings.train_threads
    if threads is None and device == "cpu":
        # Leave a core to the vLLM engine: with both on every core, OpenMP barriers spin and
        # 3 training steps took 145 s instead of 23 s on 2 cores.
        threads = max(1, (os.cpu_count() or 2) - 1)
    trainer = LoraTrainer(settings.model_path, device=device, dtype=settings.resolved_dtype(), num_threads=threads,
                          bf16_autocast=settings.resolved_train_bf16_autocast(),
                          threads=_lent_cores(settings, device, threads))
    if device == "cpu":
        from workers.seal.hfgen import HFGenerator

        return generator, trainer, HFGenerator(trainer)
    return generator, trainer, generator


def _lent_cores(settings: Settings, device: str, own: int | None) -> Callable[[], int] | None:
    """The threads training may add while the host idles (SEAL_TRAIN_LENT_THREADS), on CPU only."""
    if device != "cpu" or not settings.train_lent_threads:
        return None
    import torch

    from app.cpus import LentCores

    own = own or torch.get_num_threads()
    lent = min(settings.train_lent_threads, max(0, (os.cpu_count() or 1) - own))  # never more threads than cores
    if lent == 0:
        return None
    logger.info("training on %d thread(s), %d more while nothing else on the host uses CPU", own, lent)
    return LentCores(own, lent)


class InProcessWorker(SimpleWorker):
    """SimpleWorker plus a heartbeat thread, so abandoned jobs are detected in seconds, not hours."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_S

    @property
    def dequeue_timeout(self) -> int:
        # RQ runs maintenance (retrying a dead worker's job, our reconcile) only between two
        # dequeues, and an idle worker otherwise blocks ~400 s in each: a SIGKILLed worker's job,
        # or a learn accepted while Redis was down, would wait that long for an idle worker.
        return IDLE_POLL_S

    @property
    def should_run_maintenance_tasks(self) -> bool:
        # Besides RQ's interval: as soon as a running job's heartbeat has lapsed. Its worker died, and
        # waiting out the interval would leave the job up to MAINTENANCE_INTERVAL_S longer unretried
        # (a restarted worker is usually up before the dead one's heartbeat lapses).
        return super().should_run_maintenance_tasks or self._heartbeat_lapsed()

    def _heartbeat_lapsed(self) -> bool:
        """Whether one of this worker's queues holds a started job whose heartbeat has run out."""
        try:
            return any(StartedJobRegistry(queue=q).get_expired_job_ids() for q in self.queues)
        except redis.RedisError:  # Redis away: the dequeue's own retry loop reports it
            return False

    def subscribe(self) -> None:
        """RQ's command channel (stop-job, shutdown), with its thread polling every second, not RQ's 60 s.

        Teardown unsubscribes, then joins that thread. When the thread read the UNSUBSCRIBE reply
        before it was told to stop, redis-py (8.x) had it wait out a whole poll for a resubscription:
        a SIGTERMed worker lingered 60 s after its job (and a rollout's grace period may be shorter).
        """
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=PUBSUB_POLL_S, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_INTERVAL_S):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # noqa: BLE001 - a missed beat must not kill the job
                    logger.warning("heartbeat failed", exc_info=True)

        thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        started = time.perf_counter()
        metrics.WORKER_BUSY.set(1)
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            thread.join(5)
            metrics.WORKER_BUSY.set(0)
            try:
                observe_learn_job(job, time.perf_counter() - started)
                # A tenant's next job waits in the registry until one of its jobs ends: dispatch it.
                dispatch(self.connection, get_context().settings)
            except Exception:  # noqa: BLE001 - an exception here would end the worker (RQ quits on it)
                logger.warning("could not record metrics or dispatch after job %s", job.id, exc_info=True)
        self.set_state("idle")

    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: tell the running job to requeue itself, and take no more work."""
        if not SHUTDOWN.is_set():
            logger.warning("shutdown requested (signal %d): the current job requeues at its next checkpoint", signum)
        SHUTDOWN.set()
        super().request_stop(signum, frame)  # RQ: stop after the current job; a 2nd signal exits at once

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        # Redis may have restarted without our jobs; the registry still has them.
        ctx = get_context()
        try:
            reconcile(self.connection, ctx.settings.sqlalchemy_url, timeout_s=ctx.settings.learn_job_timeout_s,
                      retries=ctx.settings.learn_retries)
            dispatch(self.connection, ctx.settings)  # jobs accepted while Redis was down
        except Exception:  # noqa: BLE001 - maintenance must not stop the worker
            logger.warning("queue reconciliation failed", exc_info=True)
        try:
            purge_expired(db_url=ctx.settings.sqlalchemy_url, store=ctx.store,
                          retention_days=ctx.settings.adapter_retention_days)
            purge_forgotten(db_url=ctx.settings.sqlalchemy_url, store=ctx.store, redis=ctx.redis,
                            retention_days=ctx.settings.adapter_retention_days)
        except Exception:  # noqa: BLE001
            logger.warning("retention purge failed", exc_info=True)


def observe_learn_job(job: Job, seconds: float) -> None:
    """Job duration and per-stage durations of a finished learn attempt, from its registry row."""
    if job.func_name != LEARN_FUNC or not job.args:
        return
    ctx = get_context()
    try:
        with session_scope(ctx.settings.sqlalchemy_url) as session:
            row = session.get(LearnJob, job.args[0])
            if row is None:
                return
            status, job_metrics = row.status.value, dict(row.metrics or {})
    except Exception:  # noqa: BLE001 - metrics must never fail a job
        logger.warning("could not read job %s for metrics", job.id, exc_info=True)
        return
    metrics.LEARN_JOB_SECONDS.labels(status=status).observe(seconds)
    stages = dict(job_metrics.get("stage_seconds") or {})
    documents = job_metrics.get("documents")
    if not stages and isinstance(documents, list):  # a rejected learn keeps stage times per document only
        # (a consolidation's "documents" is a count, not a list)
        for doc in documents:
            for stage, secs in (doc.get("stage_seconds") or {}).items():
                stages[stage] = stages.get(stage, 0.0) + secs
    for stage, secs in stages.items():
        metrics.LEARN_STAGE_SECONDS.labels(stage=stage).observe(secs)


def start_metrics_server(port: int, token: str | None = None) -> Any:
    """Serve this process's Prometheus metrics (job counts, durations) on `port`; 0 disables.

    With `token`, a scrape must send `Authorization: Bearer <token>`, as for the API's /metrics.
    Returns the server (tests stop it), or None.
    """
    if not port:
        return None
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    exporter = make_wsgi_app()

    def app(environ: dict, start_response: Any) -> Any:
        if token is not None and not metrics.bearer_matches(token, environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"metrics need Authorization: Bearer <SEAL_METRICS_TOKEN>\n"]
        return exporter(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a stuck scrape must not keep the worker from exiting

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # one line per scrape every 15 s would drown the job logs

    try:
        httpd = make_server("0.0.0.0", port, app, Server, handler_class=QuietHandler)
    except OSError as exc:  # e.g. a second worker on one host (`seal up --workers 2`)
        logger.warning("worker metrics disabled: port %d: %s", port, exc)
        return None
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    logger.info("worker metrics on :%d/metrics%s", port, " (token required)" if token else "")
    return httpd


def run_worker(settings: Settings, *, queues: list[str], burst: bool = False) -> None:
    """Serve `queues` until SIGTERM (the current job requeues or finishes first) or, in burst mode, until empty."""
    global _context
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    start_metrics_server(settings.worker_metrics_port, token)
    migrate(settings.sqlalchemy_url)
    redis_url, owned = ensure_redis(settings.redis_url, settings.data_dir)
    wait_for_redis(redis_url)
    connection = riding_redis_client(redis_url)
    generator = None
    try:
        generator, trainer, scorer = load_models(settings)
        _context = WorkerContext(settings, connection, open_store(settings), generator, trainer, scorer)
        from workers.learn_core import warm_up  # imports this module: not at the top

        warm_up(_context)
        reconcile(connection, settings.sqlalchemy_url, timeout_s=settings.learn_job_timeout_s,
                  retries=settings.learn_retries)
        worker = InProcessWorker([get_queue(connection, q) for q in queues], connection=connection,
                                 serializer=SERIALIZER, maintenance_interval=MAINTENANCE_INTERVAL_S)
        worker.work(burst=burst, logging_level=settings.log_level, with_scheduler=True)
    finally:
        if hasattr(generator, "close"):
            generator.close()
        if owned is not None:
            owned.stop()
