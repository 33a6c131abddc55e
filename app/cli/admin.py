"""Operating on adapters and keys: list, show, documents, forget, rollback, consolidate, retire, import;
keys create."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from app.cli.client import submit_job
from app.cli.common import check_response, console, err, http_client, settings_from_env

adapters_app = typer.Typer(help="Inspect and manage adapters.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)


@adapters_app.command("list")
def adapters_list() -> None:
    """List adapters and their current versions."""
    with http_client() as client:
        data = check_response(client.get("/v1/adapters"))["data"]
    table = Table("name", "current", "versions", "tenant", "retired")
    for a in data:
        table.add_row(a["name"], str(a["current_version"] or "-"), str(len(a["versions"])), a["tenant"] or "-",
                      "yes" if a["retired"] else "")
    console.print(table)


@adapters_app.command("show")
def adapters_show(name: str) -> None:
    """Show one adapter's versions, lineage and metrics."""
    with http_client() as client:
        a = check_response(client.get(f"/v1/adapters/{name}"))
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


@adapters_app.command("documents")
def adapters_documents(
    name: str,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Documents per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Documents to skip.")] = 0,
) -> None:
    """List a knowledge base's documents: state, what answers them, shard, accuracy."""
    with http_client() as client:
        page = check_response(client.get(f"/v1/adapters/{name}/documents", params={"limit": limit, "offset": offset}))
    table = Table("id", "title", "state", "answered from", "shard", "from weights", "read in context", "probes",
                  "job")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    for d in page["data"]:
        table.add_row(str(d["id"]), (d["title"] or "-")[:40], d["state"], d["answered_from"], d["shard"] or "-",
                      pct(d["accuracy_weights"]), pct(d["accuracy_context"]), d["probe_source"] or "-",
                      d["job_id"][:8])
    console.print(table)
    console.print(f"{offset + 1}-{offset + len(page['data'])} of {page['total']}" if page["data"]
                  else f"none of {page['total']} from {offset}")


@adapters_app.command("forget")
def adapters_forget(
    name: str,
    document_id: int,
    purge: Annotated[bool, typer.Option(help="Delete its text, probes and shard files now (no rollback can "
                                             "bring it back), not after SEAL_ADAPTER_RETENTION_DAYS.")] = False,
) -> None:
    """Forget a knowledge base's document: a new version without its shard, out of the router at once."""
    with http_client() as client:
        done = check_response(client.delete(f"/v1/adapters/{name}/documents/{document_id}",
                                            params={"purge": str(purge).lower()}))
    where = f"v{done['version']} drops {done['shard']}" if done["version"] else "it was in no shard"
    console.print(f"forgot document {document_id} of {name} ({where})"
                  + (f"; documents {done['read_in_context']} are read in context now" if done["read_in_context"]
                     else "") + ("; purged" if done["purged"] else ""))


@adapters_app.command("rollback")
def adapters_rollback(name: str, version: int) -> None:
    """Serve an earlier version again."""
    with http_client() as client:
        a = check_response(client.post(f"/v1/adapters/{name}/rollback", json={"version": version}))
    console.print(f"{a['name']} now serves v{a['current_version']}")


@adapters_app.command("consolidate")
def adapters_consolidate(
    name: str,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
) -> None:
    """Retrain an adapter from the base weights on everything it absorbed ("sleep"); gated like a learn."""
    submit_job(f"/v1/adapters/{name}/consolidate", None, label="consolidation job", wait=wait)


@adapters_app.command("retire")
def adapters_retire(name: str) -> None:
    """Stop serving an adapter (files are kept for SEAL_ADAPTER_RETENTION_DAYS)."""
    with http_client() as client:
        check_response(client.delete(f"/v1/adapters/{name}"))
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

    settings = settings_from_env()
    if not re.fullmatch(NAME, name):
        err.print(f"[red]error:[/red] invalid adapter name {name!r}: lowercase letters, digits, '.', '_' and '-', "
                  "starting with a letter or digit, at most 63 characters")
        raise typer.Exit(2)
    if shared and tenant:
        err.print("[red]error:[/red] --shared is for operator (tenantless) adapters; a tenant's adapter is its own")
        raise typer.Exit(2)
    rank, limit = _adapter_rank(directory), settings.resolved_max_lora_rank()
    if rank is None or rank > limit:
        err.print(f"[red]error:[/red] {directory} is not a PEFT LoRA directory with rank <= SEAL_MAX_LORA_RANK "
                  f"({limit}); the servers could not load it")
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


