"""`seal up` supervises its children: a SIGKILLed worker or embedded Valkey comes back, the API keeps
serving, the job the worker was running publishes once, so does the job that trained through
Valkey's restart, and a learn accepted while Valkey was down is queued when it returns.
Real processes: `seal up` with its embedded Valkey, a vLLM API and one worker.

This also covers what tests/workers/test_learn_worker.py once tested on its own (a worker SIGKILLed
mid-training: the job is retried and publishes exactly one version).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, free_port, service_env, spawn, stop, wait_job, wait_ready

START_TIMEOUT_S = 900  # the API's engine starts in a minute alone, several under load
LEARN_TIMEOUT_S = 900
# Wide enough that a learn posted right after the kill finds Valkey down.
RESTART_DELAY_S = 10

# Few, larger steps: a learn that passes the new-facts gate in about a minute here.
OPTIONS = {"format": "passage", "epochs": 4, "lr": 3e-3}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def children(pid: int) -> list[int]:
    """The live children of `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in field 2 may hold spaces and parentheses: split after its last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def child_pid(log: Path, up_pid: int, name: str, timeout: float = 120, not_pid: int | None = None) -> int:
    """The pid `seal up` last logged for child `name` ("worker-1 started (pid N)"), once it is alive.

    The log, not the command line: RQ retitles its worker process.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in re.findall(rf"{name} (?:started|restarted) \(pid (\d+)\)", log.read_text(errors="replace"))]
        if pids and pids[-1] != not_pid and pids[-1] in children(up_pid):
            return pids[-1]
        assert time.monotonic() < deadline, f"seal up never logged a live {name} other than {not_pid}: {pids}"
        time.sleep(0.5)


def processes_using(data_dir: Path) -> list[str]:
    """Command lines (with environ) of live processes that run from `data_dir`: what `seal up` must not leave."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if "Z" in (entry / "stat").read_text().rsplit(")", 1)[1].split()[:1]:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in environ or str(data_dir) in cmdline:
            left.append(f"{entry.name}: {cmdline[:200]}")
    return left


def submit(api: Stack, adapter: str, passage: dict) -> str:
    doc = {"title": passage["title"], "text": passage["context"],
           "probes": [{"question": q["question"], "answer": q["answer"]} for q in passage["questions"]]}
    with api.client() as client:
        r = client.post("/v1/learn", json={"adapter": adapter, "documents": [doc], "options": OPTIONS})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def versions(api: Stack, adapter: str) -> list[int]:
    with api.client() as client:
        return [v["version"] for v in client.get(f"/v1/adapters/{adapter}").json()["versions"]]


def test_up_restarts_a_killed_worker_and_valkey(tmp_path: Path, fictional) -> None:
    started = time.monotonic()
    port = free_port()
    # The gate and the anchors are a user's defaults: these learns go into knowledge bases, whose router
    # keeps the canary with the base model.
    # The training threads are `seal up`'s own: the worker's share, and the API engine's cores lent while
    # the host idles (app.cpus.LentCores).
    env = service_env(tmp_path, "", SEAL_WORKER_GENERATOR="hf", SEAL_WORKER_METRICS_PORT="0")
    del env["REDIS_URL"]  # so that `seal up` embeds (and supervises) Valkey
    log = tmp_path / "up.log"
    up = spawn([sys.executable, "-m", "app.cli", "up", "--port", str(port), "--restart-delay", str(RESTART_DELAY_S)],
               env, log)
    api = Stack(url=f"http://127.0.0.1:{port}", data_dir=tmp_path, redis_url="", env=env, processes=[up])

    def logs() -> str:
        return log.read_text(errors="replace")[-6000:]

    try:
        wait_ready(api.url, up, timeout=START_TIMEOUT_S)
        ready_at = time.monotonic()

        # 1. SIGKILL the worker mid-training: it is restarted, the API serves on, the job publishes once.
        job_a = submit(api, "up-durable", fictional[7])
        job = wait_job(api, job_a, until=lambda j: j["stage"] == "training" or j["status"] not in ("queued", "running"),
                       timeout=LEARN_TIMEOUT_S)
        assert job["status"] == "running", f"job reached {job['status']} before training\n{logs()}"
        worker = child_pid(log, up.pid, "worker-1")
        os.kill(worker, signal.SIGKILL)
        assert httpx.get(api.url + "/readyz", timeout=10).status_code == 200
        new_worker = child_pid(log, up.pid, "worker-1", not_pid=worker, timeout=RESTART_DELAY_S + 60)
        assert up.poll() is None
        job = wait_job(api, job_a, timeout=LEARN_TIMEOUT_S)
        assert job["status"] == "published", f"{job['error']}\n{logs()}"
        assert len([e for e in job["events"] if e["message"].startswith("attempt ")]) >= 2
        assert versions(api, "up-durable") == [1]
        worker_phase_at = time.monotonic()

        # 2. SIGKILL the embedded Valkey while a learn trains: it comes back on the same port with its
        # data, the running job carries on, and a learn posted while it was down is accepted and then
        # dispatched once it is back (app/dispatch.py).
        job_b = submit(api, "up-through", fictional[3])
        job = wait_job(api, job_b, until=lambda j: j["stage"] == "training" or j["status"] not in ("queued", "running"),
                       timeout=LEARN_TIMEOUT_S)
        assert job["status"] == "running", f"job reached {job['status']} before training\n{logs()}"
        valkey = child_pid(log, up.pid, "valkey")
        os.kill(valkey, signal.SIGKILL)
        job_c = submit(api, "up-offline", fictional[0])
        assert child_pid(log, up.pid, "valkey", not_pid=valkey, timeout=RESTART_DELAY_S + 60)
        for job_id, adapter in ((job_b, "up-through"), (job_c, "up-offline")):
            job = wait_job(api, job_id, timeout=LEARN_TIMEOUT_S)
            assert job["status"] == "published", f"{adapter}: {job['error']}\n{logs()}"
            assert versions(api, adapter) == [1]
        # job_c, accepted while the queue was down, was dispatched once it was back.
        assert any(e["message"].startswith("dispatched to the queue after") for e in job["events"]), job["events"]
        assert child_pid(log, up.pid, "worker-1") == new_worker, "the worker rode out Valkey's restart"
        assert versions(api, "up-durable") == [1]
        with api.client() as client:
            reply = client.post("/v1/chat/completions", json={
                "model": "up-offline", "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": fictional[0]["questions"][0]["question"]}]})
            assert reply.status_code == 200, reply.text
        valkey_phase_at = time.monotonic()

        # 3. SIGTERM stops everything, Valkey and engine processes included.
        up.send_signal(signal.SIGTERM)
        assert up.wait(120) == 0, logs()
        deadline = time.monotonic() + 30
        while processes_using(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_using(tmp_path) == []
        text = log.read_text(errors="replace")
        assert re.search(r"worker-1 \(pid \d+\) signal SIGKILL .*restarting in", text), logs()
        assert re.search(r"valkey \(pid \d+\) signal SIGKILL .*restarting in", text), logs()
        if len(os.sched_getaffinity(0)) > 1:
            assert re.search(r"worker-1 engine on cores \S+, training \d+ threads \(\+[1-9]\d* while the host idles\)",
                             text), text[:3000]
            assert "more while nothing else on the host uses CPU" in text, text[-6000:]
        sys.stderr.write(f"seal up: ready {ready_at - started:.0f}s, worker phase {worker_phase_at - ready_at:.0f}s, "
                         f"valkey phase {valkey_phase_at - worker_phase_at:.0f}s, "
                         f"stop {time.monotonic() - valkey_phase_at:.0f}s\n")
    finally:
        kids = list(children(up.pid))
        stop(up)
        for pid in kids:  # each child has a session of its own: up's group does not hold them
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
