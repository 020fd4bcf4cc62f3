"""The expectation catalogue for one table, evaluated vectorised with ``pyarrow.compute``.

Pure: no I/O. Nulls are not values: the value checks (range, set, regex, uniqueness) skip
them, and ``null_rate_at_most`` counts them (Arrow nulls; a float NaN is a value, and fails
a range check). Every check records what it observed: counts, shares, and up to ten
offending values, the most frequent first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from loopline.data.expectation_model import (
    Bound,
    ColumnName,
    EvaluationContext,
    EvaluationProblem,
    ExpectationModel,
    Fraction,
    Mostly,
    Outcome,
    Scalar,
)
from loopline.data.observed import jsonable

MAX_EXAMPLES = 10
LOGICAL_TYPES: dict[str, Callable[[pa.DataType], bool]] = {
    "integer": pa.types.is_integer,
    "float": pa.types.is_floating,
    "numeric": lambda t: (pa.types.is_integer(t) or pa.types.is_floating(t)
                          or pa.types.is_decimal(t)),
    "string": lambda t: (pa.types.is_string(t) or pa.types.is_large_string(t)
                         or pa.types.is_string_view(t)),
    "boolean": pa.types.is_boolean,
    "datetime": lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t),
}


def column_values(table: pa.Table, name: str) -> pa.ChunkedArray:
    """Return a column with dictionary encoding undone, so it compares like its values."""
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column


def examples(values: pa.ChunkedArray | pa.Array) -> list[Any]:
    """Up to ``MAX_EXAMPLES`` distinct values, the most frequent first."""
    if len(values) == 0:
        return []
    counts = pc.value_counts(values)
    order = pc.array_sort_indices(counts.field("counts"), order="descending")
    top = counts.field("values").take(order[:MAX_EXAMPLES])
    return [jsonable(value) for value in top.to_pylist()]


def rowwise(ok: pa.ChunkedArray, values: pa.ChunkedArray, mostly: float, what: str) -> Outcome:
    """Judge a per-row mask (null where the value is null): pass when enough rows are ok."""
    checked = len(ok) - ok.null_count
    bad = values.filter(pc.invert(ok))  # null mask entries are dropped
    unexpected = len(bad)
    fraction = unexpected / checked if checked else 0.0
    passed = (1.0 - fraction) >= mostly - 1e-12
    observed = {"checked": checked, "unexpected": unexpected,
                "unexpected_fraction": round(fraction, 6), "examples": examples(bad)}
    if unexpected == 0:
        message = f"all {checked} non-null values are {what}"
    else:
        share = f"{fraction:.2%}"
        need = "" if mostly == 1.0 else f" (allowed: {1.0 - mostly:.2%})"
        message = f"{unexpected} of {checked} non-null values ({share}) are not {what}{need}"
    return Outcome(passed, observed, message)


class ColumnExists(ExpectationModel):
    """The table has ``column``."""

    type: Literal["column_exists"] = "column_exists"
    column: ColumnName

    def table_columns(self) -> tuple[str, ...]:
        """None: a missing column is this expectation's own failure."""
        return ()

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when the column is present."""
        names = context.table.column_names
        if self.column in names:
            return Outcome(True, {"exists": True}, f"column {self.column!r} is present")
        return Outcome(False, {"exists": False, "columns": names[:50]},
                       f"column {self.column!r} is missing")


class ColumnType(ExpectationModel):
    """``column`` has a logical type, or exactly an Arrow type.

    Logical types: integer, float, numeric, string, boolean, datetime (timestamps and dates);
    anything else is an Arrow type (``int32``, ``float64``, ``timestamp[us, tz=UTC]``, ...).
    """

    type: Literal["column_type"] = "column_type"
    column: ColumnName
    dtype: str = Field(min_length=1)

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when the column's Arrow type is of ``dtype``; dictionary columns by value type."""
        actual = context.table.schema.field(self.column).type
        if pa.types.is_dictionary(actual):
            actual = actual.value_type
        logical = LOGICAL_TYPES.get(self.dtype)
        if logical is not None:
            passed = logical(actual)
        else:
            try:
                passed = actual == pa.type_for_alias(self.dtype)
            except ValueError:
                passed = str(actual) == self.dtype
        verb = "is" if passed else "is not"
        return Outcome(passed, {"type": str(actual)},
                       f"column {self.column!r} has type {actual}, which {verb} {self.dtype}")


