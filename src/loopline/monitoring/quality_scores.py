"""Quality metrics of predictions against labels, computed by scikit-learn.

Pure: no I/O. ``quality_metrics(labels, predictions)`` returns plain floats:

    classification   accuracy, precision, recall, f1; roc_auc and log_loss when the
                     predictions carry class probabilities
    regression       mae, rmse, r2

The task is ``task`` when given, else inferred: predictions that are probabilities, labels or
predictions that are strings or bools mean classification; a prediction with a fraction
means regression; otherwise labels that are integers (or whole floats, when the predictions
are integers) with at most ``MAX_CLASSES`` distinct values mean classification, and any
other numbers regression.

Classes. A label and a prediction name the same class when equal, after one normalisation:
when any label, prediction or probability class is a string, all are compared as strings
(JSON object keys are always strings, so ``{"0": 0.2, "1": 0.8}`` scores labels 0 and 1).
``classes`` (or the probabilities' own keys, or else the sorted labels and predictions seen)
are the model's classes. With at most two, the task is binary and precision, recall and F1
are of the positive class: ``1`` (or ``True``) when it is a class, else the larger class.
With more, they are the macro average over the classes present in the labels and
predictions (scikit-learn's ``average="macro"``). Divisions by zero count as 0.

Probabilities are a mapping class -> probability per row, or a list in ``classes`` order; the
predicted class is then the most probable one unless scalar predictions are given too (a
``probabilities=`` argument beside them). A row's probabilities are divided by their sum
before log loss. A metric that is not defined on the rows is left out: ROC AUC without every
class among the labels (both, when binary), log loss with a label outside the classes, R²
with fewer than two rows. No rows, no metrics.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from loopline.core.errors import InvalidArgumentError

__all__ = ["CLASSIFICATION", "HIGHER_IS_BETTER", "LOWER_IS_BETTER", "MAX_CLASSES",
           "REGRESSION", "TASKS", "infer_task", "model_classes", "positive_class",
           "quality_metrics"]

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)
MAX_CLASSES = 50
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2"})
LOWER_IS_BETTER = frozenset({"mae", "rmse", "log_loss"})


@dataclass(frozen=True, slots=True)
class _Predictions:
    """Predicted values, and class probabilities (rows x classes) when the model gave them."""

    values: list[Any]
    probabilities: np.ndarray | None = None
    classes: list[Any] | None = None


def _as_list(values: Any, field: str) -> list[Any]:
    if hasattr(values, "to_pylist"):  # an Arrow array
        found: list[Any] = values.to_pylist()
        return found
    if hasattr(values, "tolist"):  # numpy, pandas
        return list(values.tolist())
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__iter__"):
        raise InvalidArgumentError(field, f"must be a sequence of values, not a "
                                          f"{type(values).__name__}")
    return list(values)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | numbers.Real)


def _order(value: Any) -> tuple[int, Any]:
    """Sort key putting numbers before strings, so mixed classes still sort."""
    return (0, value) if isinstance(value, numbers.Real) else (1, str(value))


def _probability_rows(rows: list[Any], classes: list[Any] | None, field: str,
                      ) -> tuple[np.ndarray, list[Any] | None]:
    """Return probabilities as a matrix, with their classes (None: list order, unknown)."""
    if all(isinstance(row, Mapping) for row in rows):
        keys = list(rows[0]) if rows else []
        order = sorted(keys, key=_order) if classes is None else list(classes)
        if any(set(row) != set(keys) for row in rows) or set(map(str, order)) != set(
                map(str, keys)):
            raise InvalidArgumentError(field, f"every row's probabilities must name the same "
                                              f"classes {sorted(map(str, keys))}")
        by_text = [{str(k): v for k, v in row.items()} for row in rows]
        matrix = [[row[str(c)] for c in order] for row in by_text]
        found: list[Any] | None = order
    elif all(isinstance(row, list | tuple) for row in rows):
        if len({len(row) for row in rows}) > 1:
            raise InvalidArgumentError(field, "every row's probabilities must have one length")
        matrix, found = [list(row) for row in rows], classes
    else:
        raise InvalidArgumentError(field, "must be all class -> probability mappings or all "
                                          "lists of probabilities")
    try:
        array = np.asarray(matrix, dtype=float).reshape(len(rows), -1)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(field, f"probabilities must be numbers ({exc})") from exc
    if not np.isfinite(array).all() or (array < 0).any():
        raise InvalidArgumentError(field, "probabilities must be finite numbers from 0")
    return array, found


def _predictions(predictions: Any, probabilities: Any, classes: list[Any] | None,
                 count: int) -> _Predictions:
    values = _as_list(predictions, "predictions")
    if len(values) != count:
        raise InvalidArgumentError("predictions", f"has {len(values)} rows; the labels have "
                                                  f"{count}")
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        raise InvalidArgumentError("predictions", "a row has no prediction")
    if not values or (all(_is_scalar(v) for v in values) and probabilities is None):
        return _Predictions(values)
    if probabilities is not None:
        if not all(_is_scalar(v) for v in values):
            raise InvalidArgumentError("predictions", "must be values when probabilities "
                                                      "are given beside them")
        rows = _as_list(probabilities, "probabilities")
        if len(rows) != count:
            raise InvalidArgumentError("probabilities", f"has {len(rows)} rows; the labels "
                                                        f"have {count}")
        matrix, found = _probability_rows(rows, classes, "probabilities")
        return _Predictions(values, matrix, found)
    matrix, found = _probability_rows(values, classes, "predictions")
    return _Predictions([], matrix, found)


def _labels(labels: Any) -> list[Any]:
    values = _as_list(labels, "labels")
    for index, value in enumerate(values):
        if not _is_scalar(value) or (isinstance(value, float) and math.isnan(value)):
            raise InvalidArgumentError("labels", f"row {index} has no label or a "
                                                 f"{type(value).__name__} ({value!r})")
    return values


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer())


def infer_task(labels: Sequence[Any], predictions: Sequence[Any] = (),
               probabilities: bool = False) -> str:
    """Return ``classification`` or ``regression`` for these rows (see the module docstring)."""
    if probabilities or any(isinstance(v, str | bool) for v in (*labels, *predictions)):
        return CLASSIFICATION
    if not all(_whole(v) for v in predictions):
        return REGRESSION
    integral = all(isinstance(v, numbers.Integral) for v in labels) or (
        all(_whole(v) for v in labels) and bool(predictions)
        and all(isinstance(v, numbers.Integral) for v in predictions))
    if integral and len(set(labels)) <= MAX_CLASSES:
        return CLASSIFICATION
    return REGRESSION


def _normalised(*groups: list[Any]) -> list[list[Any]]:
    """Return the groups of class values compared one way: as text when any is a string."""
    if any(isinstance(v, str) for group in groups for v in group):
        return [[str(v) for v in group] for group in groups]
    whole = all(_whole(v) for group in groups for v in group)
    return [[int(v) if whole else v for v in group] for group in groups]


def positive_class(classes: Sequence[Any]) -> Any:
    """Return the positive class of a binary task: 1 (True) when present, else the larger."""
    for value in classes:
        if not isinstance(value, str) and value == 1:
            return value
        if isinstance(value, str) and value in ("1", "True", "true"):
            return value
    return max(classes, key=_order)


def _class_metrics(y: np.ndarray, predicted: np.ndarray, classes: list[Any]) -> dict[str, float]:
    if len(classes) <= 2:
        options: dict[str, Any] = {"average": "binary", "pos_label": positive_class(classes)}
    else:
        options = {"average": "macro"}
    return {"accuracy": float(skm.accuracy_score(y, predicted)),
            "precision": float(skm.precision_score(y, predicted, zero_division=0.0, **options)),
            "recall": float(skm.recall_score(y, predicted, zero_division=0.0, **options)),
            "f1": float(skm.f1_score(y, predicted, zero_division=0.0, **options))}


def _probability_metrics(y: np.ndarray, matrix: np.ndarray, classes: list[Any],
                         ) -> dict[str, float]:
    """Return log loss and ROC AUC where defined; ``classes`` name the matrix's columns."""
    present = set(y.tolist())
    sums = matrix.sum(axis=1, keepdims=True)
    if len(classes) < 2 or not present <= set(classes) or (sums <= 0).any():
        return {}
    ordered = sorted(range(len(classes)), key=lambda i: _order(classes[i]))
    labels = [classes[i] for i in ordered]  # scikit-learn takes columns in sorted order
    scaled = (matrix / sums)[:, ordered]
    found = {"log_loss": float(skm.log_loss(y, scaled, labels=labels))}
    if present == set(labels):
        if len(labels) == 2:
            positive = positive_class(labels)
            column = scaled[:, labels.index(positive)]
            found["roc_auc"] = float(skm.roc_auc_score(y == positive, column))
        else:
            found["roc_auc"] = float(skm.roc_auc_score(y, scaled, multi_class="ovr",
                                                       average="macro", labels=labels))
    return found


