"""The knowledge bases of one API process: each kb's current (or pinned) shard set and its router.

An entry is built from the registry (app/knowledge/shards.py) and rebuilt when the kb changes:
an adapter event for its key (a publish, a rollback, accepted or rejected documents), a Redis
resubscribe, or a submit in this very process (so a 202 is routable in this process at once, and
in every other one as soon as the event arrives). Every process builds its router from the same
rows with the same deterministic index, so every process routes a question the same way.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from app import metrics
from app.auth import Principal
from app.engine import Engine, Route, parse_model_name
from app.errors import Conflict, EngineUnavailable, InvalidRequest
from app.knowledge.router import DEFAULT_CONFIG, IndexedDocument, LexicalRouter, RouteDecision, RouterConfig
from app.knowledge.shards import KbDocument, KbVersion, ShardRef, is_kb, kb_documents, kb_version, shard_label
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import DocumentState
from app.tenancy import key_for, public_name
from workers.seal.reading import reading_prompt

logger = logging.getLogger(__name__)

ANSWER_FROM_HEADER = "seal-answer-from"
MAX_ENTRIES = 4096  # kbs, pinned versions and names known not to be kbs, per API process
# Registry reads one request makes while invalidations keep overtaking them; past that it answers
# from its last read, uncached (the next request reads again).
READS_BEFORE_UNCACHED = 3


@dataclass(frozen=True)
class KnowledgeBase:
    """One kb version as this process serves it."""

    key: str
    tenant: str | None
    shared: bool
    version: KbVersion
    router: LexicalRouter
    documents: dict[int, KbDocument]


def indexed(doc: KbDocument) -> IndexedDocument:
    return IndexedDocument(doc_id=doc.id, shard=doc.shard.shard if doc.shard else None, title=doc.title,
                           text=doc.text, probes=doc.probes, state=doc.state)


def load_knowledge_base(db_url: str, key: str, version: int | None,
                        config: RouterConfig = DEFAULT_CONFIG) -> KnowledgeBase | None:
    """The kb `key` (at `version`, else its current one) from the registry; None when `key` is no kb."""
    with session_scope(db_url) as session:
        row = queries.get_adapter(session=session, name=key)
        if not is_kb(row) or row.retired_at is not None:
            return None
        kbv = kb_version(session, key, version)
        if version is not None and kbv.version is None:
            return None
        docs = kb_documents(session, key, kbv)
        if version is not None:  # a pinned version answers what it learned, not what came after
            docs = [d for d in docs if d.state == DocumentState.learned]
        tenant, shared = row.tenant, row.shared
    router = LexicalRouter([indexed(d) for d in docs], config=config)
    return KnowledgeBase(key, tenant, shared, kbv, router, {d.id: d for d in docs})


class KnowledgeBases:
    """key (and pinned version) → KnowledgeBase, with negative entries for keys that are not kbs."""

    def __init__(self, db_url: str, config: RouterConfig = DEFAULT_CONFIG, weights_margin: float = 0.1):
        self.db_url = db_url
        self.config = config
        self.weights_margin = weights_margin  # SEAL_WEIGHTS_MARGIN: see route_request
        self._entries: dict[tuple[str, int | None], KnowledgeBase | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Moved by every invalidation (from the event loop or a request's thread: next() on a count is
        # atomic): a registry read that an invalidation overtook is not cached.
        self._ticks = itertools.count(1)
        self._generation = 0

    def invalidate(self, key: str | None = None) -> None:
        """Forget `key` (every key when None); the next request rebuilds it from the registry."""
        self._generation = next(self._ticks)
        if key is None:
            self._entries.clear()
        else:
            for k in [k for k in self._entries if k[0] == key]:
                del self._entries[k]

    def served(self) -> list[KnowledgeBase]:
        """The knowledge bases this process routes at their current version (pins left out)."""
        return [kb for (_, version), kb in self._entries.items() if version is None and kb is not None]

    async def get(self, key: str, version: int | None = None) -> KnowledgeBase | None:
        if (key, version) in self._entries:
            return self._entries[(key, version)]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if (key, version) in self._entries:
                return self._entries[(key, version)]
            if len(self._entries) >= MAX_ENTRIES:
                # Clients choose model names: bound what a stream of unknown names can make us hold.
                self._entries.clear()
                self._locks = {key: lock}
            for _ in range(READS_BEFORE_UNCACHED):
                generation = self._generation
                loaded = await asyncio.to_thread(load_knowledge_base, self.db_url, key, version, self.config)
                if generation == self._generation:
                    self._entries[(key, version)] = loaded
                    break
                # A document was accepted (or a version published) while the registry was being read,
                # and its invalidation found nothing to drop: caching this read would hide the new
                # document from every request until the next change. Read again.
            return loaded

    async def resolve(self, model: str, principal: Principal) -> KnowledgeBase | None:
        """The kb a request's `model` names for this caller (own namespace first, then shared)."""
        name, version = parse_model_name(model)
        for key in dict.fromkeys(k for k in (key_for(principal, name), name) if k is not None):
            kb = await self.get(key, version)
            if kb is not None and principal.can_see(kb.tenant, shared=kb.shared):
                return kb
        return None


def visible_knowledge_bases(db_url: str, principal: Principal) -> list[tuple[str, int, str | None, float]]:
    """(name as this caller addresses it, current version, owner, created) of every live kb it may use."""
    from sqlalchemy import select

    from app.registry.models import Adapter, AdapterKind

    with session_scope(db_url) as session:
        rows = session.scalars(select(Adapter).where(Adapter.kind == AdapterKind.kb, Adapter.retired_at.is_(None),
                                                     Adapter.current_version.is_not(None))).all()
        return sorted((public_name(principal, r.name), r.current_version, r.tenant, r.created_at.timestamp())
                      for r in rows if principal.can_see(r.tenant, shared=r.shared))


