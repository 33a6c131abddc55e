"""Talking to a running server: ask, models, learn, jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from app.cli.common import check_response, console, err, http_client
from app.registry.models import JobStatus

app = typer.Typer()


@app.command()
def ask(
    question: str,
    model: Annotated[str | None, typer.Option(help="Base model id, adapter name, or name@vN.")] = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
) -> None:
    """Ask one question through the chat completions API."""
    with http_client() as client:
        if model is None:
            model = check_response(client.get("/v1/models"))["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": question}],
                "max_tokens": max_tokens, "temperature": temperature}
        reply = check_response(client.post("/v1/chat/completions", json=body))
    console.print(reply["choices"][0]["message"]["content"])


@app.command()
def models() -> None:
    """List the servable models."""
    with http_client() as client:
        data = check_response(client.get("/v1/models"))["data"]
    table = Table("id", "version", "owner")
    for card in data:
        table.add_row(card["id"], str(card.get("version") or "-"), card["owned_by"])
    console.print(table)


@app.command()
def learn(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .txt, .md or .pdf document, or .json/.jsonl with {title, text|context, probes|questions}.")],
    adapter: Annotated[str, typer.Option(help="Adapter to learn into.")],
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
    title: Annotated[str | None, typer.Option(help="Title for a .txt, .md or .pdf document (default: its name).")] = None,
    layout: Annotated[str | None, typer.Option(help="For a new adapter: shards (a knowledge base, the default) or stream.")] = None,
    seed: Annotated[int | None, typer.Option(help="Draw the learn's anchors and gate sample from this seed (the "
                                                  "API's options.seed), so a rerun learns the same way.")] = None,
) -> None:
    """Submit a document to learn into an adapter."""
    from app.learn_files import UnreadableFile, read_documents

    try:
        documents = read_documents(file, title=title)
    except (UnreadableFile, ValueError, KeyError, TypeError) as exc:  # json's errors are ValueErrors
        err.print(f"[red]error:[/red] cannot read {file}: {exc}")
        raise typer.Exit(2) from exc
    body: dict = {"adapter": adapter, "documents": documents}
    options = {**({"layout": layout} if layout else {}), **({"seed": seed} if seed is not None else {})}
    if options:
        body["options"] = options
    submit_job("/v1/learn", body, label="job", wait=wait)


def submit_job(path: str, body: dict | None, *, label: str, wait: bool) -> None:
    """POST a learn or consolidation; with `wait`, follow it and exit 0 only if it published."""
    with http_client() as client:
        job = check_response(client.post(path, json=body))
        console.print(f"{label} [bold]{job['id']}[/bold] {job['status']}")
        if wait:
            job = follow_job(client, job["id"])
    if wait:
        print_job_metrics(job)
        raise typer.Exit(0 if job["status"] == "published" else 1)


def follow_job(client, job_id: str) -> dict:  # noqa: ANN001
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("queued", total=1.0)
        while True:
            job = check_response(client.get(f"/v1/learn/{job_id}"))
            progress.update(task, completed=job["progress"], description=job["stage"] or job["status"])
            if job["status"] in ("published", "rejected", "failed", "cancelled"):
                return job
            time.sleep(1)


def print_job_metrics(job: dict) -> None:
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
    with http_client() as client:
        data = check_response(client.get("/v1/learn", params=params))
    table = Table("id", "adapter", "status", "stage", "progress", "version", "created")
    for j in data["data"]:
        table.add_row(j["id"], j["adapter"], j["status"], j["stage"] or "-", f"{j['progress']:.0%}",
                      str(j["version"] or "-"), j["created_at"])
    console.print(table)
    console.print(f"{len(data['data'])} of {data['total']}")


