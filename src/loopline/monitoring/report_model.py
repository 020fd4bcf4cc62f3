"""What a monitoring report shows: one deployment's drift, quality, health, alerts and actions.

Pure: no I/O. ``report_gather.gather`` builds a ``MonitorReport`` from the store and
``report_html.render`` draws it; ``MonitorReport.summary`` is what the CLI prints (and
``--json`` emits). A point's value is None where nothing could be measured (a gap in a
chart, not a zero). An evaluation belongs to the period when its window ends in ``(start,
end]``; an alert when it was firing at some moment of ``[start, end]``, a route change when
it happened then; serving stats when their bucket starts in ``[start, end)``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import Alert, AlertState, PlaybookAction

__all__ = ["DEFAULT_SINCE", "MAX_PERIOD", "ColumnScore", "DriftChart", "DriftLatest",
           "EvaluationCounts", "Header", "HealthPoint", "HealthSection", "MonitorReport",
           "Point", "QualityLatest", "QualitySeries", "RouteChange", "Series", "report_period"]

DEFAULT_SINCE = timedelta(days=7)
MAX_PERIOD = timedelta(days=90)


def report_period(now: datetime, since: timedelta | None = None, start: datetime | None = None,
                  end: datetime | None = None) -> tuple[datetime, datetime]:
    """Return the report's ``(start, end)``: ``end`` (default ``now``) back ``since`` or ``start``.

    Raises:
        InvalidArgumentError: naming ``--since`` when given with ``--start`` or not above
            0, ``--end`` when not after the start, ``--since`` or ``--start`` when the
            period is over 90 days, or a naive time.
    """
    if since is not None and start is not None:
        raise InvalidArgumentError("--since/--start", "give a length or a start time, not both")
    if since is not None and since <= timedelta(0):
        raise InvalidArgumentError("--since", "must be longer than 0")
    for name, when in (("now", now), ("--start", start), ("--end", end)):
        if when is not None and when.utcoffset() is None:
            raise InvalidArgumentError(name, "must be a timezone-aware time")
    finish = now if end is None else end
    begin = start if start is not None else finish - (since or DEFAULT_SINCE)
    if finish <= begin:
        raise InvalidArgumentError("--end", f"{finish.isoformat()} must be after the start "
                                            f"{begin.isoformat()}")
    if finish - begin > MAX_PERIOD:
        raise InvalidArgumentError("--since" if start is None else "--start",
                                   "a report covers at most 90 days")
    return begin, finish


@dataclass(frozen=True, slots=True)
class Point:
    """One value at one time; ``value`` None where nothing was measured."""

    at: datetime
    value: float | None


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a name, its points oldest first, and the threshold it is judged by."""

    name: str
    points: tuple[Point, ...]
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class RouteChange:
    """A revision of the deployment's routes inside the period."""

    revision: int
    at: datetime
    state: str
    reason: str
    actor: str
    routes: str


@dataclass(frozen=True, slots=True)
class Header:
    """The deployment now, the config in force, and what the period's evaluations used."""

    deployment: str
    state: str
    revision: int
    routes: tuple[str, ...]  # "models:/fraud/2 100% primary"
    config_digest: str | None
    config_applied_at: datetime | None
    config_applied_by: str | None
    digests_used: tuple[str, ...] = ()
    route_changes: tuple[RouteChange, ...] = ()


@dataclass(frozen=True, slots=True)
class EvaluationCounts:
    """How many evaluations the period holds, by status, over how many rules."""

    total: int = 0
    breached: int = 0
    ok: int = 0
    insufficient: int = 0
    rules: int = 0


@dataclass(frozen=True, slots=True)
class ColumnScore:
    """One column's drift in one evaluation (``drift.ColumnDrift`` as stored)."""

    column: str
    method: str
    score: float | None
    threshold: float | None
    drifted: bool
    kind: str = ""
    reference_count: int | None = None
    current_count: int | None = None

    @property
    def p_value(self) -> bool:
        """Whether the score is a p-value (drift *below* the threshold)."""
        return self.method in ("ks", "chi_square")

    @property
    def badness(self) -> float:
        """How far past (above 1) or short of its threshold the score is; 0 when unknown."""
        score, limit = self.score, self.threshold
        if score is None or limit is None or not math.isfinite(score) or limit <= 0:
            return 0.0
        if self.p_value:
            return limit / score if score > 0 else math.inf
        return score / limit


