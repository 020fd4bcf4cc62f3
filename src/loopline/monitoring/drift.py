"""Drift per column and per dataset, computed from two profiles: no raw rows, bounded memory.

Pure: no I/O. A column's drift compares the reference's profile (the training data) with the
current window's, using the sketches the profiles hold (``drift_tests`` states what the
sketches' discretisation costs each statistic). Tests by column kind, and what ``auto``
picks, following Evidently's defaults:

    kind                  tests                            auto (current sample size m)
    numeric               ks, psi, wasserstein             m <= 1000: ks (p < 0.05)
                                                           else wasserstein / std (>= 0.1)
    categorical, boolean  chi_square, psi, jensen_shannon  m <= 1000: chi_square (p < 0.05)
                                                           else jensen_shannon (>= 0.1)

Evidently picks by the reference's size; here the current window's decides, since the
reference (the training data) is usually large and the windows vary. Jensen-Shannon at 0.1
over many categories needs large windows: with 50 equally likely values, sampling noise alone
averages 0.13 at 1000 rows a side and 0.09 at 2000 (0.04 at 10,000); raise the threshold or
the window for such columns.

A numeric column whose values fall in at most 5 buckets of both sketches is, under ``auto``,
tested as categories (chi-square or Jensen-Shannon over the buckets), as Evidently treats a
numeric column of at most 5 distinct values; a two-valued column's chi-square is the
two-proportion z-test. PSI drifts at 0.2 and above. p-value scores (ks, chi_square) drift
*below* the threshold; the other scores at or above it. A datetime column is tested as
numeric only under a named method (its values move with time, so ``auto`` skips it); text
and other columns are skipped with the reason. The dataset drifts when the share of tested
columns that drifted is at least ``DriftSettings.share``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import (
    P_VALUE_METHODS,
    ColumnDriftSpec,
    DriftMethod,
    DriftSettings,
)
from loopline.data.column_profile import ColumnKind, ColumnProfile
from loopline.data.profiling import Profile
from loopline.data.sketches import CategoryCounter, QuantileSketch
from loopline.monitoring.drift_tests import (
    Histogram,
    Statistic,
    category_histogram,
    chi_square,
    jensen_shannon,
    ks,
    numeric_histogram,
    psi,
    wasserstein,
)

AUTO_SAMPLE_LIMIT = 1000
"""Current samples up to this size get a p-value test under ``auto``; larger ones a distance."""
LOW_CARDINALITY = 5
DEFAULT_THRESHOLDS: Mapping[DriftMethod, float] = {
    DriftMethod.KS: 0.05, DriftMethod.CHI_SQUARE: 0.05, DriftMethod.PSI: 0.2,
    DriftMethod.WASSERSTEIN: 0.1, DriftMethod.JENSEN_SHANNON: 0.1,
}
NUMERIC_KINDS = frozenset({ColumnKind.NUMERIC, ColumnKind.DATETIME})
CATEGORICAL_KINDS = frozenset({ColumnKind.CATEGORICAL, ColumnKind.BOOLEAN})
METHODS_BY_GROUP: Mapping[str, frozenset[DriftMethod]] = {
    "numeric": frozenset({DriftMethod.AUTO, DriftMethod.KS, DriftMethod.PSI,
                          DriftMethod.WASSERSTEIN}),
    "categorical": frozenset({DriftMethod.AUTO, DriftMethod.CHI_SQUARE, DriftMethod.PSI,
                              DriftMethod.JENSEN_SHANNON}),
}
_TESTS: Mapping[DriftMethod, Callable[[Histogram], Statistic]] = {
    DriftMethod.KS: ks, DriftMethod.WASSERSTEIN: wasserstein, DriftMethod.PSI: psi,
    DriftMethod.CHI_SQUARE: chi_square, DriftMethod.JENSEN_SHANNON: jensen_shannon,
}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's drift: the test run, its score against the threshold, and why.

    ``method`` is the test that ran (never ``auto``); ``details`` keeps the statistic, the
    p-value where there is one, the sample sizes, the method asked for and why this one ran,
    and the discretisation's error bound.
    """

    column: str
    kind: ColumnKind
    method: DriftMethod
    score: float
    threshold: float
    drifted: bool
    reference_count: int
    current_count: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form."""
        return {"column": self.column, "kind": self.kind.value, "method": self.method.value,
                "score": self.score, "threshold": self.threshold, "drifted": self.drifted,
                "reference_count": self.reference_count, "current_count": self.current_count,
                "details": dict(self.details)}


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Drift of every tested column, the share that drifted and the dataset verdict.

    ``skipped`` maps each column not tested to the reason. ``share_threshold`` is the share
    at which the dataset drifts.
    """

    columns: tuple[ColumnDrift, ...]
    share: float
    drifted: bool
    skipped: dict[str, str] = field(default_factory=dict)
    share_threshold: float = 0.5

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """Names of the columns that drifted, in profile order."""
        return tuple(column.column for column in self.columns if column.drifted)

    def column(self, name: str) -> ColumnDrift:
        """Return the drift of column ``name``; raise InvalidArgumentError when not tested."""
        for column in self.columns:
            if column.column == name:
                return column
        reason = self.skipped.get(name, "is not in the report")
        raise InvalidArgumentError(f"column {name!r}", f"was not tested: {reason}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form."""
        return {"share": self.share, "share_threshold": self.share_threshold,
                "drifted": self.drifted, "drifted_columns": list(self.drifted_columns),
                "columns": [column.to_dict() for column in self.columns],
                "skipped": dict(self.skipped)}


def _group(kind: ColumnKind) -> str | None:
    if kind in NUMERIC_KINDS:
        return "numeric"
    if kind in CATEGORICAL_KINDS:
        return "categorical"
    return None


def _method(spec: ColumnDriftSpec, name: str, group: str, kind: ColumnKind) -> DriftMethod:
    where = f"drift.columns.{name}.method"
    try:
        method = DriftMethod(spec.method)
    except ValueError:
        raise InvalidArgumentError(where, f"{spec.method!r} is not one of "
                                          f"{', '.join(DriftMethod)}") from None
    allowed = METHODS_BY_GROUP[group]
    if method not in allowed:
        raise InvalidArgumentError(where, f"{method.value} does not apply to a {kind.value} "
                                          f"column; use one of "
                                          f"{', '.join(sorted(m.value for m in allowed))}")
    if kind is ColumnKind.DATETIME and method is DriftMethod.AUTO:
        raise InvalidArgumentError(where, "a datetime column moves with time: name ks, psi "
                                          "or wasserstein to test it")
    return method


def _threshold(spec: ColumnDriftSpec, name: str, method: DriftMethod) -> float | None:
    """Check the spec's threshold against the method's range; None means the default."""
    value = spec.threshold
    if value is None:
        return None
    where = f"drift.columns.{name}.threshold"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise InvalidArgumentError(where, f"{value!r} must be a finite number")
    if method in P_VALUE_METHODS or method is DriftMethod.AUTO:
        if not 0 < value < 1:
            kind = "an auto" if method is DriftMethod.AUTO else "a p-value"
            raise InvalidArgumentError(where, f"{value!r} must be between 0 and 1 for "
                                              f"{kind} test")
    elif method is DriftMethod.JENSEN_SHANNON and not 0 < value <= 1:
        raise InvalidArgumentError(where, f"{value!r} must be in (0, 1] (a distance of at "
                                          "most 1)")
    elif value <= 0:
        raise InvalidArgumentError(where, f"{value!r} must be above 0")
    return float(value)


def _samples(profile: ColumnProfile) -> int:
    if profile.kind is ColumnKind.BOOLEAN:
        return profile.count
    if profile.kind is ColumnKind.CATEGORICAL:
        return profile.categories.total if profile.categories is not None else 0
    return profile.values.count if profile.values is not None else 0


def _sketch(profile: ColumnProfile) -> QuantileSketch:
    if profile.values is None:  # a numeric profile always has one; a hand-made may not
        raise InvalidArgumentError(f"column {profile.name!r}", "the profile has no sketch")
    return profile.values


def _histogram(reference: ColumnProfile, current: ColumnProfile) -> Histogram:
    if reference.kind is ColumnKind.BOOLEAN:
        return category_histogram(
            {"false": reference.false_count, "true": reference.true_count},
            {"false": current.false_count, "true": current.true_count})
    if reference.kind is ColumnKind.CATEGORICAL:
        return category_histogram(reference.categories or CategoryCounter(),
                                  current.categories or CategoryCounter())
    try:
        return numeric_histogram(_sketch(reference), _sketch(current))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"column {reference.name!r}", exc.problem) from exc


