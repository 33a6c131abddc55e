"""Prometheus metrics. Label values are bounded: the base id, the top adapters by traffic, "other"."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

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
ADAPTER_VERSION = Gauge(
    "seal_adapter_version", "Version currently served, for the adapters that have their own label.", ["adapter"],
)
ADAPTERS_SERVED = Gauge("seal_adapters_served", "Adapters currently routed to a version.")
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
KB_ROUTES = Counter("seal_kb_routes_total", "Knowledge-base requests by where the router sent them "
                    "(shard: from weights; reading: the base model reading a learned document whose weights "
                    "answered its probes worse than reading it; pending/context: the base model "
                    "reading the document; unsure: the base model reading the likeliest document; base: the base model).",
                    ["model", "route"])
KB_ROUTE_SECONDS = Histogram("seal_kb_route_seconds", "Time to route one knowledge-base request.",
                             buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25))
WORKER_BUSY = Gauge("seal_worker_busy", "1 while this worker runs a job.")


# --- bounded adapter labels -------------------------------------------------------------------
# Adapter names are tenant data: a label per adapter would list every tenant's adapters to anyone
# who can scrape, and grow the series count with the adapter count. So only the busiest adapters
# keep their own label and everything else is counted as OTHER.

OTHER = "other"
NO_MODEL = "-"
# (metric, label name) pairs whose label carries an adapter name, cleared when an adapter loses its label.
_ADAPTER_LABELLED = (
    (REQUESTS, "model"), (REQUEST_SECONDS, "model"), (TIME_TO_FIRST_TOKEN, "model"), (TOKENS, "model"),
    (ADAPTER_SWAPS, "adapter"), (ADAPTER_VERSION, "adapter"),
)


class AdapterLabels:
    """Which adapters get their own label: at most `max_adapters`, chosen by recent traffic.

    Traffic counts halve every `decay_s`, so an adapter that was busy last week yields its label
    to one that is busy now. A newcomer takes a label from the least busy holder only once it has
    more than twice that holder's traffic: two adapters of equal traffic must not trade the label
    back and forth, as each trade drops the loser's series.
    """

    def __init__(self, max_adapters: int = 20, base_model_id: str | None = None, *, decay_s: float = 600.0,
                 clock=time.monotonic):
        self.max_adapters = max_adapters
        self.base_model_id = base_model_id
        self.decay_s = decay_s
        self._clock = clock
        self._last_decay = clock()
        self._traffic: dict[str, float] = {}
        self._labelled: set[str] = set()
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def label(self, name: str | None, *, count: bool = True) -> str:
        """The label for model `name`; `count` records one request for it (False: swaps, re-reads)."""
        if not name:
            return NO_MODEL
        if name == self.base_model_id:
            return name
        with self._lock:
            self._decay()
            if count:
                self._traffic[name] = self._traffic.get(name, 0.0) + 1
            if name in self._labelled:
                return name
            if len(self._labelled) < self.max_adapters:
                self._admit(name)
                return name
            if not self._labelled:  # max_adapters == 0
                return OTHER
            weakest = min(self._labelled, key=lambda a: (self._traffic.get(a, 0.0), a))
            if self._traffic.get(name, 0.0) > 2 * self._traffic.get(weakest, 0.0):
                self._evict(weakest)
                self._admit(name)
                return name
            return OTHER

    def set_version(self, adapter: str, version: int) -> None:
        """Record the version `adapter` serves (0: no longer served); exported only while it has a label."""
        with self._lock:
            if version:
                self._versions[adapter] = version
            else:
                self._versions.pop(adapter, None)
            ADAPTERS_SERVED.set(len(self._versions))
            if adapter in self._labelled:
                if version:
                    ADAPTER_VERSION.labels(adapter=adapter).set(version)
                else:
                    _drop_series(ADAPTER_VERSION, "adapter", adapter)

    def _admit(self, name: str) -> None:
        self._labelled.add(name)
        if name in self._versions:
            ADAPTER_VERSION.labels(adapter=name).set(self._versions[name])

    def _evict(self, name: str) -> None:
        self._labelled.discard(name)
        for metric, label in _ADAPTER_LABELLED:
            _drop_series(metric, label, name)

    def _decay(self) -> None:
        halvings = int((self._clock() - self._last_decay) // self.decay_s)
        if halvings < 1:
            return
        self._last_decay += halvings * self.decay_s
        factor = 0.5 ** halvings
        # Decay also forgets adapters nobody asked for lately, so this dict stays small too.
        self._traffic = {k: v * factor for k, v in self._traffic.items() if v * factor >= 0.5 or k in self._labelled}


def _drop_series(metric, label: str, value: str) -> None:
    remove_by_labels = getattr(metric, "remove_by_labels", None)  # prometheus-client >= 0.22
    if remove_by_labels is not None:
        remove_by_labels({label: value})
        return
    index = metric._labelnames.index(label)
    for labelvalues in [k for k in list(metric._metrics) if k[index] == value]:
        metric.remove(*labelvalues)


_labels = AdapterLabels()


def configure_model_labels(*, max_adapters: int, base_model_id: str) -> None:
    """Start a fresh label table (the API process calls this once, from create_app)."""
    global _labels
    _labels = AdapterLabels(max_adapters, base_model_id)


def model_label(name: str | None, *, count: bool = True) -> str:
    """The `model`/`adapter` label value for a base model id or adapter name: bounded, see AdapterLabels."""
    return _labels.label(name, count=count)


def set_adapter_version(adapter: str, version: int) -> None:
    _labels.set_version(adapter, version)


def bearer_matches(token: str, authorization: str | None) -> bool:
    """Whether an Authorization header carries `token` as a bearer token, compared in constant time."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Equal-length digests: compare_digest would otherwise reveal the token's length.
    return secrets.compare_digest(hashlib.sha256(presented.strip().encode()).digest(),
                                  hashlib.sha256(token.encode()).digest())
