"""/v1/adapters: versions, lineage, rollback and retirement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import AnyPrincipal, RedisDep, SessionDep, SettingsDep, StoreDep
from app.api.learn_schemas import (
    AdapterList,
    AdapterOut,
    AdapterVersionOut,
    KbDocumentDeleted,
    KbDocumentList,
    KbDocumentOut,
    LearnJobOut,
    RollbackRequest,
)
from app.api.limits import MAX_INT32
from app.auth import Principal
from app.config import Scope
from app.errors import InvalidRequest, NotFound
from app.knowledge.forgetting import forget_document
from app.knowledge.shards import is_kb, kb_version, list_documents, reads_better, shard_label
from app.learning import check_quota, job_out, retire, submit_consolidation
from app.publishing import route_to_version
from app.registry import queries
from app.registry.models import Adapter, AdapterKind
from app.tenancy import key_for, public_name

router = APIRouter(prefix="/v1/adapters", tags=["adapters"])


def _visible(session, principal: Principal, name: str) -> Adapter:  # noqa: ANN001
    """The caller's adapter `name` (a key, for admins); 404 for anything else, existing or not."""
    key = key_for(principal, name)
    adapter = queries.get_adapter(session=session, name=key) if key is not None else None
    if adapter is None or not principal.can_see(adapter.tenant) or adapter.kind == AdapterKind.shard:
        raise NotFound(f"The adapter '{name}' does not exist.", param="name", code="adapter_not_found")
    return adapter


def _out(session, adapter: Adapter, principal: Principal, *, versions: bool) -> AdapterOut:  # noqa: ANN001
    documents = shards = None
    if is_kb(adapter):
        served = kb_version(session, adapter.name)
        documents, shards = len(list_documents(session, adapter.name, served)), len(served.shards)
    return AdapterOut(
        name=public_name(principal, adapter.name), kind="knowledge_base" if is_kb(adapter) else "adapter",
        tenant=adapter.tenant, current_version=adapter.current_version, documents=documents, shards=shards,
        retired=adapter.retired_at is not None, created_at=adapter.created_at,
        versions=[AdapterVersionOut.model_validate(v) for v in adapter.versions] if versions else [],
    )


@router.get("", response_model=AdapterList)
def list_adapters(session: SessionDep, principal: AnyPrincipal) -> AdapterList:
    """Adapters the caller owns (all of them for admins), with their versions."""
    principal.require(Scope.infer)
    tenant = None if principal.is_admin else principal.tenant
    return AdapterList(data=[_out(session, a, principal, versions=True) for a in queries.list_adapters(session=session, tenant=tenant)])


@router.get("/{name}", response_model=AdapterOut)
def get_adapter(name: str, session: SessionDep, principal: AnyPrincipal) -> AdapterOut:
    """One adapter with every version, its metrics and lineage."""
    principal.require(Scope.infer)
    return _out(session, _visible(session, principal, name), principal, versions=True)