def _known_classes(labels: list[Any], given: _Predictions, classes: list[Any] | None,
                   ) -> list[Any] | None:
    """Return the model's classes: given, the probabilities' keys, or seen in the rows.

    Unnamed probability columns take the sorted labels and predictions, which must then be
    as many as the columns.
    """
    known = given.classes if given.classes is not None else classes
    if given.probabilities is None:
        return known
    width = given.probabilities.shape[1]
    if known is None:
        known = sorted(set(labels) | set(given.values), key=_order)
    if len(known) != width:
        raise InvalidArgumentError("classes", f"the probabilities have {width} columns for "
                                              f"{len(known)} classes {known}; pass the "
                                              "model's classes in probability order")
    return known


def _classification(labels: list[Any], given: _Predictions, classes: list[Any] | None,
                    ) -> dict[str, float]:
    known = _known_classes(labels, given, classes)
    values = given.values
    if not values and given.probabilities is not None and known is not None:
        values = [known[i] for i in np.argmax(given.probabilities, axis=1)]
    y_list, p_list, k_list = _normalised(labels, values, list(known or []))
    seen = sorted(set(k_list) | set(y_list) | set(p_list), key=_order)
    y, predicted = np.asarray(y_list), np.asarray(p_list)
    found = _class_metrics(y, predicted, seen)
    if given.probabilities is not None:
        found.update(_probability_metrics(y, given.probabilities, k_list))
    return found


