"""The monitoring report as one self-contained HTML page.

Rules kept here: every text that comes from the store or a user (deployment, rule, column,
slice and playbook names, reasons, results) passes through ``html.escape``; the page loads
nothing (no script, font, image or stylesheet from elsewhere: charts are inline SVG, the
style is inline, and a Content-Security-Policy of ``default-src 'none'`` says so to the
browser); it is well-formed XML apart from its doctype; and it is a pure function of the
report, so two renders of the same data are byte-identical (no "generated at" time).
Where nothing was recorded a section says so instead of drawing an empty chart.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loopline._version import __version__
from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import Alert, AlertState, PlaybookAction
from loopline.monitoring.config_yaml import format_duration
from loopline.monitoring.report_charts import line_svg, timeline_svg
from loopline.monitoring.report_figures import (
    MAX_TIMELINE_ROWS,
    ChartKeys,
    drift_chart,
    health_charts,
    quality_charts,
    timeline,
)
from loopline.monitoring.report_model import DriftLatest, HealthPoint, MonitorReport
from loopline.outbound import display_url

__all__ = ["STYLE", "render"]

NONE = "\N{EM DASH}"
RESULT_KEYS = ("reason", "run_id", "run_state", "canary", "revision", "quarantined",
               "status_code", "cooldown_of", "last_error", "error")
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2.2rem}h3{font-size:1rem;margin-bottom:.3rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.15rem 1rem}dt{color:#666}
dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:
tabular-nums}tr.bad td{background:#fdecea}tr.open td{background:#fff6e0}
figure{margin:.5rem 0 1rem}figure svg{max-width:100%;height:auto}
figcaption,.note{color:#666;font-size:.85rem}.empty{color:#666;font-style:italic}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return NONE
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.2f}%"


def _when(value: datetime | None) -> str:
    return NONE if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class _Row:
    cells: Sequence[object]
    css: str = ""
    numeric: frozenset[int] = frozenset()


def _table(headers: Sequence[str], rows: Sequence[_Row], caption: str | None = None) -> str:
    head = "".join(f"<th>{_e(name)}</th>" for name in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{_e(cell)}</td>' if index in row.numeric
                        else f"<td>{_e(cell)}</td>" for index, cell in enumerate(row.cells))
        css = f' class="{_e(row.css)}"' if row.css else ""
        body.append(f"<tr{css}>{cells}</tr>")
    title = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _figure(svg: str, caption: str | None = None) -> str:
    note = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{note}</figure>"


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>{body}</section>'


# ---------------------------------------------------------------------------- the header

def _header(report: MonitorReport) -> str:
    head, counts = report.header, report.counts
    states = Counter(str(action.state) for action in report.actions)
    by_state = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    facts: list[tuple[str, str]] = [
        ("period", f"{_when(report.start)} to {_when(report.end)}"),
        ("routes now", "; ".join(head.routes) or "none"),
        ("state", f"{head.state} (revision {head.revision})"),
        ("config in force", NONE if head.config_digest is None else
         f"{head.config_digest} (applied {_when(head.config_applied_at)} by "
         f"{head.config_applied_by})"),
        ("configs the evaluations used", ", ".join(d[:12] for d in head.digests_used) or NONE),
        ("evaluations", f"{counts.total} of {counts.rules} rules: {counts.breached} breached, "
                        f"{counts.ok} ok, {counts.insufficient} insufficient"),
        ("alerts", f"{len(report.alerts)} "
                   f"({sum(a.state is AlertState.FIRING for a in report.alerts)} firing now)"),
        ("playbook actions", f"{len(report.actions)}" + (f" ({by_state})" if states else "")),
    ]
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in facts)
    changes = ""
    if head.route_changes:
        changes = "<h3>route changes in the period</h3>" + _table(
            ["revision", "at", "state", "routes", "reason", "by"],
            [_Row((c.revision, _when(c.at), c.state, c.routes, c.reason, c.actor))
             for c in head.route_changes])
    return (f"<header><h1>Monitoring report: {_e(head.deployment)}</h1>"
            f"<dl>{items}</dl>{changes}</header>")


# ---------------------------------------------------------------------------- drift

def _latest_drift(latest: DriftLatest) -> str:
    share = "" if latest.share is None else (
        f"; {_percent(latest.share)} of columns drifted (the dataset drifts at "
        f"{_percent(latest.share_threshold)})")
    caption = (f"{latest.rule} ({latest.signal}) for the window ending {_when(latest.at)}"
               f"{'' if latest.model_version is None else ' on ' + latest.model_version}"
               f"{share}")
    if not latest.columns:
        return f"<h3>{_e(caption)}</h3>" + _empty(
            f"no column scores: {latest.reason or 'nothing was measured'}")
    rows = [_Row((c.column, c.kind, c.method, _num(c.score), _num(c.threshold),
                  "yes" if c.drifted else "no", NONE if c.reference_count is None
                  else c.reference_count, NONE if c.current_count is None else c.current_count),
                 "bad" if c.drifted else "", frozenset({3, 4, 6, 7}))
            for c in sorted(latest.columns, key=lambda c: (not c.drifted, -c.badness,
                                                            c.column))]
    skipped = "".join(f"<li>{_e(name)}: {_e(why)}</li>"
                      for name, why in sorted(latest.skipped.items()))
    return (f"<h3>{_e(caption)}</h3>" + _table(
        ["column", "kind", "method", "score", "threshold", "drifted", "reference rows",
         "window rows"], rows) + (f'<p class="note">not tested:</p><ul>{skipped}</ul>'
                                  if skipped else ""))


def _drift(report: MonitorReport, keys: ChartKeys) -> str:
    if not report.drift_latest:
        return _section("drift", "Drift per column", _empty(
            "no drift evaluations were recorded for this deployment in the period"))
    parts = []
    for chart in report.drift_charts:
        hidden = (f"{chart.hidden} less drifted columns are left out of the chart; the table "
                  "below has every column") if chart.hidden else None
        parts.append(_figure(line_svg(drift_chart(report, chart, keys.next())), hidden))
    if not report.drift_charts:
        parts.append(_empty("no drift evaluation in the period measured any column"))
    parts.append("<h3>latest scores</h3>")
    parts.extend(_latest_drift(latest) for latest in report.drift_latest)
    return _section("drift", "Drift per column", "".join(parts))


# ---------------------------------------------------------------------------- quality

def _quality(report: MonitorReport, keys: ChartKeys) -> str:
    if not report.quality_latest:
        return _section("quality", "Quality per slice", _empty(
            "no quality evaluations were recorded for this deployment in the period"))
    parts = []
    for metric, chart in quality_charts(report, keys):
        series = [s for s in report.quality_series if s.metric == metric]
        if any(point.value is not None for s in series for point in s.points):
            parts.append(_figure(line_svg(chart), "dotted: the value at training"))
        else:
            parts.append(_empty(f"{metric}: no evaluation in the period had enough labels to "
                                "measure it"))
    rows = [_Row((q.rule, q.slice, q.metric, _num(q.value), _num(q.training), _num(q.drop),
                  NONE if q.labelled is None else q.labelled, _percent(q.label_share),
                  _when(q.at), q.model_version or NONE, q.reason or ""),
                 "bad" if (q.drop or 0.0) > 0 else "", frozenset({3, 4, 5, 6, 7}))
            for q in report.quality_latest]
    parts.append("<h3>latest values</h3>" + _table(
        ["rule", "slice", "metric", "latest", "training", "training - latest", "labelled",
         "labelled share", "window end", "version", "note"], rows))
    return _section("quality", "Quality per slice", "".join(parts))


# ---------------------------------------------------------------------------- health

def _health_row(name: str, point: HealthPoint) -> _Row:
    return _Row((name, point.requests, point.errors, _percent(point.error_rate),
                 _num(point.p50_ms), _num(point.p95_ms), _num(point.p99_ms)),
                numeric=frozenset({1, 2, 3, 4, 5, 6}))


def _health(report: MonitorReport, keys: ChartKeys) -> str:
    section = report.health
    if section.overall is None:
        return _section("health", "Latency and errors", _empty(
            "no serving stats were recorded for this deployment in the period"))
    caption = (f"per {format_duration(section.bucket)} bucket; gaps: no requests recorded "
               "(no throughput)")
    parts = [_figure(line_svg(chart), caption) for chart in health_charts(report, keys)]
    rows = [_health_row(uri, point) for uri, point in section.versions.items()]
    rows.append(_health_row("all versions", section.overall))
    parts.append("<h3>the whole period</h3>" + _table(
        ["version", "requests", "errors", "error rate", "p50 ms", "p95 ms", "p99 ms"], rows))
    return _section("health", "Latency and errors", "".join(parts))


# ---------------------------------------------------------------------------- alerts

def _compared(alert: Alert) -> str:
    numbers = alert.numbers
    side = {"above": ">", "below": "<"}.get(str(numbers.get("comparison")), "vs")
    value, threshold = numbers.get("value"), numbers.get("threshold")
    metric = f"{numbers['metric']} " if numbers.get("metric") else ""
    shown = [_num(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
             for v in (value, threshold)]
    return f"{metric}{shown[0]} {side} {shown[1]}"


def _params(params: Mapping[str, Any]) -> str:
    shown = dict(params)
    if isinstance(shown.get("url"), str):
        try:
            shown["url"] = display_url(shown["url"])
        except (InvalidArgumentError, ValueError):
            shown["url"] = "(invalid URL)"
    return ", ".join(f"{key}={value}" for key, value in sorted(shown.items()))


def _result(action: PlaybookAction) -> str:
    result = action.result
    return ", ".join(f"{key}={result[key]}" for key in RESULT_KEYS
                     if result.get(key) is not None)


def _actions(report: MonitorReport) -> str:
    if not report.actions:
        return _empty("no playbook actions were taken for these alerts")
    rules = {alert.id: alert.rule for alert in report.alerts}
    rows = [_Row((rules.get(a.alert_id, a.alert_id), a.playbook, a.step, a.kind, a.state,
                  _params(a.params), _result(a), a.attempts, _when(a.created_at),
                  _when(a.updated_at), a.approval_id or ""),
                 "bad" if str(a.state) == "failed" else "", frozenset({2, 7}))
            for a in report.actions]
    return "<h3>playbook actions</h3>" + _table(
        ["alert (rule)", "playbook", "step", "action", "state", "parameters", "result",
         "attempts", "created", "last change", "approval"], rows)


def _alerts(report: MonitorReport, keys: ChartKeys) -> str:
    if not report.alerts:
        return _section("alerts", "Alerts and playbooks", _empty(
            "no alert was firing for this deployment in the period"))
    shown = min(len(report.alerts), MAX_TIMELINE_ROWS)
    caption = ("bars: alerts while firing (blue info, orange warning, red critical); marks: "
               "playbook actions at their last change (green done, red failed, grey "
               "skipped, yellow open); dotted lines: route changes")
    if shown < len(report.alerts):
        caption += f"; the newest {shown} of {len(report.alerts)} alerts"
    rows = [_Row((_when(a.opened_at), _when(a.resolved_at), a.rule, a.severity, a.state,
                  _compared(a), a.scope_key, a.playbook or "", a.id),
                 "open" if a.state is AlertState.FIRING else "")
            for a in report.alerts]
    return _section("alerts", "Alerts and playbooks", "".join((
        _figure(timeline_svg(timeline(report, keys.next())), caption),
        _table(["opened", "resolved", "rule", "severity", "state", "value vs threshold",
                "scope", "playbook", "alert"], rows),
        _actions(report))))


def render(report: MonitorReport) -> str:
    """Return the report as one self-contained HTML page (see the module's rules).

    Raises:
        ConfigurationError: when matplotlib is not installed and a chart is to be drawn.
    """
    keys = ChartKeys()
    title = f"Monitoring report: {report.header.deployment}"
    return "".join((
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        _header(report), _drift(report, keys), _quality(report, keys),
        _health(report, keys), _alerts(report, keys),
        f"<footer><p class=\"note\">loopline {_e(__version__)} monitoring report of "
        f"{_e(report.header.deployment)}, {_when(report.start)} to {_when(report.end)}.</p>"
        "</footer></body></html>\n"))
