"""Quality of a window's predictions, overall and on slices, against the training metrics.

Pure: no I/O. ``quality_report`` takes the per-row table of ``window_rows.expand_predictions``
(``__prediction``, ``__label`` and the inputs by name; a ``__probabilities`` column is used
when present) and gives, overall and for each slice (``slices.slice_mask``):

    total        rows in the window (or slice)
    labelled     rows with a label (and a prediction): the metrics are computed on these
    label_share  labelled / total (0.0 for no rows), so an alert can wait for enough labels
    metrics      ``quality_scores.quality_metrics`` on the labelled rows
    training     the version's training-time value of each of those metrics
    drop         how much worse than training: training - observed for metrics where higher
                 is better (accuracy, precision, recall, f1, roc_auc, r2), observed - training
                 for errors (mae, rmse, log_loss). A positive drop is always worse.

The task and the classes are settled once, on all labelled rows, and used for every slice,
so a slice holding one class is still scored as the same binary or multiclass task.

Training values come from the version's metrics in the registry's stored form (``{"accuracy":
0.9, "slices": {"color=red": {"accuracy": 0.8}}}``) or the metric-major form (``{"accuracy":
{"overall": 0.9, "color=red": 0.8}}``). A slice looks for its key (``slices.slice_key``:
``column=value`` for one equality) and then its name. A few common spellings are read as
the metric they mean (``f1_score`` as ``f1``, ``auc`` as ``roc_auc``, ``r2_score`` as ``r2``).

A prediction that is JSON text of an object or a list (how the log keeps non-scalar outputs)
is read as class probabilities.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import SliceSpec
from loopline.monitoring.quality_scores import (
    CLASSIFICATION,
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    TASKS,
    infer_task,
    model_classes,
    quality_metrics,
)
from loopline.monitoring.slices import slice_key, slice_mask
from loopline.monitoring.window_rows import LABEL, PREDICTION

__all__ = ["OVERALL", "QualityReport", "SliceQuality", "quality_metrics", "quality_report"]

OVERALL = "overall"
PROBABILITIES = "__probabilities"
SLICES = "slices"  # the registry's key for per-slice training metrics
ALIASES: Mapping[str, str] = {"f1_score": "f1", "auc": "roc_auc", "roc_auc_score": "roc_auc",
                              "r2_score": "r2", "logloss": "log_loss",
                              "accuracy_score": "accuracy", "precision_score": "precision",
                              "recall_score": "recall"}


@dataclass(frozen=True, slots=True)
class SliceQuality:
    """Quality on one slice (or overall): counts, metrics, training values and drops."""

    name: str
    total: int
    labelled: int
    label_share: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, float] = field(default_factory=dict)
    drop: Mapping[str, float] = field(default_factory=dict)
    training_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the numbers as JSON-ready data."""
        return {"total": self.total, "labelled": self.labelled,
                "label_share": self.label_share, "metrics": dict(self.metrics),
                "training": dict(self.training), "drop": dict(self.drop),
                "training_key": self.training_key}


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Quality of a window overall and per slice; ``task`` is None without labelled rows."""

    task: str | None
    overall: SliceQuality
    slices: Mapping[str, SliceQuality] = field(default_factory=dict)

    def get(self, slice_name: str | None) -> SliceQuality:
        """Return the slice ``slice_name`` (overall for None).

        Raises:
            InvalidArgumentError: naming ``slice`` when the report has no such slice.
        """
        if slice_name is None:
            return self.overall
        try:
            return self.slices[slice_name]
        except KeyError:
            raise InvalidArgumentError("slice", f"{slice_name!r} is not a slice of the "
                                                f"report; it has {sorted(self.slices)}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {"task": self.task, "overall": self.overall.to_dict(),
                "slices": {name: part.to_dict() for name, part in self.slices.items()}}


@dataclass(frozen=True, slots=True)
class _Scored:
    """The labelled rows' values, and how to score them."""

    labels: list[Any]
    predictions: list[Any]
    probabilities: list[Any] | None
    task: str | None
    classes: list[Any] | None


def _decoded(value: Any) -> Any:
    """Return JSON text of an object or list as the value; anything else as it is."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            found = json.loads(value)
        except ValueError:
            return value
        return found if isinstance(found, dict | list) else value
    return value


def _labelled(rows: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Return where a row has both a label and a prediction."""
    if LABEL not in rows.column_names:
        return pa.array(np.zeros(rows.num_rows, dtype=bool))
    return pc.and_(pc.is_valid(rows.column(LABEL)), pc.is_valid(rows.column(PREDICTION)))