def _auto(group: str, histogram: Histogram, current_count: int) -> tuple[DriftMethod, str]:
    """Return the test ``auto`` picks and why (see the module docstring)."""
    small = current_count <= AUTO_SAMPLE_LIMIT
    size = f"current sample {current_count} {'<=' if small else '>'} {AUTO_SAMPLE_LIMIT}"
    buckets = histogram.reference.size
    if group == "numeric" and buckets > LOW_CARDINALITY:
        return (DriftMethod.KS, f"numeric, {size}") if small else (
            DriftMethod.WASSERSTEIN, f"numeric, {size}")
    what = (f"numeric with {buckets} distinct buckets (<= {LOW_CARDINALITY}), tested as "
            "categories" if group == "numeric" else "categorical")
    return (DriftMethod.CHI_SQUARE, f"{what}, {size}") if small else (
        DriftMethod.JENSEN_SHANNON, f"{what}, {size}")


def _checked_kinds(reference: ColumnProfile, current: ColumnProfile) -> str:
    """Return the test group of two profiles of one column, or raise naming the column."""
    where = f"column {reference.name!r}"
    if current.name != reference.name:
        raise InvalidArgumentError(where, f"compared with column {current.name!r}")
    if reference.kind is not current.kind:
        raise InvalidArgumentError(where, f"kinds differ: the reference is "
                                          f"{reference.kind.value}, the current "
                                          f"{current.kind.value}")
    group = _group(reference.kind)
    if group is None:
        raise InvalidArgumentError(where, f"{reference.kind.value} columns have no drift test")
    for side, profile in (("reference", reference), ("current", current)):
        if _samples(profile) == 0:
            raise InvalidArgumentError(where, f"the {side} profile has no values")
    return group


