"""The FastAPI application: lifespan wiring, error rendering and middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import catalog, metrics
from app.api import adapters, completions, health, learn, models
from app.auth import authenticate
from app.config import Settings, get_settings
from app.engine import Engine
from app.errors import SealError, Unauthorized, error_body
from app.logs import request_id_var
from app.redis_server import ensure_redis, redis_client
from app.registry.db import migrate

logger = logging.getLogger(__name__)

# A validation error echoes the offending input; a 10 MB prompt would come back whole.
MAX_ECHOED_INPUT_CHARS = 200


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="SEAL service", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    metrics.configure_model_labels(max_adapters=settings.metrics_max_adapters, base_model_id=settings.base_model_id)
    for router in (health.router, models.router, completions.router, learn.router, adapters.router):
        app.include_router(router)
    app.include_router(learn.legacy_router)
    install_error_handlers(app)
    # The last added runs first: request id and metrics, then the key, then the body size.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(AuthMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    await asyncio.to_thread(migrate, settings.sqlalchemy_url)
    redis_url, owned_redis = ensure_redis(settings.redis_url, settings.data_dir)
    app.state.redis_url = redis_url
    app.state.redis = redis_client(redis_url)
    app.state.adapters_synced = False
    try:
        async with Engine.build(settings) as engine:
            app.state.engine = engine
            listener = asyncio.create_task(catalog.follow_events(app, redis_url), name="adapter-events")
            try:
                yield
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
                app.state.engine = None
    finally:
        app.state.redis.close()
        if owned_redis is not None:
            owned_redis.stop()


# --- errors ---------------------------------------------------------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape; nothing a client sends produces a bare 500."""

    @app.exception_handler(SealError)
    async def seal_error(_: Request, exc: SealError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.type, param=exc.param, code=exc.code), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        # The first element says where the field was (body, query, path, header); OpenAI's param is the field.
        loc = [str(p) for p in first.get("loc", ())[1:]]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            param = None  # the location is a byte offset, not a field
            message = f"Malformed JSON body: {first.get('ctx', {}).get('error', 'could not parse')}"
        else:
            message = f"{param + ': ' if param else ''}{first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message[:MAX_ECHOED_INPUT_CHARS * 2], "invalid_request_error", param=param),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unhandled(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body("Internal server error.", "internal_error"), status_code=500)


# --- middleware -------------------------------------------------------------------------------------


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


class AuthMiddleware:
    """Authenticate before anything reads the body, so a caller without a key learns nothing about parsing.

    The Principal goes on the request scope's state, where `app.api.deps.get_principal` reads it;
    scopes (infer, learn, admin) are still checked per route.
    """

    # Probes, scrapes and the API docs carry no key.
    OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
                            "/openapi.json"})

    def __init__(self, app: Any, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.OPEN_PATHS:
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
    import json

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
    # Label by adapter name, not by pinned version, and only the busiest adapters by name: see
    # metrics.AdapterLabels. This is the one place a request's traffic is counted for that choice.
    return metrics.model_label(model.split("@v")[0] if model else None)