def _scored(rows: pa.Table, labelled: Any, task: str | None, classes: Sequence[Any] | None,
            ) -> _Scored:
    chosen = rows.filter(labelled)
    labels = chosen.column(LABEL).to_pylist() if chosen.num_rows else []
    predictions = [_decoded(v) for v in chosen.column(PREDICTION).to_pylist()]
    probabilities = ([_decoded(v) for v in chosen.column(PROBABILITIES).to_pylist()]
                     if PROBABILITIES in rows.column_names else None)
    if not labels:
        return _Scored([], [], None, task, None)
    has_probabilities = probabilities is not None or not all(
        isinstance(v, str | numbers.Real) for v in predictions)
    scalars = [v for v in predictions if isinstance(v, str | numbers.Real)]
    task = task or infer_task(labels, scalars, has_probabilities)
    if task == CLASSIFICATION:
        classes = model_classes(labels, predictions, probabilities=probabilities,
                                classes=classes)
    return _Scored(labels, predictions, probabilities, task, list(classes or []) or None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _training(metrics: Mapping[str, Any], keys: Sequence[str]) -> tuple[dict[str, float],
                                                                          str | None]:
    """Return the training values of the overall (no ``keys``) or the first slice key found."""
    wanted = [OVERALL] if not keys else list(keys)
    for key in wanted:
        found: dict[str, float] = {}
        per_slice = metrics.get(SLICES)
        if key != OVERALL and isinstance(per_slice, Mapping) and isinstance(
                per_slice.get(key), Mapping):
            found.update({ALIASES.get(name, name): number
                          for name, value in per_slice[key].items()
                          if (number := _number(value)) is not None})
        for name, value in metrics.items():
            chosen = value.get(key) if isinstance(value, Mapping) else (
                value if key == OVERALL else None)
            number = _number(chosen) if name != SLICES else None
            if number is not None:
                found.setdefault(ALIASES.get(name, name), number)
        if found:
            return found, None if key == OVERALL else key
    return {}, None


def _drop(metric: str, observed: float, training: float) -> float | None:
    if metric in HIGHER_IS_BETTER:
        return training - observed
    if metric in LOWER_IS_BETTER:
        return observed - training
    return None


def _measure(name: str, total: int, scored: _Scored, picked: Sequence[int] | None,
             training: tuple[dict[str, float], str | None]) -> SliceQuality:
    """Return the slice's quality from the labelled rows at ``picked`` (all when None)."""
    def take(values: list[Any]) -> list[Any]:
        return values if picked is None else [values[i] for i in picked]

    labels = take(scored.labels)
    metrics: dict[str, float] = {}
    if labels:
        probabilities = None if scored.probabilities is None else take(scored.probabilities)
        metrics = quality_metrics(labels, take(scored.predictions), scored.task,
                                  probabilities=probabilities, classes=scored.classes)
    values, key = training
    kept = {metric: values[metric] for metric in metrics if metric in values}
    drops = {metric: drop for metric in kept
             if (drop := _drop(metric, metrics[metric], kept[metric])) is not None}
    return SliceQuality(name, total, len(labels), len(labels) / total if total else 0.0,
                        metrics, kept, drops, key)


def _keys(spec: SliceSpec) -> tuple[str, ...]:
    key = slice_key(spec)
    return (key,) if key == spec.name else (key, spec.name)


def quality_report(rows: pa.Table, slices: Mapping[str, SliceSpec],
                   training_metrics: Mapping[str, Any] | None, *, task: str | None = None,
                   classes: Sequence[Any] | None = None) -> QualityReport:
    """Return the window's quality overall and per slice (see the module docstring).

    ``task`` and ``classes`` override what is inferred (``quality_scores``).

    Raises:
        InvalidArgumentError: naming ``rows`` without a ``prediction`` column, ``task`` when
            it is unknown, ``slices.<name>.<column>`` for a slice the rows cannot answer,
            or ``labels``/``predictions``/``classes`` when they cannot be scored.
    """
    if PREDICTION not in rows.column_names:
        raise InvalidArgumentError("rows", f"has no {PREDICTION!r} column; expand the log's "
                                           "records with window_rows.expand_predictions")
    if task is not None and task not in TASKS:
        raise InvalidArgumentError("task", f"{task!r} is not one of {', '.join(TASKS)}")
    metrics = training_metrics or {}
    labelled = _labelled(rows)
    scored = _scored(rows, labelled, task, classes)
    overall = _measure(OVERALL, rows.num_rows, scored, None, _training(metrics, ()))
    parts: dict[str, SliceQuality] = {}
    for name, spec in slices.items():
        mask = slice_mask(rows, spec)
        inside = np.flatnonzero(np.asarray(mask.filter(labelled), dtype=bool))
        total = int(pc.sum(mask).as_py() or 0)
        parts[name] = _measure(name, total, scored, inside.tolist(),
                               _training(metrics, _keys(spec)))
    return QualityReport(scored.task, overall, parts)
