"""The profile of one column: counts, range, sketches; merges exactly and round-trips via dicts.

Pure: no I/O and no raw rows. A string column's kind (categorical or text) is decided when it
is read, from its merged category counter, so merging never has to undo a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from loopline.core.errors import InvalidArgumentError
from loopline.data.category_sketch import CategoryCounter
from loopline.data.quantile_sketch import QuantileSketch

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DEFAULT_CATEGORICAL_THRESHOLD = 1_000
DEFAULT_TOP_K = 20

_Sketch = TypeVar("_Sketch", QuantileSketch, CategoryCounter)


class ColumnKind(StrEnum):
    """What a column holds, as profiles and drift tests see it."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    TEXT = "text"
    OTHER = "other"  # lists, structs, binary, durations, times, nulls: count and nulls only


class Family(StrEnum):
    """The stored shape of a column profile; strings become categorical or text on reading."""

    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    STRING = "string"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ProfileOptions:
    """Knobs of profiling; profiles merge only when made with equal options.

    ``category_cap`` defaults to the categorical threshold so a profile stays small: a string
    column keeps exact counts while it could still be categorical, and a ``sample_size``
    bottom-k sample once it is certainly text.
    """

    categorical_threshold: int = DEFAULT_CATEGORICAL_THRESHOLD
    category_cap: int = DEFAULT_CATEGORICAL_THRESHOLD
    sample_size: int = 256
    top_k: int = DEFAULT_TOP_K
    alpha: float = 0.01
    max_buckets: int = 2048
    datetime_alpha: float = 1e-5  # of epoch microseconds: ~5 h at 2025, ~10 years kept exact
    datetime_max_buckets: int = 8192


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    """Summary of one column; ``min``/``max``/``sum`` are epoch microseconds for datetimes."""

    name: str
    family: Family
    count: int = 0
    nulls: int = 0
    nan_count: int = 0
    min: int | float | None = None
    max: int | float | None = None
    sum: float = 0.0
    true_count: int = 0
    values: QuantileSketch | None = None
    lengths: QuantileSketch | None = None
    categories: CategoryCounter | None = None
    timezone: str | None = None
    categorical_threshold: int = DEFAULT_CATEGORICAL_THRESHOLD
    top_k: int = DEFAULT_TOP_K

    @property
    def kind(self) -> ColumnKind:
        """The column's kind; strings are categorical up to the threshold of distinct values."""
        if self.family is Family.STRING:
            distinct = self.categories.distinct() if self.categories is not None else 0.0
            if distinct <= self.categorical_threshold:
                return ColumnKind.CATEGORICAL
            return ColumnKind.TEXT
        return ColumnKind(self.family.value)

    @property
    def null_rate(self) -> float:
        """Nulls over all rows (0.0 for an empty column)."""
        rows = self.count + self.nulls
        return self.nulls / rows if rows else 0.0

    @property
    def mean(self) -> float | None:
        """Mean of the non-null, non-NaN values (numeric and datetime), else None."""
        finite = self.count - self.nan_count
        if self.family not in (Family.NUMERIC, Family.DATETIME) or finite == 0:
            return None
        return self.sum / finite

    @property
    def false_count(self) -> int:
        """Non-null false values of a boolean column (0 for other kinds)."""
        return self.count - self.true_count if self.family is Family.BOOLEAN else 0

    def quantile(self, q: float) -> float | None:
        """Estimated value (string length for strings) at quantile ``q``, within [min, max]."""
        sketch = self.lengths if self.family is Family.STRING else self.values
        if sketch is None:
            return None
        estimate = sketch.quantile(q)
        if estimate is None or self.min is None or self.max is None:
            return estimate
        return float(min(max(estimate, self.min), self.max))

    def merge(self, other: ColumnProfile) -> ColumnProfile:
        """Profile of both columns' rows; raises InvalidArgumentError naming the column."""
        where = f"column {self.name!r}"
        if other.name != self.name:
            raise InvalidArgumentError(where, f"cannot merge with column {other.name!r}")
        mine = (self.family, self.timezone, self.categorical_threshold, self.top_k)
        theirs = (other.family, other.timezone, other.categorical_threshold, other.top_k)
        if mine != theirs:
            raise InvalidArgumentError(
                where, f"kinds differ: {_describe(self)} cannot merge with {_describe(other)}")
        try:
            values = _merge_optional(self.values, other.values)
            lengths = _merge_optional(self.lengths, other.lengths)
            categories = _merge_optional(self.categories, other.categories)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(where, exc.message) from exc
        return ColumnProfile(
            name=self.name, family=self.family, count=self.count + other.count,
            nulls=self.nulls + other.nulls, nan_count=self.nan_count + other.nan_count,
            min=_pick(min, self.min, other.min), max=_pick(max, self.max, other.max),
            sum=self.sum + other.sum, true_count=self.true_count + other.true_count,
            values=values, lengths=lengths, categories=categories, timezone=self.timezone,
            categorical_threshold=self.categorical_threshold, top_k=self.top_k)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: kind, count, nulls, null_rate, min, max, then per kind."""
        data: dict[str, Any] = {"kind": self.kind.value, "count": self.count,
                                "nulls": self.nulls, "null_rate": self.null_rate,
                                "min": self._shown(self.min), "max": self._shown(self.max)}
        if self.family in (Family.NUMERIC, Family.DATETIME):
            data.update(_numeric_fields(self))
        elif self.family is Family.BOOLEAN:
            data.update(true_count=self.true_count, false_count=self.false_count)
        elif self.family is Family.STRING:
            data.update(_string_fields(self))
        return data

    def _shown(self, value: float | None) -> float | str | None:
        if value is None or self.family is not Family.DATETIME:
            return value
        return iso_from_micros(value, self.timezone)

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> ColumnProfile:
        """Read back ``to_dict`` output; raises InvalidArgumentError naming the column."""
        try:
            return _from_dict(name, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"column {name!r}", f"malformed profile ({exc!r})") from exc


def iso_from_micros(micros: float, timezone: str | None) -> str:
    """ISO-8601 text of epoch microseconds; a zoned column's instants are shown in UTC (Z)."""
    stamp = np.datetime64(int(micros), "us")
    return str(np.datetime_as_string(stamp, unit="us", timezone="UTC" if timezone else "naive"))


