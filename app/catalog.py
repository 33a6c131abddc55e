"""The adapter catalog of one API process: which adapter version serves which name, for whom.

It owns the path from the registry to the engine's adapter table (vLLM's OpenAIServingModels
role): the start-up and reconnect sync, adapter events, and resolve-on-miss. The registry is the
only source of truth. An event is a hint to re-read one adapter's row, never an instruction: its
path and tenant are not trusted, so whoever can publish to Redis cannot route a tenant's traffic
to files of their choosing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from app.auth import Principal
from app.engine import Engine, LoadedVersion, Route, parse_model_name
from app.errors import EngineUnavailable, ModelNotFound
from app.events import ADAPTER_CHANNEL, AdapterEvent
from app.redis_server import CLIENT_OPTIONS
from app.registry import queries
from app.registry.db import session_scope
from app.registry.models import AdapterKind, VersionStatus
from app.tenancy import key_for, public_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingRow:
    """What the registry says one adapter key should serve."""

    adapter: str
    version: int
    path: str
    tenant: str | None
    shared: bool


# --- registry reads (run in a thread) ---------------------------------------------------------------


def _serving_rows(db_url: str) -> list[ServingRow]:
    with session_scope(db_url) as session:
        return [ServingRow(a.name, v.version, v.path, a.tenant, a.shared)
                for a, v in queries.serving_versions(session=session)]


def _serving_row(db_url: str, adapter: str, version: int | None = None) -> ServingRow | None:
    """The servable version `adapter@v<version>`, or the adapter's current one when version is None."""
    with session_scope(db_url) as session:
        row = queries.get_adapter(session=session, name=adapter)
        if row is None or row.retired_at is not None or row.kind != AdapterKind.lora:
            return None  # knowledge bases and their shards are routed by app/knowledge
        wanted = row.current_version if version is None else version
        found = queries.get_version(session=session, name=adapter, version=wanted) if wanted else None
        if found is None or found.status not in (VersionStatus.published, VersionStatus.retired):
            return None
        return ServingRow(adapter, found.version, found.path, row.tenant, row.shared)


# --- keeping the engine's table in step with the registry ----------------------------------------------


async def sync_all(engine: Engine, db_url: str) -> int:
    """Route every live adapter to the registry's current version; unroute the rest.

    One adapter that fails to load (a corrupt file, a rank above SEAL_MAX_LORA_RANK) is logged
    and skipped: the others keep syncing, and this process still becomes ready. Returns the
    number that failed.
    """
    rows = await asyncio.to_thread(_serving_rows, db_url)
    failed = 0
    for row in rows:
        if engine.current_version(row.adapter) != row.version:
            failed += not await _swap(engine, row)
    wanted = {row.adapter for row in rows}
    for loaded in engine.list_models():
        if loaded.adapter not in wanted:
            await engine.unroute(loaded.adapter)
    logger.info("adapter table synced: %d adapters, %d failed to load", len(rows), failed)
    return failed


async def sync_one(engine: Engine, db_url: str, adapter: str) -> None:
    """Bring one adapter in line with its registry row (what every event triggers)."""
    row = await asyncio.to_thread(_serving_row, db_url, adapter)
    if row is None:
        # Retired, or a shard (served pinned, never current): a purged shard's loaded versions go too.
        await engine.unroute(adapter)
    elif engine.current_version(adapter) != row.version:
        await _swap(engine, row)


async def _swap(engine: Engine, row: ServingRow) -> bool:
    try:
        await engine.swap(row.adapter, row.version, row.path, tenant=row.tenant, shared=row.shared)
        return True
    except Exception:  # noqa: BLE001 - one bad adapter must not stop the others
        logger.exception("could not load %s@v%d; it stays unserved until a new version", row.adapter, row.version)
        return False


