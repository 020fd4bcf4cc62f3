"""A deployment's serving stats over a report's period: per chart bucket and in total.

The period is cut into at most ``MAX_BUCKETS`` chart buckets of a round length (10 s to a
day) on the servers' stats grid, and each is read on its own (``store.serving_stats.
window_rows``) and merged with the rollout analysis's code (``data.serving_windows.
merge_rows``): memory holds one chart bucket's rows at a time however long the period, and
the period's totals per version come from merging the buckets' merged sketches, which is
exact (``data.quantile_sketch``). A bucket without stats has no requests and no latency (a
gap in the latency and error-rate charts, zero throughput).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from loopline.core.deployments import WindowStats
from loopline.data.serving_windows import (
    EMPTY,
    grid_ceil,
    grid_floor,
    latency_quantile,
    merge_rows,
)
from loopline.monitoring.report_model import HealthPoint, HealthSection
from loopline.store import MetadataStore
from loopline.store.serving_stats import BUCKET_SECONDS, StatsRow, window_rows

__all__ = ["BUCKET_LENGTHS", "MAX_BUCKETS", "chart_bucket", "serving_history"]

MAX_BUCKETS = 240
BUCKET_LENGTHS = tuple(timedelta(seconds=s) for s in (
    BUCKET_SECONDS, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400))
OVERALL = "overall"


def chart_bucket(start: datetime, end: datetime) -> timedelta:
    """Return the shortest round length that cuts ``[start, end)`` in ``MAX_BUCKETS`` or fewer.

    A day at most: a period over 240 days (longer than a report covers) gets more buckets.
    """
    span = end - start
    return next((length for length in BUCKET_LENGTHS if span / length <= MAX_BUCKETS),
                BUCKET_LENGTHS[-1])


def _point(start: datetime, stats: WindowStats, seconds: float) -> HealthPoint:
    return HealthPoint(
        start=start, requests=stats.requests, errors=stats.errors,
        error_rate=stats.errors / stats.requests if stats.requests else 0.0,
        throughput=stats.requests / seconds, p50_ms=latency_quantile(stats, 0.5),
        p95_ms=latency_quantile(stats, 0.95), p99_ms=latency_quantile(stats, 0.99))


def _as_rows(deployment: str, at: datetime,
             totals: Mapping[str, WindowStats]) -> Iterable[StatsRow]:
    """Return merged stats as rows, so ``merge_rows`` adds them up again."""
    return (StatsRow(deployment, version, "report", at, stats.requests, stats.errors,
                     stats.latency_sketch) for version, stats in totals.items())


def _overall(deployment: str, at: datetime, per_version: Mapping[str, WindowStats],
             ) -> WindowStats:
    """Return the versions' stats added up (``EMPTY`` for none)."""
    rows = (replace(row, model_version=OVERALL)
            for row in _as_rows(deployment, at, per_version))
    return merge_rows(rows).get(OVERALL, EMPTY)


def serving_history(store: MetadataStore, deployment: str, start: datetime,
                    end: datetime) -> HealthSection:
    """Return what ``deployment`` served over ``[start, end)`` (whole stats buckets).

    Raises:
        InvalidArgumentError: for a bad name or period, or a malformed stored sketch.
        BackendError: when the database fails.
    """
    bucket = chart_bucket(start, end)
    grid = timedelta(seconds=BUCKET_SECONDS)
    first, finish = grid_floor(start, grid), grid_ceil(end, grid)
    moment = first
    points: list[HealthPoint] = []
    totals: dict[str, WindowStats] = {}
    while moment < finish:
        upto = min(moment + bucket, finish)
        per_version = merge_rows(window_rows(store.engine, deployment, moment, upto))
        points.append(_point(moment, _overall(deployment, moment, per_version),
                             (upto - moment).total_seconds()))
        if per_version:
            totals = merge_rows([*_as_rows(deployment, start, totals),
                                 *_as_rows(deployment, start, per_version)])
        moment = upto
    seconds = (finish - first).total_seconds()
    versions = {version: _point(start, stats, seconds) for version, stats in
                sorted(totals.items())}
    return HealthSection(bucket, tuple(points), versions, _point(
        start, _overall(deployment, start, totals), seconds) if totals else None)
