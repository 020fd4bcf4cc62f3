"""Serving health of a deployment over a window: requests, errors, throughput, latency.

Reads the servers' stats (``store.serving_stats``) and merges them with the rollout
analysis's code (``data.serving_windows.merge_rows``): counts are added and latency sketches
merged exactly, per model version (its URI, ``models:/NAME/VERSION``) and overall. The
window holds the stats buckets that start in ``[start, end)``; put both ends on the bucket
grid (``serving_windows.grid_floor``/``grid_ceil``) to count whole buckets only. Throughput is
requests per second of the window (``end - start``). A window without latency data has
``None`` percentiles; without requests, an error rate of 0.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from loopline.core.deployments import WindowStats
from loopline.core.errors import InvalidArgumentError
from loopline.data.serving_windows import latency_quantile, merge_rows
from loopline.store import MetadataStore
from loopline.store.serving_stats import window_rows

__all__ = ["OVERALL", "HealthReport", "VersionHealth", "health"]

OVERALL = "overall"
QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))


@dataclass(frozen=True, slots=True)
class VersionHealth:
    """What one version (or all of them) served in the window."""

    requests: int
    errors: int
    error_rate: float
    throughput: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the numbers as JSON-ready data."""
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": self.error_rate, "throughput": self.throughput,
                "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms}


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A deployment's health in ``[start, end)``: overall and per version URI."""

    deployment: str
    start: datetime
    end: datetime
    overall: VersionHealth
    versions: Mapping[str, VersionHealth] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (times as ISO-8601 text)."""
        return {"deployment": self.deployment, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "overall": self.overall.to_dict(),
                "versions": {uri: part.to_dict() for uri, part in self.versions.items()}}


def _health(stats: WindowStats, seconds: float) -> VersionHealth:
    """Return the health numbers of merged ``stats`` over ``seconds``."""
    found = {name: latency_quantile(stats, q) for name, q in QUANTILES}
    return VersionHealth(
        requests=stats.requests, errors=stats.errors,
        error_rate=stats.errors / stats.requests if stats.requests else 0.0,
        throughput=stats.requests / seconds,
        p50_ms=found["p50_ms"], p95_ms=found["p95_ms"], p99_ms=found["p99_ms"])


def health(store: MetadataStore, deployment: str, model_version: str | None,
           start: datetime, end: datetime) -> HealthReport:
    """Return ``deployment``'s health in ``[start, end)``, of one version URI or all (None).

    Raises:
        InvalidArgumentError: naming ``deployment``, ``start``, ``end`` or
            ``model_version`` when it is malformed (``end`` must be after ``start``), or a
            stored sketch when it is.
        BackendError: when the database fails.
    """
    if model_version is not None and (not isinstance(model_version, str) or not model_version):
        raise InvalidArgumentError("model_version", "must be a version URI such as "
                                                    "'models:/NAME/VERSION', or None for all")
    for name, when in (("start", start), ("end", end)):
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidArgumentError(name, "must be an aware datetime")
    if end <= start:
        raise InvalidArgumentError("end", f"{end.isoformat()} must be after the start "
                                          f"{start.isoformat()}")
    rows = window_rows(store.engine, deployment, start, end)  # checks the deployment name
    if model_version is not None:
        rows = [row for row in rows if row.model_version == model_version]
    seconds = (end - start).total_seconds()
    per_version = merge_rows(rows)
    together = merge_rows(replace(row, model_version=OVERALL) for row in rows)
    overall = together.get(OVERALL, WindowStats(0, 0, {}))
    return HealthReport(deployment, start, end, _health(overall, seconds),
                        {uri: _health(stats, seconds) for uri, stats in
                         sorted(per_version.items())})
