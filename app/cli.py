"""The `seal` command line: run the service, and talk to a running one.

Heavy imports (vllm, torch, the app) happen inside commands so `seal --help` stays instant.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.cli_eval import eval_app, policy_app
from app.registry.models import JobStatus

app = typer.Typer(help="SEAL: an OpenAI-compatible LLM service that keeps learning.", no_args_is_help=True)
adapters_app = typer.Typer(help="Inspect and manage adapters.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")
app.add_typer(keys_app, name="keys")
app.add_typer(eval_app, name="eval")
app.add_typer(policy_app, name="policy")
console = Console()
err = Console(stderr=True)


def _settings(**overrides: Any):  # noqa: ANN202
    from app.config import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _setup_logging(settings) -> None:  # noqa: ANN001
    from app.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def _check_bind(settings) -> None:  # noqa: ANN001
    try:
        settings.check_bind_address()
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _ensure_model(settings) -> None:  # noqa: ANN001
    if settings.model is None:
        from app.bootstrap import ensure_default_model

        ensure_default_model(Path(settings.model_path))


# --- running the service ------------------------------------------------------------------------


@app.command()
def bootstrap() -> None:
    """Prepare the data dir: bundled model and database schema (idempotent)."""
    settings = _settings()
    _setup_logging(settings)
    _ensure_model(settings)
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

    settings = _settings(host=host, port=port)
    _setup_logging(settings)
    _check_bind(settings)
    _ensure_model(settings)
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
    settings = _settings()
    _setup_logging(settings)
    _ensure_model(settings)
    from workers.main import run_worker

    run_worker(settings, queues=queues or ["learn"], burst=burst)


@app.command()
def scheduler() -> None:
    """Run RQ's cron scheduler for a cron-style SEAL_CONSOLIDATE_EVERY. Run exactly one per deployment."""
    settings = _settings()
    _setup_logging(settings)
    if not settings.consolidate_every or settings.consolidate_after_documents is not None:
        console.print("SEAL_CONSOLIDATE_EVERY is not a cron expression: nothing to schedule "
                      "(a document count is handled by the workers themselves).")
        raise typer.Exit(2)
    from rq.cron import CronScheduler

    from app.queue import LEARN_QUEUE
    from app.redis_server import ensure_redis, redis_client, wait_for_redis
    from workers.jobs import consolidate_due

    redis_url, _ = ensure_redis(settings.redis_url, settings.data_dir)
    wait_for_redis(redis_url)
    cron = CronScheduler(connection=redis_client(redis_url), logging_level=settings.log_level)
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
    settings = _settings(port=port)
    _setup_logging(settings)
    _check_bind(settings)
    _ensure_model(settings)
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
    seal = [sys.executable, "-m", "app.cli"]
    supervisor.add("api", lambda: spawn([*seal, "serve"], env))
    for i in range(workers):
        supervisor.add(f"worker-{i + 1}", lambda: spawn([*seal, "worker"], env))
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    supervisor.start_all()
    console.print(f"[green]SEAL up[/green]: API on {settings.client_url}, {workers} worker(s), Redis {redis_url}")
    supervisor.run()
    if valkey is not None:
        valkey.state_file.unlink(missing_ok=True)


# --- client commands ----------------------------------------------------------------------------


def _client():  # noqa: ANN202
    import httpx

    settings = _settings()
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.Client(base_url=settings.client_url, headers=headers, timeout=120)


def _check(response) -> Any:  # noqa: ANN001
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        err.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    return response.json()


@app.command()
def ask(
    question: str,
    model: Annotated[str | None, typer.Option(help="Base model id, adapter name, or name@vN.")] = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
) -> None:
    """Ask one question through the chat completions API."""
    with _client() as client:
        if model is None:
            model = _check(client.get("/v1/models"))["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": question}],
                "max_tokens": max_tokens, "temperature": temperature}
        reply = _check(client.post("/v1/chat/completions", json=body))
    console.print(reply["choices"][0]["message"]["content"])


@app.command()
def models() -> None:
    """List the servable models."""
    with _client() as client:
        data = _check(client.get("/v1/models"))["data"]
    table = Table("id", "version", "owner")
    for card in data:
        table.add_row(card["id"], str(card.get("version") or "-"), card["owned_by"])
    console.print(table)


