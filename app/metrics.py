"""Prometheus metrics. Label values are bounded: models are the base id or adapter names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("seal_requests_total", "HTTP requests served.", ["route", "model", "status"])
REQUEST_SECONDS = Histogram(
    "seal_request_duration_seconds",
    "End-to-end request latency.",
    ["route", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "seal_time_to_first_token_seconds", "Latency until the first streamed token.", ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
)
TOKENS = Counter("seal_tokens_total", "Tokens processed.", ["model", "kind"])
ADAPTER_SWAPS = Counter("seal_adapter_swaps_total", "Hot-swaps of an adapter to a new version.", ["adapter"])
ADAPTER_SWAP_SECONDS = Histogram(
    "seal_adapter_swap_seconds", "From swap start until the new version is routable.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
ADAPTER_VERSION = Gauge("seal_adapter_version", "Version currently served per adapter (0 = not served).", ["adapter"])
LEARN_JOBS = Counter("seal_learn_jobs_total", "Learn jobs by terminal or entry status.", ["status"])
QUEUE_DEPTH = Gauge("seal_queue_depth", "Jobs waiting in each RQ queue.", ["queue"])
LEARN_JOBS_BY_STATUS = Gauge(
    "seal_learn_jobs_by_status", "Learn jobs in the registry by current status (read at scrape time).", ["status"],
)
# Learn workers export these on SEAL_WORKER_METRICS_PORT (workers/main.py), next to LEARN_JOBS.
LEARN_STAGE_SECONDS = Histogram(
    "seal_learn_stage_seconds", "Time one learn job spent in each stage.", ["stage"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600),
)
LEARN_JOB_SECONDS = Histogram(
    "seal_learn_job_seconds", "Wall time of one learn job attempt, by the status it left the job in.", ["status"],
    buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
WORKER_BUSY = Gauge("seal_worker_busy", "1 while this worker runs a job.")