@router.get("/{name}/documents", response_model=KbDocumentList)
def list_kb_documents(
    name: str, session: SessionDep, settings: SettingsDep, principal: AnyPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 20, offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> KbDocumentList:
    """A knowledge base's documents, oldest first: what its current version answers each one with,
    the shard and job that learned it, and its probes' accuracy from weights and read in context."""
    principal.require(Scope.infer)
    adapter = _visible_kb(session, principal, name)
    rows = list_documents(session, adapter.name, kb_version(session, adapter.name))
    return KbDocumentList(data=[_document_out(d, settings.weights_margin) for d in rows[offset:offset + limit]],
                          total=len(rows), limit=limit, offset=offset)


@router.delete("/{name}/documents/{document_id}", response_model=KbDocumentDeleted)
def forget_kb_document(
    name: str, document_id: Annotated[int, Path(ge=1, le=MAX_INT32)], session: SessionDep, redis: RedisDep,
    store: StoreDep, settings: SettingsDep, principal: AnyPrincipal, purge: bool = False,
) -> KbDocumentDeleted:
    """Forget a document: a new version without its shard (its weights serve nothing), out of the
    router at once. `purge=true` also deletes its text, probes and shard files now; otherwise that
    happens after SEAL_ADAPTER_RETENTION_DAYS, and a rollback can bring it back until then."""
    principal.require(Scope.learn)
    adapter = _visible_kb(session, principal, name)
    key = adapter.name
    session.close()  # forgetting takes the knowledge base's row lock in sessions of its own
    done = forget_document(db_url=settings.sqlalchemy_url, store=store, redis=redis, kb=key,
                           document_id=document_id, purge=purge)
    return KbDocumentDeleted(id=done.document_id, version=done.version, shard=done.shard,
                             read_in_context=list(done.read_in_context), purged=done.purged)


def _visible_kb(session, principal: Principal, name: str) -> Adapter:  # noqa: ANN001
    adapter = _visible(session, principal, name)
    if not is_kb(adapter):
        raise InvalidRequest(f"'{name}' is a single adapter, not a knowledge base: its documents are one LoRA "
                             "(GET /v1/learn?adapter=... lists what it learned).", param="name",
                             code="not_a_knowledge_base")
    return adapter


def _document_out(doc, margin: float) -> KbDocumentOut:  # noqa: ANN001 - a shards.ListedDocument
    from_weights = doc.shard is not None and not reads_better(doc.accuracy_weights, doc.accuracy_context, margin,
                                                              doc.probe_source)
    return KbDocumentOut(
        id=doc.id, title=doc.title, characters=doc.characters, state=doc.state,
        answered_from="weights" if from_weights else "context",
        shard=f"{shard_label(doc.shard.shard)}@v{doc.shard.version}" if doc.shard else None,
        job_id=doc.job_id, job_status=doc.job_status, accuracy_weights=doc.accuracy_weights,
        accuracy_context=doc.accuracy_context, probe_source=doc.probe_source, created_at=doc.created_at)


@router.post("/{name}/rollback", response_model=AdapterOut)
def rollback_adapter(
    name: str, body: RollbackRequest, session: SessionDep, redis: RedisDep, settings: SettingsDep,
    principal: AnyPrincipal,
) -> AdapterOut:
    """Serve an earlier published version again; every API process hot-swaps to it."""
    principal.require(Scope.learn)
    adapter = _visible(session, principal, name)
    try:
        route_to_version(db_url=settings.sqlalchemy_url, redis=redis, adapter=adapter.name, version=body.version)
    except LookupError as exc:
        raise NotFound(f"{name}@v{body.version} is not a published version with files.", param="version",
                       code="version_not_found") from exc
    session.expire_all()
    return _out(session, _visible(session, principal, name), principal, versions=True)


@router.post("/{name}/consolidate", status_code=202, response_model=LearnJobOut)
def consolidate_adapter(
    name: str, response: Response, session: SessionDep, redis: RedisDep, settings: SettingsDep,
    principal: AnyPrincipal,
) -> LearnJobOut:
    """Queue a "sleep": retrain the adapter from the base weights on everything it absorbed.

    The result passes the same forgetting gate and publishes as a new version. A consolidation
    already queued or running is returned (200) instead of queueing a second one.
    """
    principal.require(Scope.learn)
    adapter = _visible(session, principal, name)
    if adapter.retired_at is not None or adapter.current_version is None:
        raise InvalidRequest(f"The adapter '{name}' has no published version to consolidate.",
                             code="adapter_not_servable")
    check_quota(session, settings, principal.tenant, documents=0)
    job, created = submit_consolidation(session=session, redis=redis, settings=settings, adapter=adapter.name,
                                        tenant=adapter.tenant, reason=f"requested by {principal.tenant or 'a client'}")
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/v1/learn/{job.id}"
    session.refresh(job)
    return job_out(job, principal)


@router.delete("/{name}", response_model=AdapterOut)
def retire_adapter(name: str, session: SessionDep, redis: RedisDep, principal: AnyPrincipal) -> AdapterOut:
    """Stop serving an adapter and cancel its queued and running jobs; none of them publishes later.

    Its files stay in the store until the retention period passes.
    """
    principal.require(Scope.learn)
    adapter = _visible(session, principal, name)
    if adapter.retired_at is not None:
        raise InvalidRequest(f"The adapter '{name}' is already retired.", code="adapter_retired")
    retire(session=session, redis=redis, adapter=adapter)
    return _out(session, adapter, principal, versions=True)