class NullRateAtMost(ExpectationModel):
    """At most a fraction ``max`` of ``column`` is null (0 means no nulls at all)."""

    type: Literal["null_rate_at_most"] = "null_rate_at_most"
    column: ColumnName
    max: Fraction

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when nulls / rows <= max (an empty table has rate 0)."""
        column = context.table.column(self.column)
        rows, nulls = len(column), column.null_count
        rate = nulls / rows if rows else 0.0
        passed = rate <= self.max + 1e-12
        relation = "at most" if passed else "above"
        return Outcome(passed, {"null_rate": round(rate, 6), "nulls": nulls, "rows": rows},
                       f"null rate {rate:.4g} ({nulls} of {rows}) is {relation} {self.max}")


def _bound_scalar(value: Any, column_type: pa.DataType) -> pa.Scalar:
    """Return an Arrow scalar comparable with ``column_type``.

    Raises:
        EvaluationProblem: when the bound and the column are of different kinds.
    """
    temporal = pa.types.is_timestamp(column_type) or pa.types.is_date(column_type)
    if isinstance(value, date):
        if not temporal:
            raise EvaluationProblem(f"bound {value.isoformat()} is a date/time but the column "
                                    f"is {column_type}")
        if pa.types.is_timestamp(column_type) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day, tzinfo=UTC)
        if pa.types.is_date(column_type) and isinstance(value, datetime):
            if value.time() != datetime.min.time():
                raise EvaluationProblem(f"bound {value.isoformat()} has a time of day but the "
                                        f"column holds dates ({column_type})")
            value = value.date()
        return pa.scalar(value, type=column_type)
    if not LOGICAL_TYPES["numeric"](column_type):
        raise EvaluationProblem(f"bound {value!r} is a number but the column is {column_type}")
    return pa.scalar(value)


class ValuesBetween(ExpectationModel):
    """Non-null values of ``column`` lie in [min, max], on numbers or dates/times.

    Either bound may be left out; both are inclusive unless ``min_inclusive`` or
    ``max_inclusive`` is false. With ``mostly`` < 1 that share of values is enough. Bounds
    for dates/times are ISO text or YAML dates; a bound without a zone is read as UTC.
    """

    type: Literal["values_between"] = "values_between"
    column: ColumnName
    min: Bound = None
    max: Bound = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    mostly: Mostly = 1.0

    @model_validator(mode="after")
    def _one_bound(self) -> ValuesBetween:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        numbers = isinstance(self.min, int | float) and isinstance(self.max, int | float)
        if (self.min is not None and self.max is not None
                and (numbers or type(self.min) is type(self.max)) and self.min > self.max):
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when enough non-null values are inside the bounds; NaN counts as outside."""
        values = column_values(context.table, self.column)
        masks = []
        if self.min is not None:
            low = _bound_scalar(self.min, values.type)
            masks.append(pc.greater_equal(values, low) if self.min_inclusive
                         else pc.greater(values, low))
        if self.max is not None:
            high = _bound_scalar(self.max, values.type)
            masks.append(pc.less_equal(values, high) if self.max_inclusive
                         else pc.less(values, high))
        ok = functools.reduce(pc.and_kleene, masks)
        outcome = rowwise(ok, values, self.mostly, f"within {self._range_text()}")
        extremes = pc.min_max(values)
        observed = {**outcome.observed, "min": jsonable(extremes["min"].as_py()),
                    "max": jsonable(extremes["max"].as_py())}
        return Outcome(outcome.passed, observed, outcome.message)

    def _range_text(self) -> str:
        low = "-inf" if self.min is None else str(self.min)
        high = "+inf" if self.max is None else str(self.max)
        return (("[" if self.min_inclusive else "(") + f"{low}, {high}"
                + ("]" if self.max_inclusive else ")"))


