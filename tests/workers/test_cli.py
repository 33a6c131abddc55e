"""The `seal` client commands against the running stack (`seal learn --wait` is in test_learn_e2e.py)."""

from __future__ import annotations

import subprocess
import sys

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
