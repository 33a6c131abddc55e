"""What every `seal` command shares: the consoles, settings and logging, and the HTTP client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def settings_from_env(**overrides: Any):  # noqa: ANN202
    from app.config import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def setup_logging(settings) -> None:  # noqa: ANN001
    from app.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def check_bind(settings) -> None:  # noqa: ANN001
    try:
        settings.check_bind_address()
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def ensure_model(settings) -> None:  # noqa: ANN001
    if settings.model is None:
        from app.bootstrap import ensure_default_model

        ensure_default_model(Path(settings.model_path))


def http_client():  # noqa: ANN202
    import httpx

    settings = settings_from_env()
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.Client(base_url=settings.client_url, headers=headers, timeout=120)


def check_response(response) -> Any:  # noqa: ANN001
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        err.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    return response.json()
