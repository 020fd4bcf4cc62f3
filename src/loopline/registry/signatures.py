"""Model signatures: the columns a model takes and the output it gives, and a batch check.

A signature is inferred from training data (:func:`infer_signature`) or written by hand,
stored as JSON (:meth:`Signature.to_dict`), and checked against every request batch by the
model server (``signature_checks.check_batch``). pandas and NumPy are imported when a
function needs them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loopline.core.errors import InvalidArgumentError

DTYPES = ("int64", "float64", "bool", "string", "category", "datetime")
OUTPUT_TYPES = ("class", "number", "probabilities")
MAX_CATEGORIES = 1000
Scalar = str | int | float  # a category or class label (bool is an int)
Bound = int | float | str  # an observed minimum or maximum; ISO-8601 text for datetimes
_NUMERIC = ("int64", "float64")


def _fail(field: str, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(field, problem)


def _check_labels(field: str, labels: tuple[Scalar, ...] | None) -> None:
    if labels is None:
        return
    if not isinstance(labels, tuple) or len(labels) > MAX_CATEGORIES:
        raise _fail(field, f"must be a tuple of at most {MAX_CATEGORIES} labels")
    for label in labels:
        if not isinstance(label, str | int | float) or (
                isinstance(label, float) and not math.isfinite(label)):
            raise _fail(field, f"{label!r} is not a string or a finite number")
    if len(set(labels)) != len(labels):
        raise _fail(field, "holds a label twice")


def _check_bound(field: str, dtype: str, value: Bound | None) -> None:
    if value is None:
        return
    if dtype == "datetime":
        if not isinstance(value, str):
            raise _fail(field, f"{value!r} must be an ISO-8601 date and time")
    elif dtype not in _NUMERIC:
        raise _fail(field, f"a {dtype} column has no range")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise _fail(field, f"{value!r} is not a finite number")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One input column: its type, whether it may hold nulls, and what training saw in it."""

    name: str
    dtype: str
    nullable: bool = False
    minimum: Bound | None = None
    maximum: Bound | None = None
    categories: tuple[Scalar, ...] | None = None

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            InvalidArgumentError: naming the column and the field that is wrong.
        """
        if not isinstance(self.name, str) or not self.name:
            raise _fail("signature column name", f"{self.name!r} is not a non-empty string")
        field = f"signature column {self.name!r}"
        if self.dtype not in DTYPES:
            raise _fail(f"{field} dtype", f"{self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(self.nullable, bool):
            raise _fail(f"{field} nullable", f"{self.nullable!r} is not a bool")
        _check_bound(f"{field} minimum", self.dtype, self.minimum)
        _check_bound(f"{field} maximum", self.dtype, self.maximum)
        low, high = self.minimum, self.maximum
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            raise _fail(f"{field} minimum", f"{self.minimum!r} exceeds the maximum")
        if self.categories is not None and self.dtype != "category":
            raise _fail(f"{field} categories", f"only a category column has them, not a "
                                               f"{self.dtype} one")
        _check_labels(f"{field} categories", self.categories)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What the model returns: class labels, numbers, or class probabilities."""

    type: str
    classes: tuple[Scalar, ...] | None = None

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            InvalidArgumentError: naming the output field that is wrong.
        """
        if self.type not in OUTPUT_TYPES:
            raise _fail("signature output type", f"{self.type!r} is not one of "
                                                 f"{', '.join(OUTPUT_TYPES)}")
        if self.type == "number" and self.classes is not None:
            raise _fail("signature output classes", "a number output has no classes")
        _check_labels("signature output classes", self.classes)


@dataclass(frozen=True, slots=True)
class Signature:
    """The input columns a model takes, in order, and the output it gives."""

    inputs: tuple[ColumnSpec, ...]
    output: OutputSpec

    def __post_init__(self) -> None:
        """Check there is at least one column and no name twice.

        Raises:
            InvalidArgumentError: naming the repeated column.
        """
        if not isinstance(self.inputs, tuple) or not self.inputs:
            raise _fail("signature inputs", "must be a non-empty tuple of ColumnSpec")
        seen: set[str] = set()
        for column in self.inputs:
            if column.name in seen:
                raise _fail("signature inputs", f"name the column {column.name!r} twice")
            seen.add(column.name)

    @property
    def names(self) -> tuple[str, ...]:
        """The input column names, in order."""
        return tuple(column.name for column in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """Return the signature as JSON-ready data (every field, lists for tuples)."""
        def listed(labels: tuple[Scalar, ...] | None) -> list[Scalar] | None:
            return None if labels is None else list(labels)

        return {
            "inputs": [{"name": c.name, "dtype": c.dtype, "nullable": c.nullable,
                        "minimum": c.minimum, "maximum": c.maximum,
                        "categories": listed(c.categories)} for c in self.inputs],
            "output": {"type": self.output.type, "classes": listed(self.output.classes)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Return the signature ``data`` (as made by :meth:`to_dict`) describes.

        Raises:
            InvalidArgumentError: naming the first field that is missing, unknown or wrong.
        """
        _keys("signature", data, {"inputs", "output"}, {"inputs", "output"})
        columns = data["inputs"]
        if not isinstance(columns, list):
            raise _fail("signature inputs", "must be a list")
        inputs = tuple(_column_from(f"signature inputs[{i}]", item)
                       for i, item in enumerate(columns))
        output = data["output"]
        _keys("signature output", output, {"type", "classes"}, {"type"})
        return cls(inputs, OutputSpec(output["type"], _labels_from(output.get("classes"))))


