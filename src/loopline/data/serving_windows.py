"""A deployment's serving stats over a window, merged per model version.

Servers write one ``serving_stats`` row per instance, version and time bucket; the rollout
analysis (``loop``) and health monitoring (``monitoring``) want one ``WindowStats`` per
version: counts added, latency sketches merged (exactly, see ``data.quantile_sketch``). Rows
whose bucket starts in ``[start, end)`` belong to the window. One implementation for both, in
the data layer because it reads the store and merges sketches the store cannot.

``grid_ceil`` and ``grid_floor`` put a moment on the servers' bucket grid (whole multiples of
the bucket length since the epoch), so a window covers whole buckets only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.core.deployments import WindowStats
from loopline.core.errors import InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.store import MetadataStore
from loopline.store.serving_stats import StatsRow, window_rows

__all__ = ["EMPTY", "grid_ceil", "grid_floor", "latency_quantile", "merge_rows", "p99",
           "window"]

EMPTY = WindowStats(0, 0, {})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def grid_floor(moment: datetime, bucket: timedelta) -> datetime:
    """Return the start of the bucket holding ``moment`` (aware, on the bucket grid)."""
    return moment - (moment - _EPOCH) % bucket


def grid_ceil(moment: datetime, bucket: timedelta) -> datetime:
    """Return the first bucket boundary at or after ``moment``."""
    floor = grid_floor(moment, bucket)
    return floor if floor == moment else floor + bucket


def _sketch(data: Mapping[str, Any], field: str) -> QuantileSketch | None:
    """Return the sketch ``data`` holds (None for an empty dict).

    Raises:
        InvalidArgumentError: naming ``field`` when it is not a sketch.
    """
    if not data:
        return None
    try:
        return QuantileSketch.from_dict(dict(data))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(field, exc.problem) from exc


def _merged(first: QuantileSketch, second: QuantileSketch, version: str) -> QuantileSketch:
    try:
        return first.merge(second)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"serving_stats[{version}].latency_sketch", exc.problem
                                   ) from exc


def merge_rows(rows: Iterable[StatsRow]) -> dict[str, WindowStats]:
    """Return the rows' totals per model version: counts added, sketches merged.

    Raises:
        InvalidArgumentError: when a stored sketch is malformed or sketches of one version
            were made with different parameters.
    """
    totals: dict[str, tuple[int, int, QuantileSketch | None]] = {}
    for row in rows:
        requests, errors, sketch = totals.get(row.model_version, (0, 0, None))
        extra = _sketch(row.latency_sketch, f"serving_stats[{row.model_version}].latency_sketch")
        if extra is not None:
            sketch = extra if sketch is None else _merged(sketch, extra, row.model_version)
        totals[row.model_version] = (requests + row.requests, errors + row.errors, sketch)
    return {version: WindowStats(requests, errors, sketch.to_dict() if sketch else {})
            for version, (requests, errors, sketch) in totals.items()}


def window(store: MetadataStore, deployment: str, start: datetime, end: datetime,
           ) -> dict[str, WindowStats]:
    """Return what each version of ``deployment`` served in ``[start, end)``.

    Raises:
        InvalidArgumentError: for a bad name or window, or a malformed stored sketch.
        BackendError: when the database fails.
    """
    return merge_rows(window_rows(store.engine, deployment, start, end))


def latency_quantile(stats: WindowStats, q: float) -> float | None:
    """Return the latency (ms) at quantile ``q`` of ``stats`` (None without latency data).

    Raises:
        InvalidArgumentError: when its sketch is malformed.
    """
    sketch = _sketch(stats.latency_sketch, "latency_sketch")
    return None if sketch is None else sketch.quantile(q)


def p99(stats: WindowStats) -> float | None:
    """Return the 99th percentile latency of ``stats`` (None without latency data).

    Raises:
        InvalidArgumentError: when its sketch is malformed.
    """
    return latency_quantile(stats, 0.99)
