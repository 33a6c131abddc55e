"""The `seal` client commands against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import KEYS, REPO


def seal(stack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**stack.env, "SEAL_URL": stack.url, "SEAL_API_KEY": KEYS["acme"][0], "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_models_and_ask(stack):
    listed = seal(stack, "models")
    assert listed.returncode == 0 and "SmolLM2-135M-Instruct" in listed.stdout
    answer = seal(stack, "ask", "What is the capital of France?")
    assert answer.returncode == 0 and "Paris" in answer.stdout
    missing = seal(stack, "ask", "hi", "--model", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr


@pytest.mark.slow
def test_learn_wait_shows_progress_and_metrics(stack, workers, fictional, tmp_path):
    passage = fictional[6]
    doc = tmp_path / "doc.jsonl"
    doc.write_text(json.dumps(passage) + "\n")
    result = seal(stack, "learn", str(doc), "--adapter", "cli-notes", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published" in result.stdout and "cli-notes@v1" in result.stdout
    assert "accuracy_after" in result.stdout and "training (s)" in result.stdout
    jobs = seal(stack, "jobs", "--adapter", "cli-notes")
    assert jobs.returncode == 0 and "published" in jobs.stdout
    shown = seal(stack, "adapters", "show", "cli-notes")
    assert shown.returncode == 0 and "cli-notes" in shown.stdout
