"""The `policy` queue end to end: `seal policy enqueue` -> a real RQ worker runs ReST-EM -> the policy is
published like any adapter, resolves the way learn jobs resolve `SEAL_POLICY`, and a rerun resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from app.queue import fetch_rq_job
from app.store import open_store
from tests.conftest import REPO, service_env, spawn, stop
from workers.main import WorkerContext
from workers.seal.restem import POLICY_MANIFEST, read_policy_format
from workers.stream_run import resolve_policy_adapter

POLICY = "tiny-policy"


def enqueue(env: dict[str, str]) -> str:
    # n=1, k=1, one round, 2 inner epochs: the smallest ReST-EM that still samples, trains, scores and SFTs.
    out = subprocess.run([sys.executable, "-m", "app.cli", "policy", "enqueue", POLICY, "-n", "1", "-k", "1",
                          "--rounds", "1", "--epochs", "2"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("queued policy training ")[1].split()[0]


def test_policy_job_publishes_a_policy_that_learn_jobs_resolve(scratch_redis_url, scratch_redis, tmp_path):
    data_dir = tmp_path / "data"
    # The transformers generator: no vLLM engine to start for a job this small (SEAL_WORKER_GENERATOR=hf).
    env = service_env(data_dir, scratch_redis_url, SEAL_WORKER_GENERATOR="hf")
    first, again = enqueue(env), enqueue(env)  # the second finds every checkpoint of the first
    log = tmp_path / "worker.log"
    worker = spawn([sys.executable, "-m", "app.cli", "worker", "-q", "policy", "--burst"], env, log)
    try:
        assert worker.wait(600) == 0, log.read_text()[-4000:]
    finally:
        stop(worker)

    jobs = [fetch_rq_job(scratch_redis, i) for i in (first, again)]
    assert [j.get_status() for j in jobs] == ["finished", "finished"], log.read_text()[-4000:]
    report, rerun = (j.return_value() for j in jobs)
    (round1,) = report["rounds"]
    assert round1["passages"] == 1 and round1["sampled_edits"] == 1 and round1["sft"]
    assert (report["version"], rerun["version"]) == (1, 2), "each job publishes a new version of the policy"
    # Compared as JSON: a round that kept nothing has NaN SFT losses (no steps), and NaN != NaN.
    assert json.dumps(rerun["rounds"]) == json.dumps(report["rounds"]), "the rerun resumed from the checkpoints"
    checkpoint = data_dir / "policies" / POLICY / "round-1" / "passages"
    (scored,) = checkpoint.glob("*.json")
    assert json.loads(scored.read_text())["baseline_kind"] == "passage"

    # Learn jobs resolve a policy name through the registry and the store, as for SEAL_POLICY=tiny-policy.
    settings = Settings(data_dir=data_dir, redis_url=scratch_redis_url)
    ctx = WorkerContext(settings, scratch_redis, open_store(settings), None, None, None)
    name, path = resolve_policy_adapter(ctx, {"policy": POLICY})
    assert name == f"{POLICY}@v2"
    assert (Path(path) / "adapter_config.json").is_file() and (Path(path) / POLICY_MANIFEST).is_file()
    assert read_policy_format(path) == "rewrite"
