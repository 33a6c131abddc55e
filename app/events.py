"""Adapter events over Redis pub/sub: how every API process learns of a new version."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

ADAPTER_CHANNEL = "seal:adapter-events"


@dataclass(frozen=True)
class AdapterEvent:
    """A hint that adapter key `adapter` changed (`published`, `rolled_back` or `retired`), or, for a
    knowledge base, that its `documents` changed (accepted, rejected, cancelled).

    Receivers re-read the adapter's registry row (app/catalog.py); nothing else in the event is
    trusted, so it carries no path or owner. `version` is for logs.
    """

    action: Literal["published", "rolled_back", "retired", "documents"]
    adapter: str
    version: int | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> AdapterEvent:
        data = json.loads(raw)
        return cls(action=data["action"], adapter=str(data["adapter"]), version=data.get("version"))


def publish_event(redis: Any, event: AdapterEvent) -> None:
    """Fire-and-forget, after the registry commit it announces: a process that misses it catches up
    from the registry when it (re)subscribes, so Redis being down must not fail the publish or the
    submit that sent it."""
    try:
        receivers = redis.publish(ADAPTER_CHANNEL, event.dumps())
    except RedisError as exc:
        logger.warning("adapter event %s %s v%s not sent (%s); subscribers resync from the registry on reconnect",
                       event.action, event.adapter, event.version, exc)
        return
    logger.info("adapter event %s %s v%s → %d subscribers", event.action, event.adapter, event.version, receivers)