async def follow_events(app: Any, redis_url: str) -> None:
    """Apply adapter events as they arrive; after any (re)subscribe, catch up from the registry."""
    engine: Engine = app.state.engine
    db_url = app.state.settings.sqlalchemy_url
    backoff = 0.5
    while True:
        client = aioredis.Redis.from_url(redis_url, **CLIENT_OPTIONS)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(ADAPTER_CHANNEL)
                # Subscribe first, then sync: an event published in between is applied twice, never missed.
                app.state.kbs.invalidate()
                await sync_all(engine, db_url)
                app.state.adapters_synced = True
                backoff = 0.5
                while True:
                    # Shorter than the socket timeout: an idle channel is not a dead connection.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None:
                        continue
                    try:
                        event = AdapterEvent.loads(message["data"])
                    except (KeyError, TypeError, ValueError):
                        logger.warning("ignoring a malformed adapter event")
                        continue
                    app.state.kbs.invalidate(event.adapter)
                    if event.action != "documents":
                        await sync_one(engine, db_url, event.adapter)
                    if event.action == "retired":  # nothing serves it again: drop this process's copies
                        await asyncio.to_thread(app.state.store.evict_cached, event.adapter)
        except asyncio.CancelledError:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Redis restarting or away is expected and says all it needs to in one line; a traceback
            # every few seconds buried whatever else the log had while it was down.
            logger.warning("adapter event listener lost Redis (%s); resubscribing in %.1fs", exc, backoff)
        except Exception:  # noqa: BLE001 - a listener must survive anything, and say what it was
            logger.exception("adapter event listener failed; resubscribing in %.1fs", backoff)
        finally:
            await client.aclose()
        # Only a failure gets here: the listening loop above never ends on its own.
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


# --- requests ------------------------------------------------------------------------------------------


def _usable(principal: Principal, loaded: LoadedVersion) -> bool:
    return principal.can_see(loaded.tenant, shared=loaded.shared)


async def resolve_route(engine: Engine, model: str, principal: Principal, db_url: str) -> Route:
    """Find the route for a request's `model`, loading from the registry when this process is behind.

    A tenant's name resolves in its own namespace first, then to an adapter an operator shared.
    A version can be published a moment before this process has applied its event, and a pinned
    older version is loaded only on demand; in both cases the registry has the answer.
    """
    if model == engine.base_model_id:
        return Route(model)
    name, version = parse_model_name(model)
    own = key_for(principal, name)
    candidates = [k for k in dict.fromkeys((own, name)) if k is not None]
    for key in candidates:
        loaded = engine.lookup(key, version)
        if loaded is not None and _usable(principal, loaded):
            return Route(model, loaded)
    for key in candidates:
        row = await asyncio.to_thread(_serving_row, db_url, key, version)
        if row is None or not principal.can_see(row.tenant, shared=row.shared):
            continue
        try:
            if version is None:
                await engine.swap(key, row.version, row.path, tenant=row.tenant, shared=row.shared)
            else:
                await engine.load(key, version, row.path, tenant=row.tenant, shared=row.shared)
        except Exception as exc:  # noqa: BLE001 - the version's files, not the request, are at fault
            logger.exception("could not load %s@v%d", key, row.version)
            raise EngineUnavailable(f"The model '{model}' could not be loaded; its owner can publish or roll "
                                    "back to another version.", code="adapter_unavailable") from exc
        loaded = engine.lookup(key, version)
        if loaded is not None:
            return Route(model, loaded)
    raise ModelNotFound(model)


def visible_models(engine: Engine, principal: Principal) -> list[tuple[str, LoadedVersion]]:
    """(name as this caller addresses it, version) for every adapter it may use."""
    usable = [loaded for loaded in engine.list_models() if _usable(principal, loaded)]
    seen: dict[str, LoadedVersion] = {}
    # Own adapters first: a tenant's `kb` hides an operator's shared `kb`, as in resolve_route.
    for loaded in sorted(usable, key=lambda v: v.tenant != principal.tenant):
        seen.setdefault(public_name(principal, loaded.adapter), loaded)
    return sorted(seen.items(), key=lambda item: item[0])
