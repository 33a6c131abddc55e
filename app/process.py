"""Child processes of the service: spawn one in a session of its own, wait for it, stop it whole.

One place for what `seal up`, the tests and the benchmarks all do with their children. A vLLM
server forks an EngineCore process (and a worker may too); signalling only the server leaves
that child holding gigabytes. So every child gets a session (process group) of its own, and
stopping one ends with a SIGKILL to the group, after the server had its grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may take it before it is bound: use it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None,
          cwd: Path | str | None = None) -> subprocess.Popen:
    """Start `args` in a session of its own, so that stopping it also stops what it started.

    With `log`, stdout and stderr are appended to that file; without, they are inherited. stdin is
    closed: a child of a terminal must not read the keys meant for its parent.
    """
    out = log.open("ab") if log is not None else None
    try:
        return subprocess.Popen(list(args), env=dict(env) if env is not None else None, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
    finally:
        if out is not None:
            out.close()  # the child holds its own copy of the descriptor


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600, path: str = "/readyz") -> None:
    """Block until `url + path` answers 200; fail early if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a spawned process and everything left in its session, as a pod's death would.

    A killed process cannot stop its vLLM engine processes; each one left behind holds ~3 GB and
    a share of the CPU.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the process only: it stops its own children in order (a group signal would kill the
    engine under a server that is still draining, which then logs EngineDeadError tracebacks)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)


def stop(proc: subprocess.Popen, timeout: float = 60) -> int | None:
    """SIGTERM, a grace period of `timeout` seconds, then SIGKILL to whatever is left of the group.

    Returns the process's exit status from before the sweep (None if it had to be killed).
    """
    terminate(proc)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    code = proc.returncode
    kill_group(proc)
    return code


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


@dataclass
class Child:
    """One supervised child: how to start it, the running process, and its restart history."""

    name: str
    start: Callable[[], subprocess.Popen]
    last: bool = False  # stopped after the others (the embedded Valkey: workers hand jobs back through it)
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # consecutive exits soon after a start: they double the wait before the next one
    restart_at: float | None = None
    restarts: int = 0
    proc_pid: int = 0  # the last pid, for the log line after the process is gone


class Supervisor:
    """Keep children running until asked to stop, the way `seal up` runs Valkey, the API and workers.

    A child that exits, whatever its exit status, is started again after `restart_delay` seconds,
    doubled for each exit that follows a start by less than `stable_after` seconds (up to
    `max_delay`): a crash loop backs off instead of spinning, and a child that had run for a while
    comes back after the first, short wait. Only `request_stop` (SIGTERM, Ctrl-C) ends the service: children get
    SIGTERM, `grace` seconds, then their process groups get SIGKILL. A second signal skips the grace.
    """

    def __init__(self, *, restart_delay: float = 1.0, max_delay: float = 60.0, stable_after: float = 60.0,
                 grace: float = 60.0):
        self.children: list[Child] = []
        self.restart_delay, self.max_delay, self.stable_after, self.grace = restart_delay, max_delay, stable_after, grace
        self.stopping = False
        self.forced = False

    def add(self, name: str, start: Callable[[], subprocess.Popen], *, last: bool = False) -> Child:
        child = Child(name, start, last=last)
        self.children.append(child)
        return child

    def request_stop(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        """Signal handler: the first signal stops the service gracefully, a second one forcefully."""
        if self.stopping:
            self.forced = True
            logger.warning("second stop signal: killing the children now")
        self.stopping = True

    def start_all(self) -> None:
        # The `last` children (Valkey) first: the others connect to them as they start.
        for child in sorted(self.children, key=lambda c: not c.last):
            self._start(child)

    def run(self, poll_s: float = 0.5) -> None:
        """Supervise until `request_stop`, then stop every child; returns when all have exited."""
        try:
            while not self.stopping:
                self.poll()
                time.sleep(poll_s)
        finally:
            self.stop_all()

    def poll(self) -> None:
        """One pass: schedule a restart for each child that exited, start those whose wait is over."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                code, ran = child.proc.returncode, now - child.started_at
                kill_group(child.proc)  # what it started (an engine) must not outlive it
                child.proc = None
                delay = self._schedule(child, ran)
                logger.warning("%s (pid %d) %s after %.0fs; restarting in %.0fs", child.name, child.proc_pid,
                               describe_exit(code), ran, delay)
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def _schedule(self, child: Child, ran: float) -> float:
        if ran >= self.stable_after:
            child.failures = 0
        delay = min(self.max_delay, self.restart_delay * 2 ** child.failures)
        child.failures += 1
        child.restart_at = time.monotonic() + delay
        return delay

    def _start(self, child: Child) -> None:
        child.restart_at = None
        child.started_at = time.monotonic()
        try:
            child.proc = child.start()
        except Exception as exc:  # noqa: BLE001 - a failed start is retried like a crash
            child.proc = None
            delay = self._schedule(child, 0.0)
            logger.error("could not start %s: %s; retrying in %.0fs", child.name, exc, delay)
            return
        child.proc_pid = child.proc.pid
        logger.info("%s %s (pid %d)", child.name, "restarted" if child.restarts else "started", child.proc.pid)

    def stop_all(self) -> None:
        """SIGTERM the children (Valkey after the rest), a grace period, then SIGKILL to their groups."""
        logger.info("stopping %s", ", ".join(c.name for c in self.children if c.proc is not None) or "nothing")
        for group in ([c for c in self.children if not c.last], [c for c in self.children if c.last]):
            procs = [c.proc for c in group if c.proc is not None]
            for child in group:
                child.restart_at = None
            for proc in procs:
                terminate(proc)
            deadline = time.monotonic() + self.grace
            while not self.forced and time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.2)
            for proc in procs:
                if proc.poll() is None:
                    logger.warning("pid %d did not stop within %.0fs: killing its process group", proc.pid, self.grace)
                kill_group(proc)