@dataclass(frozen=True, slots=True)
class DriftChart:
    """One drift rule's per-column scores by one method over time.

    ``hidden`` columns were left out of the chart (they are in the table), the least
    drifted first, to keep it readable.
    """

    rule: str
    scope_key: str
    signal: str
    method: str
    window: str
    columns: tuple[Series, ...]
    hidden: int = 0

    @property
    def p_value(self) -> bool:
        """Whether the scores are p-values (drift *below* the threshold)."""
        return self.method in ("ks", "chi_square")


@dataclass(frozen=True, slots=True)
class DriftLatest:
    """A drift rule's newest evaluation in the period: every column's score."""

    rule: str
    signal: str
    at: datetime
    model_version: str | None
    columns: tuple[ColumnScore, ...]
    share: float | None = None
    share_threshold: float | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class QualitySeries:
    """A quality rule's metric on its slice over time, and the training value."""

    rule: str
    scope_key: str
    metric: str
    slice: str
    points: tuple[Point, ...]
    training: float | None = None
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class QualityLatest:
    """A quality (or label share) rule's newest evaluation: the value beside training's."""

    rule: str
    metric: str
    slice: str
    at: datetime
    model_version: str | None
    value: float | None
    training: float | None
    labelled: int | None
    total: int | None
    label_share: float | None
    reason: str | None = None

    @property
    def drop(self) -> float | None:
        """The training value minus the latest (positive is worse for most metrics)."""
        if self.value is None or self.training is None:
            return None
        return self.training - self.value


@dataclass(frozen=True, slots=True)
class HealthPoint:
    """What the deployment served in one chart bucket ``[start, start + width)``."""

    start: datetime
    requests: int
    errors: int
    error_rate: float
    throughput: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class HealthSection:
    """Serving stats over the period: per chart bucket, and in total per version."""

    bucket: timedelta
    points: tuple[HealthPoint, ...] = ()
    versions: Mapping[str, HealthPoint] = field(default_factory=dict)
    overall: HealthPoint | None = None


@dataclass(frozen=True, slots=True)
class MonitorReport:
    """Everything one report shows about one deployment from ``start`` to ``end``."""

    header: Header
    start: datetime
    end: datetime
    counts: EvaluationCounts
    drift_charts: tuple[DriftChart, ...]
    drift_latest: tuple[DriftLatest, ...]
    quality_series: tuple[QualitySeries, ...]
    quality_latest: tuple[QualityLatest, ...]
    health: HealthSection
    alerts: tuple[Alert, ...]
    actions: tuple[PlaybookAction, ...]

    def summary(self) -> dict[str, Any]:
        """Return what the report shows in a few numbers (JSON-ready)."""
        states = Counter(str(action.state) for action in self.actions)
        overall = self.health.overall
        drifted = sorted({c.column for latest in self.drift_latest for c in latest.columns
                          if c.drifted})
        return {
            "deployment": self.header.deployment, "start": self.start.isoformat(),
            "end": self.end.isoformat(), "config_digest": self.header.config_digest,
            "routes": list(self.header.routes),
            "evaluations": {"total": self.counts.total, "breached": self.counts.breached,
                            "ok": self.counts.ok, "insufficient": self.counts.insufficient,
                            "rules": self.counts.rules},
            "drift": {"charts": len(self.drift_charts),
                      "columns": len({c.column for latest in self.drift_latest
                                      for c in latest.columns}),
                      "drifted_now": drifted},
            "quality": [{"rule": q.rule, "metric": q.metric, "slice": q.slice, "value": q.value,
                         "training": q.training} for q in self.quality_latest],
            "health": None if overall is None else {
                "requests": overall.requests, "errors": overall.errors,
                "error_rate": overall.error_rate, "p50_ms": overall.p50_ms,
                "p95_ms": overall.p95_ms, "p99_ms": overall.p99_ms},
            "alerts": {"total": len(self.alerts),
                       "firing": sum(a.state is AlertState.FIRING for a in self.alerts)},
            "actions": {"total": len(self.actions), **dict(sorted(states.items()))},
        }