def column_drift(reference: ColumnProfile, current: ColumnProfile,
                 spec: ColumnDriftSpec) -> ColumnDrift:
    """Compare one column's current profile with its reference under ``spec``.

    Raises:
        InvalidArgumentError: naming the column when the profiles are of other columns or
            kinds, a kind with no test, or empty; naming ``drift.columns.<column>.method`` or
            ``.threshold`` when the method does not apply to the kind or the threshold is
            outside the method's range.
    """
    group = _checked_kinds(reference, current)
    name, kind = reference.name, reference.kind
    asked = _method(spec, name, group, kind)
    threshold = _threshold(spec, name, asked)
    histogram = _histogram(reference, current)
    n, m = _samples(reference), _samples(current)
    if asked is DriftMethod.AUTO:
        method, reason = _auto(group, histogram, m)
    else:
        method, reason = asked, "asked for"
    chosen = threshold if threshold is not None else DEFAULT_THRESHOLDS[method]
    result = _TESTS[method](histogram)
    score = _finite_score(result.score)
    drifted = score < chosen if method in P_VALUE_METHODS else score >= chosen
    details = {**result.details, "method": method.value, "asked": asked.value,
               "reason": reason, "n": n, "m": m,
               "reference_null_rate": reference.null_rate,
               "current_null_rate": current.null_rate}
    if kind in NUMERIC_KINDS:
        details.update(reference_mean=reference.mean, current_mean=current.mean)
    return ColumnDrift(column=name, kind=kind, method=method, score=score,
                       threshold=chosen, drifted=bool(drifted), reference_count=n,
                       current_count=m, details=_json_safe(details))


def _finite_score(score: float) -> float:
    """Keep a score storable as JSON: +inf becomes the largest float, NaN no evidence."""
    if math.isfinite(score):
        return score
    return sys.float_info.max if score > 0 else 0.0


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite numbers (a sum past the float range) with None."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in details.items()}


def _skip_reason(reference: ColumnProfile, current: ColumnProfile,
                 spec: ColumnDriftSpec) -> str | None:
    """Return why a column is not tested in a dataset comparison (None: test it)."""
    kinds = {reference.kind, current.kind}
    if kinds <= {ColumnKind.CATEGORICAL, ColumnKind.TEXT} and ColumnKind.TEXT in kinds:
        return (f"text (more than {reference.categorical_threshold} distinct values in "
                f"{'both profiles' if len(kinds) == 1 else 'one profile'})")
    if len(kinds) > 1:  # an all-null column of Arrow's null type profiles as ``other``
        if current.count == 0:
            return "no values in the current window (all null)"
        if reference.count == 0:
            return "no values in the reference (all null)"
        return (f"kinds differ: the reference is {reference.kind.value}, the current window "
                f"{current.kind.value}")
    if _group(reference.kind) is None:
        return f"{reference.kind.value} columns have no drift test"
    if kinds == {ColumnKind.DATETIME} and spec.method == DriftMethod.AUTO:
        return "datetime (moves with time; name ks, psi or wasserstein to test it)"
    if len(kinds) == 1 and _samples(current) == 0:
        return "no values in the current window (all null)"
    if len(kinds) == 1 and _samples(reference) == 0:
        return "no values in the reference (all null)"
    return None


