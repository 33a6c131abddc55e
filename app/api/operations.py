"""GET /v1/operations: what /metrics exports about the queue, the workers and the jobs, as JSON for
the console, plus what this API process serves. A tenant sees its own jobs and served versions; the
queue and the workers are shared by every tenant, so only admins (and the open mode) see them."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from app.api.deps import InferPrincipal, SettingsDep
from app.auth import Principal
from app.catalog import visible_models
from app.queue import queue_depths, worker_states
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import JobStatus
from app.tenancy import public_name

router = APIRouter(prefix="/v1", tags=["operations"])


class WorkersOut(BaseModel):
    total: int
    busy: int


class ServedOut(BaseModel):
    name: str
    kind: Literal["adapter", "knowledge_base"]
    version: int | None


class OperationsOut(BaseModel):
    object: Literal["operations"] = "operations"
    jobs: dict[str, int] = Field(description="Learn jobs by status: the caller's (every tenant's for admins), "
                                             "as seal_learn_jobs counts them.")
    queues: dict[str, int] | None = Field(description="Jobs waiting per RQ queue (seal_queue_depth); admins only.")
    workers: WorkersOut | None = Field(description="Registered learn workers and how many run a job; admins only.")
    process: str | None = Field(description="The API process that answered, host:pid; admins only.")
    served: list[ServedOut] = Field(description="What this API process serves now: adapters at their loaded "
                                                "version, knowledge bases at the version its router holds.")


@router.get("/operations", response_model=OperationsOut)
async def operations(request: Request, principal: InferPrincipal, settings: SettingsDep) -> OperationsOut:
    """Queue depth, workers, jobs by status and this process's served versions."""
    everyone = principal.is_admin or principal.tenant is None
    jobs = await asyncio.to_thread(_job_counts, settings.sqlalchemy_url, None if everyone else principal.tenant)
    queues = workers = None
    if everyone:
        try:
            queues = await asyncio.to_thread(queue_depths, request.app.state.redis)
            states = await asyncio.to_thread(worker_states, request.app.state.redis)
            workers = WorkersOut(total=len(states), busy=sum(s == "busy" for s in states))
        except RedisError:
            pass  # the console shows the queue as unknown while Redis is away, as /metrics does
    return OperationsOut(jobs={s.value: jobs.get(s, 0) for s in JobStatus}, queues=queues, workers=workers,
                         process=f"{socket.gethostname()}:{os.getpid()}" if everyone else None,
                         served=_served(request.app, principal))


def _job_counts(db_url: str, tenant: str | None) -> dict[JobStatus, int]:
    with session_scope(db_url) as session:
        return queries.job_counts(session=session, tenant=tenant)


def _served(app: Any, principal: Principal) -> list[ServedOut]:
    engine = getattr(app.state, "engine", None)
    out = [ServedOut(name=name, kind="adapter", version=loaded.version)
           for name, loaded in (visible_models(engine, principal) if engine is not None else [])]
    for kb in app.state.kbs.served():
        if principal.can_see(kb.tenant, shared=kb.shared):
            out.append(ServedOut(name=public_name(principal, kb.key), kind="knowledge_base", version=kb.version.version))
    return sorted(out, key=lambda s: (s.kind, s.name))
