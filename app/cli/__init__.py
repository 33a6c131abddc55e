"""The `seal` command line: run the service, and talk to a running one.

Heavy imports (vllm, torch, the app) happen inside commands so `seal --help` stays instant.
"""

from __future__ import annotations

import typer

from app.cli import admin, client, service
from app.cli.eval import eval_app, policy_app

app = typer.Typer(help="SEAL: an OpenAI-compatible LLM service that keeps learning.", no_args_is_help=True)
for commands in (service.app, client.app):
    app.registered_commands += commands.registered_commands
app.add_typer(admin.adapters_app, name="adapters")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(eval_app, name="eval")
app.add_typer(policy_app, name="policy")

__all__ = ["app"]