@app.command()
def learn(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .txt document, or .json/.jsonl with {title, text|context, probes|questions}.")],
    adapter: Annotated[str, typer.Option(help="Adapter to learn into.")],
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
    title: Annotated[str | None, typer.Option(help="Title for a .txt document.")] = None,
) -> None:
    """Submit a document to learn into an adapter."""
    from app.learn_files import read_documents

    body = {"adapter": adapter, "documents": read_documents(file, title=title)}
    with _client() as client:
        job = _check(client.post("/v1/learn", json=body))
        console.print(f"job [bold]{job['id']}[/bold] {job['status']}")
        if wait:
            job = _follow_job(client, job["id"])
    if wait:
        _print_job_metrics(job)
        raise typer.Exit(0 if job["status"] == "published" else 1)


def _follow_job(client, job_id: str) -> dict:  # noqa: ANN001
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("queued", total=1.0)
        while True:
            job = _check(client.get(f"/v1/learn/{job_id}"))
            progress.update(task, completed=job["progress"], description=job["stage"] or job["status"])
            if job["status"] in ("published", "rejected", "failed", "cancelled"):
                return job
            time.sleep(1)


def _print_job_metrics(job: dict) -> None:
    colour = "green" if job["status"] == "published" else "red"
    console.print(f"[{colour}]{job['status']}[/{colour}] {job['adapter']}" +
                  (f"@v{job['version']}" if job.get("version") else ""))
    if job.get("error"):
        console.print(f"error: {job['error']}")
    metrics = job.get("metrics") or {}
    table = Table("metric", "value")
    for key in ("accuracy_before", "accuracy_after", "train_loss", "probes", "self_generated_probes"):
        if key in metrics:
            table.add_row(key, json.dumps(metrics[key]))
    for stage, seconds in (metrics.get("stage_seconds") or {}).items():
        table.add_row(f"{stage} (s)", f"{seconds:.1f}")
    console.print(table)


@app.command()
def jobs(
    adapter: Annotated[str | None, typer.Option()] = None,
    status: Annotated[JobStatus | None, typer.Option()] = None,
    limit: int = 20,
) -> None:
    """List learn jobs, newest first."""
    params = {"limit": limit, **({"adapter": adapter} if adapter else {}), **({"status": status.value} if status else {})}
    with _client() as client:
        data = _check(client.get("/v1/learn", params=params))
    table = Table("id", "adapter", "status", "stage", "progress", "version", "created")
    for j in data["data"]:
        table.add_row(j["id"], j["adapter"], j["status"], j["stage"] or "-", f"{j['progress']:.0%}",
                      str(j["version"] or "-"), j["created_at"])
    console.print(table)
    console.print(f"{len(data['data'])} of {data['total']}")


@adapters_app.command("list")
def adapters_list() -> None:
    """List adapters and their current versions."""
    with _client() as client:
        data = _check(client.get("/v1/adapters"))["data"]
    table = Table("name", "current", "versions", "tenant", "retired")
    for a in data:
        table.add_row(a["name"], str(a["current_version"] or "-"), str(len(a["versions"])), a["tenant"] or "-",
                      "yes" if a["retired"] else "")
    console.print(table)


@adapters_app.command("show")
def adapters_show(name: str) -> None:
    """Show one adapter's versions, lineage and metrics."""
    with _client() as client:
        a = _check(client.get(f"/v1/adapters/{name}"))
    table = Table("version", "status", "source", "parent", "documents", "accuracy after", "gate", "created")
    for v in a["versions"]:
        m = v["metrics"]
        docs = m.get("documents")
        titles = ", ".join(d.get("title") or "?" for d in docs) if isinstance(docs, list) else str(docs or "-")
        gate = m.get("rejected_because") or (["passed"] if v["status"] == "published" else [])
        acc = m.get("accuracy_after")
        table.add_row(str(v["version"]), v["status"] + (" (purged)" if v.get("files_purged") else ""), v["source"],
                      str(v["parent_version"] or "-"), titles[:60], "-" if acc is None else f"{acc:.0%}",
                      "; ".join(gate)[:60], v["created_at"])
    console.print(f"[bold]{a['name']}[/bold] current v{a['current_version']}")
    console.print(table)