def micros_from_iso(text: str) -> int:
    """Epoch microseconds of ``iso_from_micros`` output."""
    return int(np.datetime64(text.removesuffix("Z"), "us").astype(np.int64))


def _describe(profile: ColumnProfile) -> str:
    extra = f" (timezone {profile.timezone})" if profile.timezone else ""
    return (f"{profile.family.value}{extra} with threshold {profile.categorical_threshold}, "
            f"top_k {profile.top_k}")


def _merge_optional(mine: _Sketch | None, theirs: _Sketch | None) -> _Sketch | None:
    if mine is None or theirs is None:
        return mine if theirs is None else theirs
    return mine.merge(theirs)


def _pick(choose: Any, mine: int | float | None, theirs: int | float | None,
          ) -> int | float | None:
    if mine is None or theirs is None:
        return mine if theirs is None else theirs
    chosen: int | float = choose(mine, theirs)
    return chosen


def _numeric_fields(profile: ColumnProfile) -> dict[str, Any]:
    shown = {f"p{round(q * 100)}": profile._shown(profile.quantile(q)) for q in QUANTILES}
    mean = profile.mean
    fields: dict[str, Any] = {"sum": profile.sum,
                              "mean": profile._shown(mean) if mean is not None else None,
                              "quantiles": shown}
    if profile.family is Family.NUMERIC:
        fields["nan_count"] = profile.nan_count
    else:
        fields["timezone"] = profile.timezone
    fields["sketch"] = profile.values.to_dict() if profile.values is not None else None
    return fields


def _string_fields(profile: ColumnProfile) -> dict[str, Any]:
    counter = profile.categories if profile.categories is not None else CategoryCounter()
    top = counter.top(profile.top_k)
    lengths = {f"p{round(q * 100)}": profile.quantile(q) for q in QUANTILES}
    return {"distinct": round(counter.distinct()), "distinct_exact": not counter.sampled,
            "top": [[value, count] for value, count in top],
            "other": counter.total - sum(count for _, count in top),
            "length_quantiles": lengths, "categorical_threshold": profile.categorical_threshold,
            "top_k": profile.top_k,
            "length_sketch": profile.lengths.to_dict() if profile.lengths is not None else None,
            "categories": counter.to_dict()}


def _family_of(kind: str) -> Family:
    if kind in (ColumnKind.CATEGORICAL, ColumnKind.TEXT):
        return Family.STRING
    return Family(kind)


def _from_dict(name: str, data: dict[str, Any]) -> ColumnProfile:
    family = _family_of(data["kind"])
    low, high = data["min"], data["max"]
    if family is Family.DATETIME and low is not None:
        low, high = micros_from_iso(low), micros_from_iso(high)
    sketch, lengths, counter = data.get("sketch"), data.get("length_sketch"), None
    if family is Family.STRING:
        counter = CategoryCounter.from_dict(data["categories"])
    return ColumnProfile(
        name=name, family=family, count=int(data["count"]), nulls=int(data["nulls"]),
        nan_count=int(data.get("nan_count", 0)), min=low, max=high,
        sum=float(data.get("sum", 0.0)), true_count=int(data.get("true_count", 0)),
        values=QuantileSketch.from_dict(sketch) if sketch is not None else None,
        lengths=QuantileSketch.from_dict(lengths) if lengths is not None else None,
        categories=counter, timezone=data.get("timezone"),
        categorical_threshold=int(data.get("categorical_threshold",
                                           DEFAULT_CATEGORICAL_THRESHOLD)),
        top_k=int(data.get("top_k", DEFAULT_TOP_K)))
