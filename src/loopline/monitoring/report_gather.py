"""Gathering a monitoring report from the store: one deployment, one period, bounded reads.

Read-only. Every evaluation of the period is counted from its light columns
(``store.monitor_history``); the charts use at most ``MAX_POINTS`` evaluations per rule and
scope, the newest of each of as many equal slices of the period, so a week of
once-a-minute drift evaluations loads a few hundred ``numbers`` documents, not ten thousand.
The newest evaluation of each rule is always among them. Serving stats are read per chart
bucket (``report_health``). Alerts are those firing at some moment of the period (at most
``monitor_history.MAX_ALERTS``, the newest), with every action of their playbooks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby

from loopline.core.deployments import Deployment, DeploymentChange
from loopline.core.monitoring import EvaluationStatus
from loopline.monitoring.report_health import serving_history
from loopline.monitoring.report_model import (
    EvaluationCounts,
    Header,
    MonitorReport,
    RouteChange,
    report_period,
)
from loopline.monitoring.report_series import (
    DRIFT_SIGNALS,
    QUALITY_SIGNALS,
    drift_sections,
    quality_sections,
)
from loopline.store import MetadataStore
from loopline.store.deployment_queries import DeploymentQueries
from loopline.store.monitor_history import EvaluationPoint, MonitorHistory
from loopline.store.monitor_records import MonitorRecords

__all__ = ["MAX_POINTS", "gather", "sample_points"]

MAX_POINTS = 240
MAX_REVISIONS = 1000  # route changes looked through for the period's


def sample_points(points: Sequence[EvaluationPoint], start: datetime, end: datetime,
                  limit: int = MAX_POINTS) -> list[EvaluationPoint]:
    """Return, per rule and scope, the newest point of each of ``limit`` slices of the period.

    ``points`` are ordered by rule, scope and window end (as ``evaluation_points`` lists
    them); so is the answer.
    """
    width = (end - start) / limit
    chosen: list[EvaluationPoint] = []
    for _, group in groupby(points, key=lambda p: (p.rule, p.scope_key)):
        newest: dict[int, EvaluationPoint] = {}
        for point in group:
            newest[min(limit - 1, max(0, int((point.window_end - start) / width)))] = point
        chosen.extend(newest[index] for index in sorted(newest))
    return chosen


def _counts(points: Sequence[EvaluationPoint]) -> EvaluationCounts:
    statuses = Counter(point.status for point in points)
    return EvaluationCounts(len(points), statuses[EvaluationStatus.BREACHED],
                            statuses[EvaluationStatus.OK], statuses[EvaluationStatus.INSUFFICIENT],
                            len({point.rule for point in points}))


def _routes(deployment: Deployment) -> tuple[str, ...]:
    return tuple(f"{route.uri} {route.weight:g}% {route.role}" for route in deployment.routes)


def _changes(history: Sequence[DeploymentChange], start: datetime,
             end: datetime) -> tuple[RouteChange, ...]:
    return tuple(RouteChange(change.revision, change.at, str(change.state), change.reason,
                             change.actor, ", ".join(f"{route.uri} {route.weight:g}% "
                                                     f"{route.role}" for route in change.routes))
                 for change in sorted(history, key=lambda c: c.revision)
                 if start <= change.at <= end)


def _header(store: MetadataStore, deployment: Deployment, points: Sequence[EvaluationPoint],
            start: datetime, end: datetime) -> Header:
    config = MonitorRecords(store.engine).newest_config()
    history = DeploymentQueries(store.engine).history(deployment.name, MAX_REVISIONS)
    return Header(
        deployment=deployment.name, state=str(deployment.state), revision=deployment.revision,
        routes=_routes(deployment),
        config_digest=None if config is None else config.digest,
        config_applied_at=None if config is None else config.applied_at,
        config_applied_by=None if config is None else config.applied_by,
        digests_used=tuple(sorted({point.config_digest for point in points})),
        route_changes=_changes(history, start, end))


def gather(store: MetadataStore, deployment: str, start: datetime,
           end: datetime) -> MonitorReport:
    """Return the report of ``deployment`` from ``start`` to ``end`` (as ``report_model`` says).

    Raises:
        NotFoundError: when there is no deployment ``deployment``.
        InvalidArgumentError: naming ``--end`` or ``--start`` for a period out of order or
            over 90 days, or a stored sketch that is malformed.
        BackendError: when the database fails.
    """
    start, end = report_period(end, start=start)
    found = DeploymentQueries(store.engine).get(deployment)
    history = MonitorHistory(store.engine)
    points = history.evaluation_points(deployment, start, end)
    charted = [point.id for point in sample_points(points, start, end, MAX_POINTS)
               if point.signal in DRIFT_SIGNALS | QUALITY_SIGNALS]
    evaluations = history.evaluations(charted)
    drift_charts, drift_latest = drift_sections(evaluations)
    quality_series, quality_latest = quality_sections(evaluations)
    alerts = history.alerts(deployment, start, end)
    return MonitorReport(
        header=_header(store, found, points, start, end), start=start, end=end,
        counts=_counts(points), drift_charts=drift_charts, drift_latest=drift_latest,
        quality_series=quality_series, quality_latest=quality_latest,
        health=serving_history(store, deployment, start, end), alerts=tuple(alerts),
        actions=tuple(history.actions([alert.id for alert in alerts])))