def _regression(labels: list[Any], given: _Predictions) -> dict[str, float]:
    if given.probabilities is not None or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in given.values):
        raise InvalidArgumentError("predictions", "a regression's predictions must be numbers")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in labels):
        raise InvalidArgumentError("labels", "a regression's labels must be numbers")
    y, predicted = np.asarray(labels, dtype=float), np.asarray(given.values, dtype=float)
    if not np.isfinite(predicted).all():
        raise InvalidArgumentError("predictions", "holds NaN or infinity")
    found = {"mae": float(skm.mean_absolute_error(y, predicted)),
             "rmse": float(skm.root_mean_squared_error(y, predicted))}
    if len(y) >= 2:
        found["r2"] = float(skm.r2_score(y, predicted))
    return found


def model_classes(labels: Any, predictions: Any, *, probabilities: Any = None,
                  classes: Sequence[Any] | None = None) -> list[Any]:
    """Return the classes ``quality_metrics`` scores these rows by, in probability order.

    Pass them as ``classes=`` when scoring parts of the rows (slices), so every part is
    binary or multiclass alike and has the same positive class.

    Raises:
        InvalidArgumentError: as :func:`quality_metrics`.
    """
    truth = _labels(labels)
    known = None if classes is None else _as_list(classes, "classes")
    given = _predictions(predictions, probabilities, known, len(truth))
    found = _known_classes(truth, given, known)
    if found is not None:
        return found
    return sorted(set(truth) | set(given.values), key=_order)


def quality_metrics(labels: Any, predictions: Any, task: str | None = None, *,
                    probabilities: Any = None, classes: Sequence[Any] | None = None,
                    ) -> dict[str, float]:
    """Return the quality metrics of ``predictions`` against ``labels`` (see the module).

    ``labels`` and ``predictions`` are sequences (lists, arrays, Arrow arrays) of one value
    per row; a prediction may be a class -> probability mapping or a list of probabilities.

    Raises:
        InvalidArgumentError: naming ``task``, ``labels``, ``predictions``,
            ``probabilities`` or ``classes`` when it is malformed or the lengths differ;
            naming ``labels`` with scikit-learn's reason when it refuses the rows (labels
            of 0.5 for a model predicting booleans: "a mix of continuous and binary
            targets").
    """
    if task is not None and task not in TASKS:
        raise InvalidArgumentError("task", f"{task!r} is not one of {', '.join(TASKS)}")
    truth = _labels(labels)
    known = None if classes is None else _as_list(classes, "classes")
    given = _predictions(predictions, probabilities, known, len(truth))
    if not truth:
        return {}
    chosen = task or infer_task(truth, given.values, given.probabilities is not None)
    try:
        if chosen == CLASSIFICATION:
            return _classification(truth, given, known)
        return _regression(truth, given)
    except (ValueError, TypeError) as exc:  # scikit-learn's own checks of the targets
        raise InvalidArgumentError("labels", f"cannot be scored as {chosen} against these "
                                             f"predictions: {exc}") from exc
