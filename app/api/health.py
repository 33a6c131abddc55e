"""Liveness, readiness and Prometheus metrics. Open without API keys, for probes and scrapers;
/metrics asks for SEAL_METRICS_TOKEN once one is set."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.errors import EngineUnavailable, Unauthorized
from app.queue import queue_depths
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import JobStatus

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers, and the engine (once started) has not died."""
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        try:
            await engine.check_health()
        except EngineUnavailable as exc:
            return JSONResponse({"status": "dead", "detail": exc.message}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the engine is up and the adapter table has caught up with the registry."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not engine.ready or not getattr(request.app.state, "adapters_synced", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    try:
        await engine.check_health()
    except EngineUnavailable as exc:
        return JSONResponse({"status": "dead", "detail": exc.message}, status_code=503)
    return JSONResponse({"status": "ready", "model": engine.base_model_id})


def require_metrics_token(request: Request, authorization: str | None = Header(None)) -> None:
    """401 unless the scrape carries SEAL_METRICS_TOKEN (when one is set).

    A separate token rather than an API key: a scraper should not hold a tenant's key, and
    rotating one should not break the other.
    """
    settings = getattr(request.app.state, "settings", None)
    token = settings.metrics_token if settings is not None else None
    if token is not None and not metrics.bearer_matches(token.get_secret_value(), authorization):
        raise Unauthorized("Metrics need 'Authorization: Bearer <SEAL_METRICS_TOKEN>'.")


@router.get("/metrics", dependencies=[Depends(require_metrics_token)])
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text exposition; queue depth and job counts are read at scrape time."""
    settings = getattr(request.app.state, "settings", None)
    if settings is not None:
        try:
            counts = await asyncio.to_thread(_job_counts, settings.sqlalchemy_url)
            for status in JobStatus:
                metrics.LEARN_JOBS_BY_STATUS.labels(status=status.value).set(counts.get(status, 0))
        except SQLAlchemyError:
            pass  # nor because the database is
    redis = getattr(request.app.state, "redis", None)
    if redis is not None:
        try:
            for queue, depth in (await asyncio.to_thread(queue_depths, redis)).items():
                metrics.QUEUE_DEPTH.labels(queue=queue).set(depth)
        except RedisError:
            pass  # a scrape must not fail because Redis is briefly away
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _job_counts(db_url: str) -> dict[JobStatus, int]:
    with session_scope(db_url) as session:
        return queries.job_counts(session=session)
