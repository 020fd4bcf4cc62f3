"""Slices of a window's rows: which rows a ``SliceSpec`` selects, and its training-metric key.

Pure: no I/O. A slice is the rows where every named column matches its condition (all
conditions must hold):

    value               equal                     ``color: red``
    list                one of                    ``region: [EU, UK]``
    {"min": a, "max": b} in the range, inclusive;  ``age: {min: 18, max: 65}``
                        either end may be absent

A null never matches (a row whose column is null is outside the slice). Comparisons are
Arrow's: an integer column compares with a float bound, a string column only with strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import SliceSpec
from loopline.data.parquet_io import ARROW_ERRORS

__all__ = ["RANGE_KEYS", "slice_key", "slice_mask"]

RANGE_KEYS = frozenset({"min", "max"})


def _is_range(condition: Any) -> bool:
    return isinstance(condition, Mapping)


def _is_list(condition: Any) -> bool:
    return isinstance(condition, Sequence) and not isinstance(condition, str | bytes)


def _check(condition: Any, field: str) -> None:
    """Refuse a malformed condition: a range without bounds or with other keys, an empty list.

    Raises:
        InvalidArgumentError: naming ``field``.
    """
    if _is_range(condition):
        unknown = set(map(str, condition)) - RANGE_KEYS
        if unknown:
            raise InvalidArgumentError(field, f"a range takes 'min' and/or 'max', not "
                                              f"{sorted(unknown)}")
        if condition.get("min") is None and condition.get("max") is None:
            raise InvalidArgumentError(field, "a range needs a 'min' or a 'max' value")
    elif _is_list(condition) and not condition:
        raise InvalidArgumentError(field, "an empty list selects no row")
    elif condition is None:
        raise InvalidArgumentError(field, "a condition must be a value, a list or a range")


def _compare(column: pa.ChunkedArray, condition: Any) -> pa.ChunkedArray:
    """Return where ``column`` meets the (checked) ``condition``; null where it is null."""
    if _is_range(condition):
        parts = []
        if condition.get("min") is not None:
            parts.append(pc.greater_equal(column, pa.scalar(condition["min"])))
        if condition.get("max") is not None:
            parts.append(pc.less_equal(column, pa.scalar(condition["max"])))
        return parts[0] if len(parts) == 1 else pc.and_kleene(parts[0], parts[1])
    if _is_list(condition):
        return pc.is_in(column, value_set=pa.array(list(condition)))
    return pc.equal(column, pa.scalar(condition))


def _meets(table: pa.Table, column: str, condition: Any, field: str) -> pa.ChunkedArray:
    values = table.column(column)
    if pa.types.is_null(values.type):  # not one value in the window: no row matches
        return pa.chunked_array([pa.array(np.zeros(table.num_rows, dtype=bool))])
    try:
        return pc.fill_null(_compare(values, condition), False)
    except ARROW_ERRORS as exc:
        raise InvalidArgumentError(field, f"{condition!r} cannot be compared with a "
                                          f"{values.type} column ({exc})") from exc


def slice_mask(table: pa.Table, spec: SliceSpec) -> pa.ChunkedArray:
    """Return, for each row of ``table``, whether it is in the slice ``spec`` (never null).

    Raises:
        InvalidArgumentError: naming ``slices.<name>.<column>`` when the column is not in
            the table, the condition is malformed, or its values cannot be compared with
            the column's type.
    """
    mask: pa.ChunkedArray | None = None
    for column, condition in spec.where.items():
        field = f"slices.{spec.name}.{column}"
        _check(condition, field)
        if column not in table.column_names:
            raise InvalidArgumentError(field, f"is not a column of the window; it has "
                                              f"{sorted(table.column_names)}")
        met = _meets(table, column, condition, field)
        mask = met if mask is None else pc.and_(mask, met)
    if mask is None:  # pragma: no cover - a SliceSpec always has a condition
        raise InvalidArgumentError(f"slices.{spec.name}", "has no conditions")
    return mask


def slice_key(spec: SliceSpec) -> str:
    """Return the key the registry stores the slice's training metrics under.

    A slice of one equality is ``"column=value"`` (as ``registry.metrics`` writes slices,
    e.g. ``"color=red"``); any other slice is known by its name.
    """
    if len(spec.where) == 1:
        (column, condition), = spec.where.items()
        if not _is_range(condition) and not _is_list(condition):
            return f"{column}={condition}"
    return spec.name
