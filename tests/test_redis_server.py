"""Redis clients against a real embedded Valkey that is killed and comes back (as `seal up` restarts it)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis

from app.events import AdapterEvent, publish_event
from app.process import free_port
from app.redis_server import EmbeddedValkey, redis_client, riding_redis_client


def test_a_riding_client_rides_out_a_valkey_restart_and_a_plain_one_fails_fast(tmp_path) -> None:
    server = EmbeddedValkey(tmp_path)
    url = server.start()
    try:
        riding, plain = riding_redis_client(url, ride_out_s=30), redis_client(url)
        riding.set("accepted", "kept")
        time.sleep(1.2)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        restarted = threading.Timer(1.5, server.start)  # same port and directory, like the supervisor
        restarted.start()
        with pytest.raises(redis.ConnectionError):
            plain.get("accepted")
        started = time.monotonic()
        assert riding.get("accepted") == b"kept"  # waited for the restart, then read the AOF's data
        assert time.monotonic() - started >= 0.5
        restarted.join()
    finally:
        server.stop()


def test_an_event_to_a_dead_redis_is_dropped_not_raised(caplog) -> None:
    # Publishing follows the registry commit: losing the hint must not fail the publish that sent it.
    publish_event(redis_client(f"redis://127.0.0.1:{free_port()}/0"), AdapterEvent("published", "acme~kb", 3))
    assert "not sent" in caplog.text
