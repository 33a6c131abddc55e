"""app.process.Supervisor with tiny shell children: backoff, restart, and a stop that leaves nothing."""

from __future__ import annotations

import time
from pathlib import Path

from app.process import Supervisor, spawn


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_supervisor_backs_off_restarts_and_stops_whole_groups() -> None:
    sup = Supervisor(restart_delay=0.1, stable_after=60, grace=5)
    crashing = sup.add("crashing", lambda: spawn(["sh", "-c", "exit 3"]))
    # A child that started one of its own, as a server starts its engine.
    steady = sup.add("steady", lambda: spawn(["sh", "-c", "sleep 300 & wait"]))
    sup.start_all()
    first = steady.proc.pid
    started = time.monotonic()
    while crashing.restarts < 3 and time.monotonic() - started < 10:
        sup.poll()
        time.sleep(0.02)
    assert crashing.restarts == 3
    # Waits of 0.1, 0.2 and 0.4 s: a crash loop backs off.
    assert time.monotonic() - started >= 0.7
    assert crashing.failures >= 3
    assert steady.proc.pid == first and steady.restarts == 0

    sup.request_stop()
    sup.stop_all()
    assert steady.proc.poll() is not None
    deadline = time.monotonic() + 5
    while group_members(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(first) == [], "the child's own child outlived the stop"