class AnswerFrom(str, enum.Enum):
    """What answers a knowledge base's question (the `seal-answer-from` request header)."""

    auto = "auto"  # the shard's weights, the base model reading the document where they read it worse, or the base model
    weights = "weights"  # the routed document's shard alone (409 while the document has none)
    context = "context"  # the base model reading the routed document

    @classmethod
    def parse(cls, value: str | None) -> AnswerFrom:
        """The header's value (absent: auto); anything else is a 400 naming the choices."""
        if value is None:
            return cls.auto
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise InvalidRequest(f"seal-answer-from must be one of {', '.join(m.value for m in cls)}; got {value!r}.",
                                 param=ANSWER_FROM_HEADER, code="invalid_answer_from") from None


@dataclass(frozen=True)
class KbRoute:
    route: Route
    decision: RouteDecision
    context: KbDocument | None  # the document to put in the prompt (in-context routes)


async def route_request(engine: Engine, kb: KnowledgeBase, principal: Principal, model: str,
                        messages: list[dict[str, Any]] | None, prompt: str | None,
                        answer_from: AnswerFrom = AnswerFrom.auto, weights_margin: float = 0.1) -> KbRoute:
    """Pick the shard, the document to read, or the base model for one request; load a cold shard.

    With `auto`, a learned document answers from its shard's weights when they answered its probes at
    least as well as reading it (within `weights_margin`), else the base model reads it; a document
    the router is unsure of is read by the base model. Pending and rejected documents are
    read by the base model (`weights` asks for a shard they do not have: 409).
    """
    started = time.perf_counter()
    decision = kb.router.route_messages(messages) if messages is not None else kb.router.route(prompt or "")
    metrics.KB_ROUTE_SECONDS.observe(time.perf_counter() - started)
    logger.debug("route %s: %s, confidence %.3f (threshold %.2f, floor %.2f); candidates (doc, confidence) %s",
                 kb.key, f"document {decision.document.doc_id}" if decision.document else "base", decision.score,
                 kb.router.config.threshold, kb.router.config.floor, list(decision.candidates))
    doc = kb.documents.get(decision.document.doc_id) if decision.document is not None else None
    if doc is None:
        return _counted(kb, KbRoute(Route(model, label="base"), decision, None), "base")
    if doc.state != DocumentState.learned or doc.shard is None:
        if answer_from == AnswerFrom.weights:
            raise Conflict(f"Document {doc.id} of '{model}' is not learned ({doc.state}): it has no weights to answer "
                           "from yet, and is answered in context.", param=ANSWER_FROM_HEADER, code="not_learned")
        return _counted(kb, KbRoute(Route(model, label=f"{doc.state}:{doc.id}"), decision, doc), doc.state)
    reading = KbRoute(Route(model, label=f"context:{doc.id}"), decision, doc)
    if answer_from == AnswerFrom.context:
        return _counted(kb, reading, "context")
    if answer_from == AnswerFrom.auto and not decision.sure:
        # Unsure which document the question is about: the base model reads the likeliest one, which
        # costs a general question little and gives a question about the document its answer.
        return _counted(kb, reading, "unsure")
    if answer_from == AnswerFrom.auto and doc.reads_better(weights_margin):
        # Its weights answered its probes worse than the base model reading it: serve the better of the
        # two the job measured. (The shard *with* the document in the prompt was measured by no one; on
        # the 20-document run it answered 43 of 59 questions where reading answered 47.)
        return _counted(kb, reading, "reading")
    loaded = await _load_shard(engine, kb, doc.shard, model)
    label = f"{public_name(principal, kb.key)}/{shard_label(doc.shard.shard)}@v{doc.shard.version}"
    return _counted(kb, KbRoute(Route(model, loaded, label=label), decision, None), "shard")


def _counted(kb: KnowledgeBase, route: KbRoute, kind: str) -> KbRoute:
    metrics.KB_ROUTES.labels(model=metrics.model_label(kb.key, count=False), route=kind).inc()
    return route


async def _load_shard(engine: Engine, kb: KnowledgeBase, ref: ShardRef, model: str) -> Any:
    """The shard version's LoRA in the engine. vLLM keeps `max_cpu_loras` of them and evicts the
    least recently used; an evicted one is added again here (the cold-shard path)."""
    loaded = engine.lookup(ref.shard, ref.version)
    if loaded is not None:
        return loaded
    try:
        return await engine.load(ref.shard, ref.version, ref.path, tenant=kb.tenant, shared=kb.shared)
    except Exception as exc:  # noqa: BLE001 - the shard's files, not the request, are at fault
        logger.exception("could not load %s@v%d", ref.shard, ref.version)
        raise EngineUnavailable(f"The model '{model}' could not be loaded; its owner can roll back to another "
                                "version.", code="adapter_unavailable") from exc


def with_context_messages(messages: list[dict[str, Any]], doc: KbDocument) -> list[dict[str, Any]]:
    """The conversation with the document put in its last user turn (an instant-recall answer)."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = _passage(doc, _text_of(m.get("content")))
            break
    return out


def with_context_prompt(prompt: str, doc: KbDocument) -> str:
    return _passage(doc, prompt)


def _passage(doc: KbDocument, question: str) -> str:
    return reading_prompt(doc.title, doc.text, question)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
