"""Plain ASGI middleware (no body buffering beyond the size limit): request ids and metrics,
authentication before the body is read, and the body size limit."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from app import metrics
from app.auth import authenticate
from app.config import Settings
from app.console import is_console_path
from app.errors import Unauthorized, error_body
from app.logs import request_id_var


class BodyLimitMiddleware:
    """Refuse oversized bodies with 413 before they are buffered and parsed.

    A declared Content-Length is checked up front. A chunked body declares nothing, and an
    exception raised while FastAPI reads the body becomes a 400, so such a body is read here, up
    to the limit, and replayed to the app.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                return await self._refuse(send, f"Request body of {int(declared)} bytes exceeds the limit of "
                                                f"{self.max_bytes} bytes.")
            # The server holds the client to its Content-Length, so the body cannot outgrow it.
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(send, f"Request body exceeds the limit of {self.max_bytes} bytes.")
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for http.disconnect, as with_cancellation expects
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Any, message: str) -> None:
        await _send_json(send, 413, error_body(message, "invalid_request_error", code="request_too_large"))


class UrlTextMiddleware:
    """Refuse a path or query string holding NUL or bytes that are not UTF-8 (400).

    They reach registry lookups (adapter names, job ids, filters), and PostgreSQL refuses NUL in
    text: left alone, such a URL is a 500 on the production database and a 404 on SQLite.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            query = scope.get("query_string") or b""
            try:
                text = unquote_to_bytes(raw).decode("utf-8") + unquote_to_bytes(query.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                text = "\x00"
            if "\x00" in text:
                return await _send_json(send, 400, error_body(
                    "The URL's path and query must be UTF-8 text without NUL characters.", "invalid_request_error",
                    code="invalid_url"))
        return await self.app(scope, receive, send)


class AuthMiddleware:
    """Authenticate before anything reads the body, so a caller without a key learns nothing about parsing.

    The Principal goes on the request scope's state, where `app.api.deps.get_principal` reads it;
    scopes (infer, learn, admin) are still checked per route.
    """

    # Probes, scrapes, the API docs and the console page (app/console: it holds no data) carry no key.
    OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
                            "/openapi.json"})

    def __init__(self, app: Any, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.OPEN_PATHS or is_console_path(scope.get("path", "")):
            return await self.app(scope, receive, send)
        # Starlette decodes header values as latin-1 too; any byte sequence is a (wrong) key, never an error.
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1") or None
        try:
            principal = authenticate(self.settings, header)
        except Unauthorized as exc:
            return await _send_json(send, exc.status_code, error_body(exc.message, exc.type, code=exc.code),
                                    headers=[(b"www-authenticate", b"Bearer")])
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _send_json(send: Any, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:

    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


# A request id is echoed in a response header and written to logs: only short printable ASCII, no spaces.
_SAFE_REQUEST_ID = re.compile(rb"[!-~]{1,64}")


def _request_id(headers: dict[bytes, bytes]) -> str:
    """The caller's X-Request-Id when it is safe to echo and log, else a fresh one."""
    given = headers.get(b"x-request-id", b"")
    return given.decode("ascii") if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Request id (header + log context) and request metrics, as plain ASGI (no body buffering)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = _request_id(headers)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            if path.startswith("/v1"):
                model = scope.get("state", {}).get("model") if status < 400 else None
                label = _metric_model(model)
                metrics.REQUESTS.labels(route=path, model=label, status=str(status)).inc()
                metrics.REQUEST_SECONDS.labels(route=path, model=label).observe(time.perf_counter() - started)
            request_id_var.reset(token)


def _metric_model(model: str | None) -> str:
    # `model` is the adapter key the request was routed to (app/serving.py), or the base model id.
    # Label by adapter, not by pinned version, and only the busiest adapters: see
    # metrics.AdapterLabels. This is the one place a request's traffic is counted for that choice.
    return metrics.model_label(model.split("@v")[0] if model else None)
