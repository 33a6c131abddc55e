"""The FastAPI application: the app factory and the lifespan (engine, Redis, adapter events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import catalog, metrics
from app.api import adapters, completions, files, health, learn, models, operations
from app.config import Settings, get_settings
from app.console import install_console
from app.engine import Engine
from app.error_handlers import install_error_handlers
from app.knowledge.catalog import KnowledgeBases
from app.middleware import AuthMiddleware, BodyLimitMiddleware, RequestContextMiddleware, UrlTextMiddleware
from app.redis_server import ensure_redis, redis_client
from app.registry.db import migrate
from app.store import open_store

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="SEAL service", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    metrics.configure_model_labels(max_adapters=settings.metrics_max_adapters, base_model_id=settings.base_model_id)
    for router in (health.router, models.router, completions.router, learn.router, adapters.router, files.router,
                   operations.router):
        app.include_router(router)
    app.include_router(learn.legacy_router)
    install_console(app)
    install_error_handlers(app)
    # The last added runs first: request id and metrics, the URL text, the key, then the body size.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(AuthMiddleware, settings=settings)
    app.add_middleware(UrlTextMiddleware)
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
    app.state.kbs = KnowledgeBases(settings.sqlalchemy_url, settings.router_config(), settings.weights_margin)
    app.state.store = open_store(settings)  # forgetting publishes versions and purges files from the API
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


