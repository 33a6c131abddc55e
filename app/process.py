"""Child processes of the service: spawn one in a session of its own, wait for it, stop it whole.

One place for what `seal up`, the tests and the benchmarks all do with their children. A vLLM
server forks an EngineCore process (and a worker may too); signalling only the server leaves
that child holding gigabytes. So every child gets a session (process group) of its own, and
stopping one ends with a SIGKILL to the group, after the server had its grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


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