def _keys(field: str, data: Any, known: set[str], required: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise _fail(field, "must be a JSON object")
    if unknown := set(data) - known:
        raise _fail(field, f"has unknown keys {sorted(map(str, unknown))}")
    if missing := required - set(data):
        raise _fail(field, f"lacks the keys {sorted(missing)}")


def _labels_from(value: Any) -> tuple[Scalar, ...] | None:
    return None if value is None else tuple(value) if isinstance(value, list) else value


def _column_from(field: str, item: Any) -> ColumnSpec:
    known = {"name", "dtype", "nullable", "minimum", "maximum", "categories"}
    _keys(field, item, known, {"name", "dtype"})
    return ColumnSpec(item["name"], item["dtype"], item.get("nullable", False),
                      item.get("minimum"), item.get("maximum"),
                      _labels_from(item.get("categories")))


# -- inference ------------------------------------------------------------------------------

def as_frame(batch: Any, names: tuple[str, ...] | None, field: str) -> Any:
    """Return ``batch`` as a DataFrame; an array's columns are ``names`` (or ``f0..fn``)."""
    import numpy as np
    import pandas as pd

    if isinstance(batch, pd.DataFrame):
        return batch
    array = np.asarray(batch)
    if array.ndim != 2:
        raise _fail(field, f"must be a DataFrame or a 2-D array, not {array.ndim}-D")
    width = array.shape[1]
    if names is not None and width != len(names):
        raise _fail(field, f"has {width} columns; the signature has {len(names)}: {list(names)}")
    return pd.DataFrame(array, columns=list(names or (f"f{i}" for i in range(width))))


def _scalars(values: Any) -> tuple[Scalar, ...] | None:
    """Return array-like labels as Python scalars, or None when some are not labels."""
    items = tuple(values.tolist() if hasattr(values, "tolist") else values)
    ok = all(isinstance(v, str | int | float) and v == v for v in items)  # v == v: not NaN
    return items if ok and len(items) <= MAX_CATEGORIES else None


def _infer_number(name: str, series: Any, nullable: bool) -> ColumnSpec:
    import numpy as np

    if series.dtype.kind not in "iuf":
        raise _fail(f"X column {name!r}", f"has dtype {series.dtype}, which a signature "
                                          "cannot describe; convert it to float or int")
    integer = series.dtype.kind != "f"
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return ColumnSpec(name, "int64" if integer else "float64", nullable)
    if integer:  # exact bounds: float64 would round integers beyond 2**53
        return ColumnSpec(name, "int64", nullable, int(series.min()), int(series.max()))
    return ColumnSpec(name, "float64", nullable, float(finite.min()), float(finite.max()))


def _infer_text(name: str, series: Any, nullable: bool) -> ColumnSpec:
    import numpy as np
    import pandas as pd

    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred == "boolean":  # an object column of bools and nulls
        return ColumnSpec(name, "bool", nullable)
    if inferred not in ("string", "empty"):
        raise _fail(f"X column {name!r}", f"holds {inferred} values; give it one type "
                                          "(number, bool, text, category or datetime)")
    categories = _scalars(np.sort(series.dropna().unique().astype(str)))
    if categories is None:
        return ColumnSpec(name, "string", nullable)
    return ColumnSpec(name, "category", nullable, categories=categories)


def _infer_column(name: str, series: Any) -> ColumnSpec:
    import pandas as pd

    types, dtype = pd.api.types, series.dtype
    nullable = bool(series.isna().any())
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _scalars(dtype.categories)
        if categories is not None:
            return ColumnSpec(name, "category", nullable, categories=categories)
        return _infer_column(name, series.astype(dtype.categories.dtype))
    if types.is_bool_dtype(dtype):
        return ColumnSpec(name, "bool", nullable)
    if types.is_datetime64_any_dtype(dtype):
        low, high = series.min(), series.max()
        return ColumnSpec(name, "datetime", nullable, None if pd.isna(low) else low.isoformat(),
                          None if pd.isna(high) else high.isoformat())
    if types.is_numeric_dtype(dtype):
        return _infer_number(name, series, nullable)
    return _infer_text(name, series, nullable)


def _is_regressor(model: Any) -> bool:
    if not hasattr(model, "__sklearn_tags__"):
        return False  # not a scikit-learn estimator: nothing to ask
    from sklearn.base import is_regressor

    return bool(is_regressor(model))


def _infer_output(y: Any, model: Any) -> OutputSpec:
    import numpy as np

    classes = getattr(model, "classes_", None)
    if classes is not None:
        return OutputSpec("class", _scalars(classes))
    if _is_regressor(model):
        return OutputSpec("number")
    if y is None:
        raise _fail("y", "give y or a fitted model, so the output type can be inferred")
    labels = np.asarray(y)
    if labels.dtype.kind in "fcmM":
        return OutputSpec("number")
    found = _scalars(np.unique(labels[labels == labels]))  # drops NaN from object arrays
    if found is None:
        if labels.dtype.kind in "iu":  # many distinct integers: counts, not classes
            return OutputSpec("number")
        raise _fail("y", f"has more than {MAX_CATEGORIES} distinct labels")
    return OutputSpec("class", found)


def infer_signature(X: Any, y: Any = None, model: Any = None) -> Signature:
    """Return the signature of training data ``X`` (DataFrame, or array named ``f0..fn``).

    Columns record their type, whether they held nulls, the observed finite range (numbers,
    datetimes) and the categories (categorical dtypes; text columns with at most
    ``MAX_CATEGORIES`` distinct values, else plain ``string``). The output is ``class``
    with the model's ``classes_`` (or ``y``'s labels), or ``number`` for a regressor or a
    float ``y``; ``probabilities`` is never inferred, only given.

    Raises:
        InvalidArgumentError: naming ``X``, a column or ``y`` when it cannot be described.
    """
    frame = as_frame(X, None, "X")
    names = list(frame.columns)
    if not all(isinstance(name, str) for name in names):
        raise _fail("X", "column names must be strings; rename them, or pass a NumPy array "
                         "(its columns are named f0..fn)")
    if len(set(names)) != len(names):
        raise _fail("X", "names a column twice")
    inputs = tuple(_infer_column(name, frame[name]) for name in names)
    return Signature(inputs, _infer_output(y, model))