class ValuesInSet(ExpectationModel):
    """Non-null values of ``column`` are among ``values`` (with ``mostly``, a share of them)."""

    type: Literal["values_in_set"] = "values_in_set"
    column: ColumnName
    values: list[Scalar] = Field(min_length=1)
    mostly: Mostly = 1.0

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when enough non-null values are in the set; values must fit the column's type."""
        values = column_values(context.table, self.column)
        try:
            value_set = pa.array(self.values, type=values.type)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise EvaluationProblem(f"the allowed values do not fit column {self.column!r} of "
                                    f"type {values.type}: {exc}") from exc
        ok = pc.if_else(pc.is_valid(values), pc.is_in(values, value_set=value_set), None)
        return rowwise(ok, values, self.mostly, "in the allowed set")


class ValuesUnique(ExpectationModel):
    """No value of ``column`` (or combination of ``columns``) occurs twice.

    Rows whose key is entirely null are skipped, as in Great Expectations.
    """

    type: Literal["values_unique"] = "values_unique"
    column: ColumnName | None = None
    columns: list[ColumnName] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_key(self) -> ValuesUnique:
        if (self.column is None) == (self.columns is None):
            raise ValueError("give either column or columns")
        return self

    def table_columns(self) -> tuple[str, ...]:
        """Return the key columns."""
        return (self.column,) if self.column is not None else tuple(self.columns or ())

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when every key occurs once; observed: duplicate rows, the commonest keys."""
        keys = list(self.table_columns())
        subset = pa.table({key: column_values(context.table, key) for key in keys})
        present = functools.reduce(pc.or_, [pc.is_valid(subset[key]) for key in keys])
        subset = subset.filter(present)
        groups = subset.group_by(keys, use_threads=False).aggregate([([], "count_all")])
        repeated = groups.filter(pc.greater(groups["count_all"], 1))
        repeated = repeated.sort_by([("count_all", "descending")])
        duplicate_rows = int(pc.sum(repeated["count_all"]).as_py() or 0)
        shown = []
        for row in repeated.slice(0, MAX_EXAMPLES).to_pylist():
            count = row.pop("count_all")
            key = row[keys[0]] if len(keys) == 1 else row
            shown.append({"key": jsonable(key), "count": count})
        observed = {"checked": subset.num_rows, "duplicate_rows": duplicate_rows,
                    "duplicate_keys": repeated.num_rows, "examples": shown}
        label = "values" if len(keys) == 1 else f"({', '.join(keys)}) combinations"
        if duplicate_rows == 0:
            return Outcome(True, observed, f"all {subset.num_rows} {label} are unique")
        return Outcome(False, observed, f"{repeated.num_rows} {label} repeat, over "
                                        f"{duplicate_rows} rows")


class ValuesMatchRegex(ExpectationModel):
    """Non-null strings of ``column`` contain a match of ``regex``.

    RE2 syntax, and search semantics as in Great Expectations: anchor with ``^...$`` to match
    whole values. With ``mostly`` < 1 that share of values is enough.
    """

    type: Literal["values_match_regex"] = "values_match_regex"
    column: ColumnName
    regex: str = Field(min_length=1)
    mostly: Mostly = 1.0

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), regex)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{regex!r} is not a valid regular expression: {exc}") from exc
        return regex

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when enough non-null values match.

        Raises:
            EvaluationProblem: when the column does not hold strings.
        """
        values = column_values(context.table, self.column)
        if not LOGICAL_TYPES["string"](values.type):
            raise EvaluationProblem(f"column {self.column!r} is {values.type}, not a string "
                                    "column", {"type": str(values.type)})
        ok = pc.match_substring_regex(values, self.regex)
        return rowwise(ok, values, self.mostly, f"matching {self.regex!r}")


class RowCountBetween(ExpectationModel):
    """The table has between ``min`` and ``max`` rows (inclusive; either may be left out)."""

    type: Literal["row_count_between"] = "row_count_between"
    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> RowCountBetween:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when the row count is within the bounds."""
        rows = context.table.num_rows
        low = 0 if self.min is None else self.min
        passed = rows >= low and (self.max is None or rows <= self.max)
        high = "inf" if self.max is None else str(self.max)
        relation = "within" if passed else "outside"
        return Outcome(passed, {"rows": rows}, f"{rows} rows is {relation} [{low}, {high}]")
