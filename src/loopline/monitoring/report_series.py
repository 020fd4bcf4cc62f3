"""Reading the report's lines out of stored evaluations' numbers (the shapes ``signals`` writes).

Pure: no I/O. A rule that names no version stores ``{"model_version": KEY, "versions": {KEY:
{...}}}`` and is judged on the version ``KEY``; a rule scoped to one version stores that
version's numbers at the top. Drift numbers are ``DriftReport.to_dict()`` (``columns``, a
list of ``ColumnDrift.to_dict()``, and ``share``) for ``dataset_drift``, or one
``ColumnDrift.to_dict()`` for ``column_drift`` and ``prediction_drift``; quality numbers are
``SliceQuality.to_dict()`` (``metrics``, ``training``, ``labelled``, ``label_share`` ...).
Anything else (a reason, an error, numbers written by an older loopline) yields no point
rather than an error: a report shows what is there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from typing import Any

from loopline.core.monitoring import Evaluation, SignalKind
from loopline.monitoring.report_model import (
    ColumnScore,
    DriftChart,
    DriftLatest,
    Point,
    QualityLatest,
    QualitySeries,
    Series,
)

__all__ = ["DRIFT_SIGNALS", "MAX_LINES", "QUALITY_SIGNALS", "column_scores", "drift_sections",
           "judged_numbers", "number", "quality_sections"]

MAX_LINES = 12  # columns drawn per drift chart; the rest are in the table
DRIFT_SIGNALS = frozenset({SignalKind.DATASET_DRIFT, SignalKind.COLUMN_DRIFT,
                           SignalKind.PREDICTION_DRIFT})
QUALITY_SIGNALS = frozenset({SignalKind.QUALITY, SignalKind.LABEL_SHARE})
OVERALL = "overall"


def number(value: Any) -> float | None:
    """Return ``value`` as a float: numbers, and ``"inf"``/``"-inf"`` as stored; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return None if math.isnan(value) else float(value)
    if value in ("inf", "-inf"):
        return float(value)
    return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def judged_numbers(numbers: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the numbers of the version an evaluation was judged on (see the docstring)."""
    versions = numbers.get("versions")
    if not isinstance(versions, Mapping):
        return numbers
    part = versions.get(numbers.get("model_version"))
    return part if isinstance(part, Mapping) else {}


def _reason(numbers: Mapping[str, Any]) -> str | None:
    for source in (numbers, judged_numbers(numbers)):
        found = source.get("error") or source.get("reason")
        if isinstance(found, str):
            return found
    return None


def _version(evaluation: Evaluation) -> str | None:
    found = evaluation.numbers.get("model_version")
    if isinstance(found, str):
        return found
    rule = _rule_document(evaluation)
    version = rule.get("version")
    return version if isinstance(version, str) else None


def _rule_document(evaluation: Evaluation) -> Mapping[str, Any]:
    found = evaluation.rule_record.get("rule")
    return found if isinstance(found, Mapping) else {}


def _column(data: Any) -> ColumnScore | None:
    if not isinstance(data, Mapping) or not isinstance(data.get("column"), str):
        return None
    return ColumnScore(
        column=data["column"], method=str(data.get("method") or ""),
        score=number(data.get("score")), threshold=number(data.get("threshold")),
        drifted=data.get("drifted") is True, kind=str(data.get("kind") or ""),
        reference_count=_count(data.get("reference_count")),
        current_count=_count(data.get("current_count")))


def column_scores(evaluation: Evaluation) -> list[ColumnScore]:
    """Return every column's drift an evaluation stored (none for other signals)."""
    if evaluation.signal not in DRIFT_SIGNALS:
        return []
    part = judged_numbers(evaluation.numbers)
    listed = part.get("columns")
    items = listed if isinstance(listed, list) else [part]
    return [found for found in map(_column, items) if found is not None]


def _by_rule(evaluations: Iterable[Evaluation]) -> list[list[Evaluation]]:
    ordered = sorted(evaluations, key=lambda e: (e.rule, e.scope_key, e.window_end))
    return [list(group) for _, group in groupby(ordered, key=lambda e: (e.rule, e.scope_key))]


def _chosen(columns: Mapping[str, list[ColumnScore]]) -> list[str]:
    """Return the columns to draw: every one, or the ``MAX_LINES`` most drifted lately."""
    if len(columns) <= MAX_LINES:
        return sorted(columns)
    worst = sorted(columns, key=lambda name: (-columns[name][-1].badness, name))
    return sorted(worst[:MAX_LINES])


def _drift_charts(group: Sequence[Evaluation]) -> list[DriftChart]:
    scored = [(evaluation, column_scores(evaluation)) for evaluation in group]
    methods = sorted({score.method for _, scores in scored for score in scores})
    rule = _rule_document(group[-1])
    charts = []
    for method in methods:
        history: dict[str, list[ColumnScore]] = defaultdict(list)
        for _, scores in scored:
            for score in scores:
                if score.method == method:
                    history[score.column].append(score)
        shown = _chosen(history)
        lines = []
        for name in shown:
            points = []
            for evaluation, scores in scored:
                found = next((s for s in scores if s.column == name and s.method == method),
                             None)
                points.append(Point(evaluation.window_end, None if found is None
                                    else found.score))
            lines.append(Series(name, tuple(points), history[name][-1].threshold))
        charts.append(DriftChart(group[-1].rule, group[-1].scope_key, str(group[-1].signal),
                                 method, str(rule.get("window") or ""), tuple(lines),
                                 len(history) - len(shown)))
    return charts


def _drift_latest(evaluation: Evaluation) -> DriftLatest:
    part = judged_numbers(evaluation.numbers)
    skipped = part.get("skipped")
    return DriftLatest(
        evaluation.rule, str(evaluation.signal), evaluation.window_end, _version(evaluation),
        tuple(column_scores(evaluation)), number(part.get("share")),
        number(part.get("share_threshold")),
        {str(k): str(v) for k, v in skipped.items()} if isinstance(skipped, Mapping) else {},
        _reason(evaluation.numbers))


def drift_sections(evaluations: Iterable[Evaluation],
                   ) -> tuple[tuple[DriftChart, ...], tuple[DriftLatest, ...]]:
    """Return the drift charts (per rule and method) and each drift rule's latest scores.

    The latest is the newest evaluation with column scores, else the newest one.
    """
    charts: list[DriftChart] = []
    latest: list[DriftLatest] = []
    for group in _by_rule(e for e in evaluations if e.signal in DRIFT_SIGNALS):
        charts.extend(_drift_charts(group))
        scored = [evaluation for evaluation in group if column_scores(evaluation)]
        latest.append(_drift_latest((scored or group)[-1]))
    return tuple(charts), tuple(latest)


def _quality_value(evaluation: Evaluation, metric: str) -> tuple[float | None, float | None]:
    """Return the metric's value and its training value in an evaluation's numbers."""
    part = judged_numbers(evaluation.numbers)
    if metric == "label_share":
        return number(part.get("label_share")), None
    values, training = part.get("metrics"), part.get("training")
    return (number(values.get(metric)) if isinstance(values, Mapping) else None,
            number(training.get(metric)) if isinstance(training, Mapping) else None)


def _quality_latest(evaluation: Evaluation, metric: str, slice_name: str) -> QualityLatest:
    part = judged_numbers(evaluation.numbers)
    value, training = _quality_value(evaluation, metric)
    return QualityLatest(
        evaluation.rule, metric, slice_name, evaluation.window_end, _version(evaluation),
        value, training, _count(part.get("labelled")), _count(part.get("total")),
        number(part.get("label_share")), _reason(evaluation.numbers))


def quality_sections(evaluations: Iterable[Evaluation],
                     ) -> tuple[tuple[QualitySeries, ...], tuple[QualityLatest, ...]]:
    """Return each quality rule's metric over time and its latest value beside training's.

    The metric is the rule's (``label_share`` for a label share rule); the latest is the
    newest evaluation with a value, else the newest one. Label share rules have a latest
    row but no line (their share is a count of labels, not a quality).
    """
    series: list[QualitySeries] = []
    latest: list[QualityLatest] = []
    for group in _by_rule(e for e in evaluations if e.signal in QUALITY_SIGNALS):
        rule = _rule_document(group[-1])
        label_share = group[-1].signal is SignalKind.LABEL_SHARE
        metric = "label_share" if label_share else rule.get("metric")
        if not isinstance(metric, str):
            continue
        slice_name = str(rule.get("slice") or OVERALL)
        values = [(e, *_quality_value(e, metric)) for e in group]
        valued = [e for e, value, _ in values if value is not None]
        latest.append(_quality_latest((valued or group)[-1], metric, slice_name))
        if label_share:
            continue
        trained = [training for _, _, training in values if training is not None]
        series.append(QualitySeries(
            group[-1].rule, group[-1].scope_key, metric, slice_name,
            tuple(Point(e.window_end, value) for e, value, _ in values),
            trained[-1] if trained else None,
            None if rule.get("baseline") else number(rule.get("threshold"))))
    return tuple(series), tuple(latest)
