"""Adapter events over Redis pub/sub: how every API process learns of a new version."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

ADAPTER_CHANNEL = "seal:adapter-events"


@dataclass(frozen=True)
class AdapterEvent:
    """`published` and `rolled_back` route the adapter to `version`; `retired` stops serving it."""

    action: Literal["published", "rolled_back", "retired"]
    adapter: str
    version: int | None
    path: str | None
    tenant: str | None

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> AdapterEvent:
        return cls(**json.loads(raw))


def publish_event(redis: Any, event: AdapterEvent) -> None:
    """Fire-and-forget: a process that misses it catches up from the registry on start."""
    receivers = redis.publish(ADAPTER_CHANNEL, event.dumps())
    logger.info("adapter event %s %s v%s → %d subscribers", event.action, event.adapter, event.version, receivers)
