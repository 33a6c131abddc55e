"""Running the service: bootstrap, serve, worker, scheduler and the all-in-one `up`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import check_bind, console, ensure_model, settings_from_env, setup_logging

if TYPE_CHECKING:
    from app.config import Settings

logger = logging.getLogger(__name__)
app = typer.Typer()


@app.command()
def bootstrap() -> None:
    """Prepare the data dir: bundled model and database schema (idempotent)."""
    settings = settings_from_env()
    setup_logging(settings)
    ensure_model(settings)
    from app.registry.db import migrate

    migrate(settings.sqlalchemy_url)
    console.print(f"[green]ready[/green]: model {settings.model_path}, database {settings.sqlalchemy_url}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (SEAL_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (SEAL_PORT).")] = None,
) -> None:
    """Run the API server (one vLLM engine in this process)."""
    import uvicorn

    settings = settings_from_env(host=host, port=port)
    setup_logging(settings)
    check_bind(settings)
    ensure_model(settings)
    from app.main import create_app

    application = create_app(settings)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal under the handler it
    # found at start. With the default handler that kills the process (exit -15) after a clean
    # drain; this one makes a drained shutdown exit 0, as orchestrators and supervisors expect.
    signal.signal(signal.SIGTERM, _exit_after_drain)
    uvicorn.run(application, host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=30, timeout_keep_alive=30)


def _exit_after_drain(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@app.command()
def worker(
    queues: Annotated[list[str] | None, typer.Option("--queue", "-q", help="Queues to serve.")] = None,
    burst: Annotated[bool, typer.Option(help="Exit when the queues are empty.")] = False,
) -> None:
    """Run a learn worker (warm vLLM + peft models, jobs executed in-process)."""
    settings = settings_from_env()
    setup_logging(settings)
    ensure_model(settings)
    from workers.main import run_worker

    run_worker(settings, queues=queues or ["learn"], burst=burst)


@app.command()
def scheduler() -> None:
    """Run RQ's cron scheduler for a cron-style SEAL_CONSOLIDATE_EVERY. Run exactly one per deployment."""
    settings = settings_from_env()
    setup_logging(settings)
    if not settings.consolidate_every or settings.consolidate_after_documents is not None:
        console.print("SEAL_CONSOLIDATE_EVERY is not a cron expression: nothing to schedule "
                      "(a document count is handled by the workers themselves).")
        raise typer.Exit(2)
    from rq.cron import CronScheduler

    from app.queue import LEARN_QUEUE
    from app.redis_server import ensure_redis, riding_redis_client, wait_for_redis
    from workers.jobs import consolidate_due

    redis_url, _ = ensure_redis(settings.redis_url, settings.data_dir)
    wait_for_redis(redis_url)
    cron = CronScheduler(connection=riding_redis_client(redis_url), logging_level=settings.log_level)
    cron.register(consolidate_due, queue_name=LEARN_QUEUE, cron=settings.consolidate_every, job_timeout=600,
                  name="consolidate-due")
    cron.start()


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="API port (SEAL_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    restart_delay: Annotated[float, typer.Option(
        help="Seconds before a child that died is restarted; doubled for each crash soon after a start.")] = 1.0,
) -> None:
    """All-in-one: embedded Valkey + API + worker(s), supervised in the foreground.

    A child that dies (Valkey, the API, a worker) is restarted with exponential backoff while the
    others keep running; only Ctrl-C/SIGTERM stops the service.
    """
    settings = settings_from_env(port=port)
    setup_logging(settings)
    check_bind(settings)
    ensure_model(settings)
    from app.process import Supervisor, kill_group, spawn
    from app.redis_server import EmbeddedValkey, find_running
    from app.registry.db import migrate

    migrate(settings.sqlalchemy_url)
    supervisor = Supervisor(restart_delay=restart_delay)
    valkey: EmbeddedValkey | None = None
    redis_url = settings.redis_url or find_running(settings.data_dir)
    if redis_url is None:
        # Ours to keep alive. A restart reuses the port (the children's REDIS_URL stays valid)
        # and the data dir, whose append-only file brings the queue back.
        valkey = EmbeddedValkey(settings.data_dir)
        redis_url = valkey.url

        def start_valkey() -> subprocess.Popen:
            try:
                valkey.start()
            except Exception:
                if valkey.process is not None:
                    kill_group(valkey.process)  # started but never answered: do not leave it holding the port
                raise
            return valkey.process

        supervisor.add("valkey", start_valkey, last=True)
    env = {**os.environ, "REDIS_URL": redis_url, "SEAL_PORT": str(settings.port)}
    api_env, worker_envs = _place_cpu_engines(settings, env, workers)
    seal = [sys.executable, "-m", "app.cli"]
    supervisor.add("api", lambda: spawn([*seal, "serve"], api_env))
    for i, worker_env in enumerate(worker_envs):
        supervisor.add(f"worker-{i + 1}", lambda e=worker_env: spawn([*seal, "worker"], e))
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    supervisor.start_all()
    console.print(f"[green]SEAL up[/green]: API on {settings.client_url}, {workers} worker(s), Redis {redis_url}")
    supervisor.run()
    if valkey is not None:
        valkey.state_file.unlink(missing_ok=True)


def _place_cpu_engines(settings: Settings, env: dict[str, str], workers: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Each child's environment: on CPU, disjoint cores for the API's and each worker's vLLM engine.

    Left alone on a GPU (vLLM reads the variable only on its CPU backend) and when the operator
    set VLLM_CPU_OMP_THREADS_BIND.
    """
    from app.config import Device
    from app.cpus import BIND_ENV, LENT_THREADS_ENV, TRAIN_THREADS_ENV, place_engines

    if settings.resolved_device() is not Device.cpu:
        return env, [env] * workers
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    api_env, worker_envs = place_engines(env, cores, workers, train_threads=settings.train_threads,
                                         lent_threads=settings.train_lent_threads)
    placed = [f"api engine on cores {api_env.get(BIND_ENV, 'auto')}"]
    placed += [f"worker-{i + 1} engine on cores {e.get(BIND_ENV, 'auto')}, "
               f"training {e.get(TRAIN_THREADS_ENV, settings.train_threads or 'default')} threads"
               f" (+{e.get(LENT_THREADS_ENV, settings.train_lent_threads or 0)} while the host idles)"
               for i, e in enumerate(worker_envs)]
    logger.info("CPU placement: %s", "; ".join(placed))
    return api_env, worker_envs
