"""The model server's Prometheus metrics, in a registry of its own (never the global one).

Names: ``loopline_requests_total{deployment,model_version,code}``,
``loopline_request_seconds{deployment,model_version}``, ``loopline_batch_rows{model_version}``,
``loopline_prediction_queue_depth``, ``loopline_prediction_log_dropped``,
``loopline_table_swaps_total``, ``loopline_model_load_failures_total``,
``loopline_shadow_dropped_total`` (shadow requests dropped: their queue was full) and
``loopline_prediction_log_refused_total`` (records the prediction log refused as invalid).
Labels only ever hold routed deployments and versions (or ``unknown``/``none``), never
what a caller sent, so the number of series stays bounded.

Several worker processes (``loopline serve --workers N``) share their series through
Prometheus' multiprocess mode: ``shared_metrics_dir`` sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers start, each worker writes its values there, and whichever worker answers
``/metrics`` renders the sum over all of them (gauges summed over the live workers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of ``ServingMetrics.render``'s output."""

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """Put worker processes started inside this block in multiprocess mode.

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when the caller has set it (and leaves it alone);
    otherwise creates an empty directory for this run and removes it afterwards. The
    variable must be set before the workers import ``prometheus_client``, which spawned
    workers do afresh.
    """
    given = os.environ.get(MULTIPROCESS_ENV)
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="loopline-metrics-")
    os.environ[MULTIPROCESS_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


class ServingMetrics:
    """Counters, histograms and gauges of one server process, rendered as Prometheus text."""

    def __init__(self) -> None:
        self.shared_dir = os.environ.get(MULTIPROCESS_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._batch_children: dict[str, Histogram] = {}
        self._requests = Counter(
            "loopline_requests", "Requests answered, by deployment, model version and status.",
            ("deployment", "model_version", "code"), registry=self.registry)
        self._latency = Histogram(
            "loopline_request_seconds", "Time to answer a request, in seconds.",
            ("deployment", "model_version"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self._batch_rows = Histogram(
            "loopline_batch_rows", "Rows scored per predict call.", ("model_version",),
            buckets=BATCH_ROW_BUCKETS, registry=self.registry)
        self._queue_depth = Gauge(
            "loopline_prediction_queue_depth", "Predictions waiting to be logged.",
            registry=self.registry, multiprocess_mode="livesum")
        self._dropped = Gauge(
            "loopline_prediction_log_dropped",
            "Predictions the log dropped since the server started (its queue was full).",
            registry=self.registry, multiprocess_mode="livesum")
        self._swaps = Counter(
            "loopline_table_swaps", "Routing tables swapped in after a deployment change.",
            registry=self.registry)
        self._load_failures = Counter(
            "loopline_model_load_failures", "Model versions that failed to load.",
            registry=self.registry)
        self._shadow_dropped = Counter(
            "loopline_shadow_dropped", "Shadow requests dropped because their queue was full.",
            registry=self.registry)
        self._log_refused = Counter(
            "loopline_prediction_log_refused",
            "Prediction records the prediction log refused (not logged).",
            registry=self.registry)

    def observe(self, deployment: str, model_version: str, status_code: int,
                seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (deployment, model_version, status_code)
        children = self._children.get(key)
        if children is None:  # a label lookup costs more than the update: once per series
            children = self._children[key] = (
                self._requests.labels(deployment, model_version, str(status_code)),
                self._latency.labels(deployment, model_version))
        children[0].inc()
        children[1].observe(seconds)

    def batch(self, model_version: str, rows: int) -> None:
        """Record one ``predict`` call of ``rows`` rows."""
        child = self._batch_children.get(model_version)
        if child is None:
            child = self._batch_children[model_version] = self._batch_rows.labels(model_version)
        child.observe(rows)

    def set_queue_depth(self, n: int) -> None:
        """Set how many predictions wait to be logged."""
        self._queue_depth.set(n)

    def set_dropped(self, n: int) -> None:
        """Set how many predictions the log has dropped so far (the writer's counter)."""
        self._dropped.set(n)

    def table_swapped(self) -> None:
        """Count one routing-table swap."""
        self._swaps.inc()

    def load_failed(self, n: int = 1) -> None:
        """Count ``n`` model versions that failed to load."""
        self._load_failures.inc(n)

    def shadow_dropped(self) -> None:
        """Count one shadow request dropped (its queue was full)."""
        self._shadow_dropped.inc()

    def log_refused(self) -> None:
        """Count one prediction record the log refused."""
        self._log_refused.inc()

    def render(self) -> bytes:
        """Return every metric as Prometheus text exposition (``CONTENT_TYPE``).

        In multiprocess mode: the sum over every worker that wrote to the shared directory.
        """
        if self.shared_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(combined)

    def close(self) -> None:
        """Take this process's live gauges out of the shared sums (multiprocess mode only)."""
        if self.shared_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.shared_dir)  # type: ignore[no-untyped-call]
