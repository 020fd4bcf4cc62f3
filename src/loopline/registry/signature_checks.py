"""Checking a request batch against a model signature, column by column, vectorised.

The model server calls :func:`check_batch` per batch: vectorised pandas/NumPy, no loop over
rows. Violations and their severity:

    error    missing    a column the signature names is absent
             type       the column's type cannot be the declared one
             null       nulls in a column trained without any
             extra      a column the signature does not name (only when extras are refused)
    warning  range      values outside the range seen in training
             category   values not among the categories seen in training

Errors mean the model cannot score the batch as trained; warnings mean it can but
extrapolates, which is for monitoring to count, not for a request to fail on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.registry.signatures import ColumnSpec, Signature, as_frame

# -- checking a batch -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignatureViolation:
    """One way a batch departs from a signature; ``rows`` counts the rows (0: the column)."""

    column: str
    kind: str  # missing | type | null | extra | range | category
    severity: str  # error | warning
    rows: int
    message: str


def _violation(column: str, kind: str, rows: int, problem: str) -> SignatureViolation:
    severity = "warning" if kind in ("range", "category") else "error"
    return SignatureViolation(column, kind, severity, rows, f"column {column!r} {problem}")


def _text_like(series: Any) -> bool:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        return True
    if isinstance(dtype, pd.CategoricalDtype):
        return _text_like(pd.Series(dtype.categories))
    return dtype.kind == "O" and pd.api.types.infer_dtype(series, skipna=True) in (
        "string", "empty")


def _fits_type(spec: ColumnSpec, series: Any) -> bool:
    """Tell whether ``series`` can hold ``spec.dtype`` values (reads values only for objects)."""
    import numpy as np
    import pandas as pd

    types = pd.api.types
    kind: str = series.dtype.kind
    if spec.dtype == "float64":
        return kind in "iuf"
    if spec.dtype == "int64":
        if kind == "f":  # JSON turns an int column with nulls into floats: whole numbers fit
            values = series.to_numpy()
            return bool(np.all(np.isnan(values) | (np.mod(values, 1) == 0)))
        return kind in "iu"
    if spec.dtype == "bool":
        return bool(types.is_bool_dtype(series.dtype)) or (
            kind == "O" and types.infer_dtype(series, skipna=True) in ("boolean", "empty"))
    if spec.dtype == "datetime":
        return kind == "M"
    numeric_categories = spec.categories is not None and all(
        isinstance(c, int | float) for c in spec.categories)
    return _text_like(series) or (spec.dtype == "category" and numeric_categories
                                  and kind in "iuf")


def _outside(spec: ColumnSpec, series: Any) -> int:
    """Count the values outside the observed range or categories (nulls never count)."""
    import numpy as np
    import pandas as pd

    if spec.categories is not None:
        return int((series.notna() & ~series.isin(spec.categories)).sum())
    if spec.minimum is None and spec.maximum is None:
        return 0
    low: Any = spec.minimum
    high: Any = spec.maximum
    if spec.dtype == "datetime":
        low, high = (None if b is None else pd.Timestamp(b) for b in (low, high))
    elif series.dtype.kind in "iuf":  # NumPy compares int64 with Python ints exactly
        series = series.to_numpy()
    below = 0 if low is None else np.count_nonzero(series < low)
    above = 0 if high is None else np.count_nonzero(series > high)
    return int(below + above)


def _null_count(series: Any) -> int:
    """Count nulls; plain NumPy columns skip pandas (its per-call cost dominates small batches)."""
    import numpy as np

    dtype = series.dtype
    if not isinstance(dtype, np.dtype):
        return int(series.isna().sum())
    if dtype.kind == "f":
        return int(np.count_nonzero(np.isnan(series.to_numpy())))
    if dtype.kind in "mM":
        return int(np.count_nonzero(np.isnat(series.to_numpy())))
    return 0 if dtype.kind in "iub" else int(series.isna().sum())


FLOAT_EXACT_LIMIT = 2.0 ** 53


def _int64_problem(series: Any) -> str | None:
    """Say why an integer or float column cannot become int64 exactly, or return None.

    JSON allows integers of any size: beyond 64 bits they arrive as floats, and an integer
    column with nulls arrives as floats too; a float beyond 2**53 no longer holds the
    integer that was sent, so casting it would change the value silently.
    """
    import numpy as np

    kind = series.dtype.kind
    if kind == "u" and len(series) and int(series.max()) >= 2 ** 63:
        return "has values beyond the 64-bit integer range; the model takes int64"
    if kind == "f" and np.any(np.abs(series.to_numpy()) > FLOAT_EXACT_LIMIT):
        return ("has integers beyond 2**53 that arrived as floats (too large for 64 bits, or "
                "next to nulls) and may have lost digits; the model takes int64")
    return None


def _check_column(spec: ColumnSpec, series: Any) -> list[SignatureViolation]:
    problem = _int64_problem(series) if spec.dtype == "int64" else None
    if problem is not None:
        return [_violation(spec.name, "type", 0, problem)]
    if not _fits_type(spec, series):
        return [_violation(spec.name, "type", 0, f"has dtype {series.dtype}; the model takes "
                                                 f"{spec.dtype}")]
    found = []
    nulls = 0 if spec.nullable else _null_count(series)
    if nulls:
        found.append(_violation(spec.name, "null", nulls, f"has {nulls} null values; the "
                                                          "model was trained without nulls"))
    try:
        outside = _outside(spec, series)
    except TypeError:  # timezone-aware against naive times
        return [*found, _violation(spec.name, "type", 0, f"has dtype {series.dtype}, which "
                                                         "cannot compare with the times the "
                                                         "model was trained on")]
    if outside:
        kind = "category" if spec.categories is not None else "range"
        seen = ("categories" if kind == "category"
                else f"range {spec.minimum!r}..{spec.maximum!r}")
        found.append(_violation(spec.name, kind, outside, f"has {outside} values outside the "
                                                          f"{seen} seen in training"))
    return found


def check_batch(signature: Signature, batch: Any, *, allow_extra: bool = True
                ) -> list[SignatureViolation]:
    """Return every way ``batch`` departs from ``signature``: errors first, then warnings.

    ``batch`` is a DataFrame, or a 2-D array whose columns are the signature's in order.
    Columns are checked with vectorised operations only, so a batch costs a few passes over
    its values. Columns the signature does not name are allowed unless ``allow_extra`` is
    False.

    Raises:
        InvalidArgumentError: when ``batch`` is neither, or an array of the wrong width.
    """
    frame = as_frame(batch, signature.names, "batch")
    present = set(frame.columns)
    repeated = set(frame.columns[frame.columns.duplicated()])
    found = [_violation(str(name), "type", 0, "appears more than once")
             for name in sorted(map(str, repeated))]
    for spec in signature.inputs:
        if spec.name not in present:
            found.append(_violation(spec.name, "missing", 0, "is missing"))
        elif spec.name not in repeated:
            found += _check_column(spec, frame[spec.name])
    if not allow_extra:
        known = set(signature.names)
        found += [_violation(str(name), "extra", 0, "is not in the model's signature")
                  for name in frame.columns if name not in known]
    return sorted(found, key=lambda v: v.severity != "error")


def require_batch(signature: Signature, batch: Any, *, allow_extra: bool = True
                  ) -> list[SignatureViolation]:
    """Return the warnings of :func:`check_batch` when it finds no error.

    Raises:
        InvalidArgumentError: on field ``batch``, naming every failing column and its problem.
    """
    found = check_batch(signature, batch, allow_extra=allow_extra)
    errors = [v.message for v in found if v.severity == "error"]
    if errors:
        raise InvalidArgumentError("batch", "; ".join(errors))
    return found