def _names(reference: Profile, current: Profile, columns: Sequence[str] | None,
           skipped: dict[str, str]) -> list[str]:
    if columns is None:
        present = set(current.names)
        for name in reference.names:
            if name not in present:
                skipped[name] = "not in the current window"
        return [name for name in reference.names if name in present]
    if isinstance(columns, str):
        raise InvalidArgumentError("columns", "must be a list of column names, not one text")
    for name in columns:
        for side, profile in (("reference", reference), ("current", current)):
            if name not in profile.names:
                raise InvalidArgumentError("columns", f"{name!r} is not in the {side} "
                                                      f"profile ({list(profile.names)})")
    return list(dict.fromkeys(columns))


def _category_surge(name: str, reference: ColumnProfile, current: ColumnProfile,
                    spec: ColumnDriftSpec) -> ColumnDrift:
    """Return a drifted verdict for a categorical column whose window turned into text.

    The window holds more distinct values than the categorical threshold where the reference
    held few: a surge of new categories, the plainest drift there is. The window's counter
    is a sample past its cap, so no test's score can be computed exactly; the score is the
    largest distance (1.0) and the details say why.
    """
    method = spec.method if spec.method in (DriftMethod.PSI, DriftMethod.JENSEN_SHANNON) \
        else DriftMethod.JENSEN_SHANNON
    seen = reference.categories.distinct() if reference.categories is not None else 0.0
    now = current.categories.distinct() if current.categories is not None else 0.0
    return ColumnDrift(
        column=name, kind=ColumnKind.CATEGORICAL, method=method, score=1.0,
        threshold=spec.threshold if spec.threshold is not None else DEFAULT_THRESHOLDS[method],
        drifted=True, reference_count=reference.count, current_count=current.count,
        details={"reason": f"the window holds about {now:,.0f} distinct values, more than the "
                           f"categorical threshold ({reference.categorical_threshold}), where "
                           f"the reference held {seen:,.0f}: a surge of new categories",
                 "reference_distinct": seen, "current_distinct": now})


def dataset_drift(reference: Profile, current: Profile, settings: DriftSettings,
                  columns: Sequence[str] | None = None) -> DriftReport:
    """Compare every column (the reference's, or ``columns``) and give the dataset verdict.

    Columns that cannot be tested (text, other, datetime under ``auto``, all null, not in
    the current window, or of another kind there than in the reference: numbers in one and
    text in the other) are listed in ``skipped`` with the reason — except a categorical
    column whose window holds more distinct values than the categorical threshold, which
    drifted (a surge of new categories); the share counts tested
    columns only, and a report with none tested has share 0 and does not drift.

    Raises:
        InvalidArgumentError: naming ``reference`` or ``current`` when a profile has no rows,
            ``columns`` for a name not in both profiles, or as ``column_drift`` does.
    """
    for side, profile in (("reference", reference), ("current", current)):
        if profile.rows == 0 or not profile.columns:
            raise InvalidArgumentError(side, "the profile has no rows")
    skipped: dict[str, str] = {}
    results: list[ColumnDrift] = []
    for name in _names(reference, current, columns, skipped):
        mine, theirs = reference.column(name), current.column(name)
        spec = settings.spec(name)
        if mine.kind is ColumnKind.CATEGORICAL and theirs.kind is ColumnKind.TEXT:
            results.append(_category_surge(name, mine, theirs, spec))
            continue
        reason = _skip_reason(mine, theirs, spec)
        if reason is not None:
            skipped[name] = reason
            continue
        results.append(column_drift(mine, theirs, spec))
    drifted = sum(1 for result in results if result.drifted)
    share = drifted / len(results) if results else 0.0
    return DriftReport(columns=tuple(results), share=share,
                       drifted=bool(results) and share >= settings.share, skipped=skipped,
                       share_threshold=settings.share)


__all__ = ["AUTO_SAMPLE_LIMIT", "DEFAULT_THRESHOLDS", "ColumnDrift", "DriftReport",
           "column_drift", "dataset_drift"]
