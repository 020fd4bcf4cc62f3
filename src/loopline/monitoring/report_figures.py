"""Which charts a monitoring report draws, and from what: the report's data as chart specs.

Pure: no I/O, no matplotlib (``report_charts`` draws the specs). Chart keys are numbered in
page order (``chart-1``, ...), never made of names users chose, since they become ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from loopline.core.monitoring import ActionState, AlertState, Severity
from loopline.monitoring.report_charts import Level, Line, LineChart, Mark, Span, Timeline
from loopline.monitoring.report_model import DriftChart, MonitorReport, Point, QualitySeries

__all__ = ["ACTION_COLORS", "ACTION_MARKERS", "MAX_TIMELINE_ROWS", "ChartKeys",
           "drift_chart", "health_charts", "quality_charts", "timeline"]

MAX_TIMELINE_ROWS = 40
MIN_SPAN_PARTS = 300  # the shortest bar is this part of the period
SEVERITY_COLORS = {Severity.INFO: "#1f77b4", Severity.WARNING: "#ff7f0e",
                   Severity.CRITICAL: "#d62728"}
ACTION_COLORS = {ActionState.DONE: "#2ca02c", ActionState.FAILED: "#d62728",
                 ActionState.SKIPPED: "#aaaaaa"}
OPEN_ACTION_COLOR = "#ffbf00"  # pending, awaiting approval, running
ACTION_MARKERS = {"retrain": "o", "rollback": "s", "quarantine": "X", "notify": "^"}


@dataclass
class ChartKeys:
    """Hands out ``chart-1``, ``chart-2``, ... in the order charts appear on the page."""

    count: int = 0

    def next(self) -> str:
        """Return the next key."""
        self.count += 1
        return f"chart-{self.count}"


def drift_chart(report: MonitorReport, chart: DriftChart, key: str) -> LineChart:
    """Return one drift rule's per-column scores by one method, with the thresholds."""
    thresholds = {line.threshold for line in chart.columns if line.threshold is not None}
    levels: list[Level] = []
    if len(thresholds) == 1:
        only = next(iter(thresholds))
        levels.append(Level(f"threshold {only:g}", only))
    else:
        levels.extend(Level(f"{line.name} threshold", line.threshold, index)
                      for index, line in enumerate(chart.columns) if line.threshold is not None)
    side = "drift below the threshold" if chart.p_value else "drift at or above the threshold"
    return LineChart(
        key, f"{chart.rule}: {chart.method} per column ({side})",
        "p-value" if chart.p_value else chart.method, report.start, report.end,
        [Line(line.name, line.points, index) for index, line in enumerate(chart.columns)],
        levels)


def quality_charts(report: MonitorReport, keys: ChartKeys) -> Iterator[tuple[str, LineChart]]:
    """Yield ``(metric, chart)``: per metric, one line per rule's slice and its training value."""
    metrics = sorted({series.metric for series in report.quality_series})
    for metric in metrics:
        chosen = [s for s in report.quality_series if s.metric == metric]
        slices = [s.slice for s in chosen]
        lines, levels = [], []
        for index, series in enumerate(chosen):
            name = _quality_name(series, slices.count(series.slice) > 1)
            lines.append(Line(name, series.points, index))
            if series.training is not None:
                levels.append(Level(f"{name} at training", series.training, index))
        for threshold in sorted({s.threshold for s in chosen if s.threshold is not None}):
            levels.append(Level(f"alert threshold {threshold:g}", threshold))
        yield metric, LineChart(keys.next(), f"{metric} per slice", metric, report.start,
                                report.end, lines, levels)


def _quality_name(series: QualitySeries, repeated: bool) -> str:
    return f"{series.slice} ({series.rule})" if repeated else series.slice


def health_charts(report: MonitorReport, keys: ChartKeys) -> list[LineChart]:
    """Return the latency percentiles and the error rate over the period's buckets."""
    points = report.health.points
    latency = [Line(name, [Point(p.start, getattr(p, f"{name}_ms")) for p in points], index)
               for index, name in enumerate(("p50", "p95", "p99"))]
    errors = [Line("error rate (%)", [Point(p.start, p.error_rate * 100.0 if p.requests
                                            else None) for p in points], 3)]
    throughput = [Line("requests per second", [Point(p.start, p.throughput) for p in points],
                       0)]
    return [LineChart(keys.next(), "latency (ms)", "ms", report.start, report.end, latency),
            LineChart(keys.next(), "error rate (%)", "%", report.start, report.end, errors,
                      height=2.4),
            LineChart(keys.next(), "throughput (requests per second)", "requests/s",
                      report.start, report.end, throughput, height=2.4)]


def _action_color(state: ActionState) -> str:
    return ACTION_COLORS.get(state, OPEN_ACTION_COLOR)


def timeline(report: MonitorReport, key: str) -> Timeline:
    """Return the alerts (newest ``MAX_TIMELINE_ROWS``) as bars with their actions as marks.

    A firing alert's bar runs to the end of the period; an action's mark sits at its last
    change (``updated_at``); route changes are vertical lines named by revision.
    """
    alerts = report.alerts[-MAX_TIMELINE_ROWS:]
    rows = {alert.id: row for row, alert in enumerate(alerts)}
    least = (report.end - report.start) / MIN_SPAN_PARTS  # an instant still shows
    spans = []
    for alert in alerts:
        begin = max(alert.opened_at, report.start)
        finish = _span_end(alert.resolved_at, alert.state, report.end)
        spans.append(Span(f"{alert.rule} ({alert.severity})", begin, max(finish, begin + least),
                          SEVERITY_COLORS.get(alert.severity, "#7f7f7f")))
    marks = [Mark(rows[action.alert_id], _clamped(action.updated_at, report), str(action.kind),
                  _action_color(action.state))
             for action in report.actions if action.alert_id in rows]
    changes = [(change.at, f"r{change.revision}") for change in report.header.route_changes]
    return Timeline(key, report.start, report.end, spans, marks, changes, dict(ACTION_MARKERS))


def _span_end(resolved: datetime | None, state: AlertState, end: datetime) -> datetime:
    if state is AlertState.FIRING or resolved is None:
        return end
    return min(resolved, end)


def _clamped(at: datetime, report: MonitorReport) -> datetime:
    return min(max(at, report.start), report.end)
