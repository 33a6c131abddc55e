"""/v1/learn: submit knowledge, follow and cancel learn jobs."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from app.api.deps import EngineDep, LearnPrincipal, RedisDep, SessionDep, SettingsDep
from app.api.learn_schemas import JobEventOut, LearnJobList, LearnJobOut, LearnRequest
from app.api.limits import MAX_INT32
from app.errors import RateLimited
from app.learning import cancel_job, get_visible_job, job_out, submit_learn
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import JobStatus
from app.tenancy import key_for

router = APIRouter(prefix="/v1/learn", tags=["learn"])
# The design card names the route `/learn`; keep it as an alias of /v1/learn.
legacy_router = APIRouter(prefix="/learn", tags=["learn"], include_in_schema=False)

EVENT_POLL_S = 1.0
# Per API process: open SSE streams one tenant may hold (each polls the registry every EVENT_POLL_S).
MAX_EVENT_STREAMS_PER_TENANT = 8
_open_streams: collections.Counter[str] = collections.Counter()


@router.post("", status_code=202, response_model=LearnJobOut)
@legacy_router.post("", status_code=202, response_model=LearnJobOut)
def create_learn_job(
    body: LearnRequest, request: Request, response: Response, session: SessionDep, redis: RedisDep,
    settings: SettingsDep, principal: LearnPrincipal, engine: EngineDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> LearnJobOut:
    """Accept documents to learn into an adapter; 202 with the job once they are durably recorded.

    Into a knowledge base, the documents are answerable (in context) from the 202 on."""
    job, created = submit_learn(session=session, redis=redis, settings=settings, principal=principal, body=body,
                                idempotency_key=idempotency_key, count_tokens=engine.count_tokens,
                                kbs=getattr(request.app.state, "kbs", None))
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/learn/{job.id}"
    session.refresh(job)
    return job_out(job, principal)


@router.get("", response_model=LearnJobList)
def list_learn_jobs(
    session: SessionDep, principal: LearnPrincipal,
    adapter: str | None = None, status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20, offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> LearnJobList:
    """List learn jobs, newest first, filtered by adapter and status."""
    tenant = None if principal.is_admin else principal.tenant
    key = key_for(principal, adapter) if adapter is not None else None
    if adapter is not None and key is None:  # a name outside the caller's namespace matches none of its jobs
        return LearnJobList(data=[], total=0, limit=limit, offset=offset)
    rows, total = queries.list_jobs(session=session, tenant=tenant, adapter=key, status=status,
                                    limit=limit, offset=offset)
    return LearnJobList(data=[job_out(j, principal, events=False) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=LearnJobOut)
def get_learn_job(job_id: str, session: SessionDep, principal: LearnPrincipal) -> LearnJobOut:
    """One learn job with its metrics and event log."""
    return job_out(get_visible_job(session, principal, job_id, with_events=True), principal)


@router.post("/{job_id}/cancel", response_model=LearnJobOut)
def cancel_learn_job(job_id: str, session: SessionDep, redis: RedisDep, principal: LearnPrincipal) -> LearnJobOut:
    """Cancel a job in any stage; a finished job is returned unchanged."""
    job = cancel_job(session=session, redis=redis, job=get_visible_job(session, principal, job_id))
    session.refresh(job)
    return job_out(job, principal)


@router.get("/{job_id}/events")
async def stream_learn_events(job_id: str, request: Request, principal: LearnPrincipal) -> EventSourceResponse:
    """Server-sent events: every job event as it is appended, then `end` when the job finishes."""
    db_url = request.app.state.settings.sqlalchemy_url
    await asyncio.to_thread(_check_visible, db_url, principal, job_id)
    tenant = principal.tenant or ""
    if _open_streams[tenant] >= MAX_EVENT_STREAMS_PER_TENANT:
        # Each open stream polls the registry; an unbounded number would let one tenant load the database.
        raise RateLimited(f"This tenant already follows {MAX_EVENT_STREAMS_PER_TENANT} job event streams from "
                          "this server; close one, or poll GET /v1/learn/{id}.", code="too_many_event_streams",
                          retry_after=5)
    _open_streams[tenant] += 1
    # A background task runs however the stream ends, also when the generator never started.
    return EventSourceResponse(_follow(db_url, job_id), ping=15,
                               background=BackgroundTask(_open_streams.subtract, [tenant]))


def _check_visible(db_url: str, principal, job_id: str) -> None:  # noqa: ANN001
    with session_scope(db_url) as session:
        get_visible_job(session, principal, job_id)


async def _follow(db_url: str, job_id: str) -> AsyncIterator[dict]:
    last_id = 0
    while True:
        events, job = await asyncio.to_thread(_poll, db_url, job_id, last_id)
        for event in events:
            last_id = event.id
            yield {"event": "job", "id": str(event.id), "data": event.model_dump_json()}
        if job is None or job.status.terminal:
            yield {"event": "end", "data": json.dumps({"status": job.status.value if job else "unknown",
                                                       "version": job.version if job else None})}
            return
        await asyncio.sleep(EVENT_POLL_S)


def _poll(db_url: str, job_id: str, after_id: int):  # noqa: ANN202
    with session_scope(db_url) as session:
        events = [JobEventOut.model_validate(e, from_attributes=True)
                  for e in queries.events_after(session=session, job_id=job_id, after_id=after_id)]
        return events, queries.get_job(session=session, job_id=job_id)