@adapters_app.command("rollback")
def adapters_rollback(name: str, version: int) -> None:
    """Serve an earlier version again."""
    with _client() as client:
        a = _check(client.post(f"/v1/adapters/{name}/rollback", json={"version": version}))
    console.print(f"{a['name']} now serves v{a['current_version']}")


@adapters_app.command("consolidate")
def adapters_consolidate(
    name: str,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
) -> None:
    """Retrain an adapter from the base weights on everything it absorbed ("sleep"); gated like a learn."""
    with _client() as client:
        job = _check(client.post(f"/v1/adapters/{name}/consolidate"))
        console.print(f"consolidation job [bold]{job['id']}[/bold] {job['status']}")
        if wait:
            job = _follow_job(client, job["id"])
    if wait:
        _print_job_metrics(job)
        raise typer.Exit(0 if job["status"] == "published" else 1)


@adapters_app.command("retire")
def adapters_retire(name: str) -> None:
    """Stop serving an adapter (files are kept for SEAL_ADAPTER_RETENTION_DAYS)."""
    with _client() as client:
        _check(client.delete(f"/v1/adapters/{name}"))
    console.print(f"{name} retired")


@adapters_app.command("import")
def adapters_import(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A PEFT adapter directory.")],
    name: Annotated[str, typer.Option(help="Adapter name to publish it under (in the tenant's namespace).")],
    tenant: Annotated[str | None, typer.Option(help="Owning tenant. Without it the adapter is the operator's: "
                                                    "admins only, unless --shared.")] = None,
    shared: Annotated[bool, typer.Option(help="A tenantless adapter every tenant may use for inference.")] = False,
) -> None:
    """Publish a PEFT adapter directory as the next version of NAME (running servers hot-swap)."""
    import re

    from app.publishing import AdapterOwnedElsewhere, publish_version
    from app.redis_server import ensure_redis, redis_client
    from app.registry.db import migrate
    from app.store import open_store
    from app.tenancy import NAME, adapter_key

    settings = _settings()
    if not re.fullmatch(NAME, name):
        err.print(f"[red]error:[/red] invalid adapter name {name!r}: lowercase letters, digits, '.', '_' and '-', "
                  "starting with a letter or digit, at most 63 characters")
        raise typer.Exit(2)
    if shared and tenant:
        err.print("[red]error:[/red] --shared is for operator (tenantless) adapters; a tenant's adapter is its own")
        raise typer.Exit(2)
    rank = _adapter_rank(directory)
    if rank is None or rank > settings.max_lora_rank:
        err.print(f"[red]error:[/red] {directory} is not a PEFT LoRA directory with rank <= SEAL_MAX_LORA_RANK "
                  f"({settings.max_lora_rank}); the servers could not load it")
        raise typer.Exit(2)
    migrate(settings.sqlalchemy_url)
    redis_url, owned = ensure_redis(settings.redis_url, settings.data_dir)
    key = adapter_key(tenant, name)
    try:
        version, path = publish_version(
            db_url=settings.sqlalchemy_url, store=open_store(settings), redis=redis_client(redis_url),
            adapter=key, tenant=tenant, shared=shared, src_dir=directory.resolve(),
            metadata={"source": "import", "imported_from": str(directory.resolve())}, source="import",
        )
    except AdapterOwnedElsewhere:
        err.print(f"[red]error:[/red] the adapter {key!r} exists with another owner")
        raise typer.Exit(1) from None
    finally:
        if owned is not None:
            owned.stop()
    console.print(f"published {key}@v{version} at {path}")


def _adapter_rank(directory: Path) -> int | None:
    try:
        config = json.loads((directory / "adapter_config.json").read_text())
        return int(config["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: infer,learn,admin.")] = "infer,learn",
) -> None:
    """Generate an API key; prints the key once and the SEAL_API_KEYS entry holding only its hash."""
    from app.auth import generate_key
    from app.config import Scope

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    for s in wanted:
        Scope(s)
    key, digest = generate_key()
    console.print(f"key (shown once): [bold]{key}[/bold]")
    console.print("SEAL_API_KEYS entry:")
    console.print(json.dumps({"tenant": tenant, "scopes": wanted, "sha256": digest}), soft_wrap=True)


if __name__ == "__main__":
    app()
