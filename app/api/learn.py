"""/v1/learn: submit knowledge, follow and cancel learn jobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette.sse import EventSourceResponse

from app.api.deps import LearnPrincipal, RedisDep, SessionDep, SettingsDep
from app.api.learn_schemas import JobEventOut, LearnJobList, LearnJobOut, LearnRequest
from app.api.limits import MAX_INT32
from app.learning import cancel_job, get_visible_job, job_out, submit_learn
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import JobStatus

router = APIRouter(prefix="/v1/learn", tags=["learn"])
# The design card names the route `/learn`; keep it as an alias of /v1/learn.
legacy_router = APIRouter(prefix="/learn", tags=["learn"], include_in_schema=False)

EVENT_POLL_S = 0.5


@router.post("", status_code=202, response_model=LearnJobOut)
@legacy_router.post("", status_code=202, response_model=LearnJobOut)
def create_learn_job(
    body: LearnRequest, response: Response, session: SessionDep, redis: RedisDep, settings: SettingsDep,
    principal: LearnPrincipal, idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> LearnJobOut:
    """Accept documents to learn into an adapter; 202 with the job once they are durably recorded."""
    job, created = submit_learn(session=session, redis=redis, settings=settings, principal=principal, body=body,
                                idempotency_key=idempotency_key)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/learn/{job.id}"
    session.refresh(job)
    return job_out(job)


@router.get("", response_model=LearnJobList)
def list_learn_jobs(
    session: SessionDep, principal: LearnPrincipal,
    adapter: str | None = None, status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20, offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> LearnJobList:
    """List learn jobs, newest first, filtered by adapter and status."""
    tenant = None if principal.is_admin else principal.tenant
    rows, total = queries.list_jobs(session=session, tenant=tenant, adapter=adapter, status=status,
                                    limit=limit, offset=offset)
    return LearnJobList(data=[job_out(j, events=False) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=LearnJobOut)
def get_learn_job(job_id: str, session: SessionDep, principal: LearnPrincipal) -> LearnJobOut:
    """One learn job with its metrics and event log."""
    return job_out(get_visible_job(session, principal, job_id, with_events=True))


@router.post("/{job_id}/cancel", response_model=LearnJobOut)
def cancel_learn_job(job_id: str, session: SessionDep, redis: RedisDep, principal: LearnPrincipal) -> LearnJobOut:
    """Cancel a job in any stage; a finished job is returned unchanged."""
    job = cancel_job(session=session, redis=redis, job=get_visible_job(session, principal, job_id))
    session.refresh(job)
    return job_out(job)


@router.get("/{job_id}/events")
async def stream_learn_events(job_id: str, request: Request, principal: LearnPrincipal) -> EventSourceResponse:
    """Server-sent events: every job event as it is appended, then `end` when the job finishes."""
    db_url = request.app.state.settings.sqlalchemy_url
    await asyncio.to_thread(_check_visible, db_url, principal, job_id)
    return EventSourceResponse(_follow(db_url, job_id), ping=15)


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
