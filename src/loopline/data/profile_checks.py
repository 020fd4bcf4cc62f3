"""Expectations that compare the current snapshot's profile with the previous snapshot's.

Pure: no I/O. They read two profile dicts of the shape ``{"rows": n, "columns": {name:
{"kind", "null_rate", "min", "max", ...}}}``. With no previous profile (a first snapshot)
there is nothing to compare and they pass, saying so. Dates and times in profiles are ISO
text and are compared as instants.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from loopline.core.errors import InvalidArgumentError
from loopline.data.expectation_model import (
    ColumnName,
    EvaluationContext,
    EvaluationProblem,
    ExpectationModel,
    Fraction,
    Outcome,
)

_EPSILON = 1e-12


def profile_columns(profile: Mapping[str, Any], field: str) -> Mapping[str, Mapping[str, Any]]:
    """Return a profile's ``columns`` mapping.

    Raises:
        InvalidArgumentError: naming ``field`` when the profile has no ``columns`` mapping.
    """
    columns = profile.get("columns") if isinstance(profile, Mapping) else None
    if not isinstance(columns, Mapping) or not all(isinstance(v, Mapping)
                                                   for v in columns.values()):
        raise InvalidArgumentError(field, "must be a profile dict with a 'columns' mapping of "
                                          "column name to statistics")
    return columns


class _ProfileCheck(ExpectationModel):
    uses_profiles: ClassVar[bool] = True

    def table_columns(self) -> tuple[str, ...]:
        """None: these read the profiles, not the table."""
        return ()

    def _profiles(self, context: EvaluationContext) -> tuple[
            Mapping[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]] | None]:
        if context.current_profile is None:
            raise EvaluationProblem("no current profile was given to compare")
        current = profile_columns(context.current_profile, "current_profile")
        if context.previous_profile is None:
            return current, None
        return current, profile_columns(context.previous_profile, "previous_profile")

    def _columns(self, current: Mapping[str, Any], previous: Mapping[str, Any]) -> list[str]:
        """Return the named column, or every column both profiles have."""
        column = self.target_column
        if column is None:
            return [name for name in current if name in previous]
        if column not in current:
            raise EvaluationProblem(f"column {column!r} is not in the current profile",
                                    {"missing_columns": [column]})
        return [column] if column in previous else []


_NO_PREVIOUS = Outcome(True, {"previous": None},
                       "no previous profile (first snapshot): nothing to compare")


def _column_type(entry: Mapping[str, Any], other: Mapping[str, Any]) -> Any:
    key = "type" if "type" in entry and "type" in other else "kind"
    return entry.get(key)


class SchemaUnchanged(_ProfileCheck):
    """The columns and their types match the previous snapshot's.

    Added columns are allowed only with ``allow_added``; types are compared by the profiles'
    ``type`` when both have one, else by their ``kind``.
    """

    type: Literal["schema_unchanged"] = "schema_unchanged"
    allow_added: bool = False

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when no column was removed or retyped (nor added, unless allowed)."""
        current, previous = self._profiles(context)
        if previous is None:
            return _NO_PREVIOUS
        added = [name for name in current if name not in previous]
        removed = [name for name in previous if name not in current]
        retyped = {name: {"previous": _column_type(previous[name], current[name]),
                          "current": _column_type(current[name], previous[name])}
                   for name in current if name in previous
                   and _column_type(previous[name], current[name])
                   != _column_type(current[name], previous[name])}
        observed = {"added": added, "removed": removed, "retyped": retyped}
        problems = []
        if added and not self.allow_added:
            problems.append(f"added {added}")
        if removed:
            problems.append(f"removed {removed}")
        if retyped:
            problems.append("retyped " + ", ".join(
                f"{name} ({change['previous']} -> {change['current']})"
                for name, change in retyped.items()))
        if problems:
            return Outcome(False, observed, "schema changed: " + "; ".join(problems))
        note = f" (added {added}, allowed)" if added else ""
        return Outcome(True, observed, f"schema unchanged{note}")


class NullRateShiftAtMost(_ProfileCheck):
    """The null rate moved by at most ``max_shift`` since the previous snapshot.

    Absolute change: 0.05 is five percentage points. Checks ``column``, or every column both
    profiles have when it is left out.
    """

    type: Literal["null_rate_shift_at_most"] = "null_rate_shift_at_most"
    column: ColumnName | None = None
    max_shift: Fraction

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when no compared column's null rate moved more than ``max_shift``."""
        current, previous = self._profiles(context)
        if previous is None:
            return _NO_PREVIOUS
        shifts: dict[str, dict[str, float]] = {}
        for name in self._columns(current, previous):
            before, after = previous[name].get("null_rate"), current[name].get("null_rate")
            if isinstance(before, int | float) and isinstance(after, int | float):
                shift = round(abs(float(after) - float(before)), 12)
                shifts[name] = {"previous": before, "current": after, "shift": shift}
        violations = {name: s for name, s in shifts.items()
                      if s["shift"] > self.max_shift + _EPSILON}
        largest = max((s["shift"] for s in shifts.values()), default=0.0)
        observed = {"compared": len(shifts), "max_observed_shift": largest,
                    "violations": violations}
        if violations:
            detail = ", ".join(f"{name} {s['previous']:.4g} -> {s['current']:.4g}"
                               for name, s in violations.items())
            return Outcome(False, observed, f"null rate moved more than {self.max_shift}: "
                                            f"{detail}")
        return Outcome(True, observed, f"null rates of {len(shifts)} columns moved at most "
                                       f"{largest:.4g} (limit {self.max_shift})")


def _as_number(value: Any) -> tuple[float, bool] | None:
    """Return a profile min/max as (number, is_instant), or None when it is neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value), False
    if isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            return None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)  # profiles of naive columns: read as UTC
        return instant.timestamp(), True
    return None


def _show(value: float, instant: bool) -> Any:
    return datetime.fromtimestamp(value, UTC).isoformat() if instant else value


class RangeWithinPrevious(_ProfileCheck):
    """The min and max lie inside the previous snapshot's range, widened by a tolerance.

    Each side widens by ``tolerance`` times the previous range's width (0.1 = 10%). Checks
    ``column``, or every numeric or date/time column both profiles have when left out.
    """

    type: Literal["range_within_previous"] = "range_within_previous"
    column: ColumnName | None = None
    tolerance: Annotated[float, Field(ge=0.0)] = 0.0

    def check(self, context: EvaluationContext) -> Outcome:
        """Pass when no compared column's range went outside the widened previous range."""
        current, previous = self._profiles(context)
        if previous is None:
            return _NO_PREVIOUS
        compared, violations = 0, {}
        for name in self._columns(current, previous):
            found = self._compare(previous[name], current[name])
            if found is not None:
                compared += 1
                if found:
                    violations[name] = found
        observed = {"compared": compared, "violations": violations}
        if violations:
            detail = ", ".join(f"{name} [{v['min']}, {v['max']}] outside "
                               f"[{v['allowed_min']}, {v['allowed_max']}]"
                               for name, v in violations.items())
            return Outcome(False, observed, f"range moved: {detail}")
        return Outcome(True, observed, f"ranges of {compared} columns are within the previous "
                                       f"ones (tolerance {self.tolerance})")

    def _compare(self, before: Mapping[str, Any], after: Mapping[str, Any],
                 ) -> dict[str, Any] | None:
        """None when not comparable, {} when inside, else the details of the violation."""
        bounds = [_as_number(entry.get(key)) for entry in (before, after)
                  for key in ("min", "max")]
        if any(bound is None for bound in bounds):
            return None
        (pmin, instant), (pmax, _), (cmin, _), (cmax, _) = bounds  # type: ignore[misc]
        if len({bound[1] for bound in bounds if bound is not None}) != 1:
            return None  # a number against an instant: the column changed kind
        slack = (pmax - pmin) * self.tolerance
        low, high = pmin - slack, pmax + slack
        if cmin >= low - _EPSILON and cmax <= high + _EPSILON:
            return {}
        return {"min": after.get("min"), "max": after.get("max"),
                "previous_min": before.get("min"), "previous_max": before.get("max"),
                "allowed_min": _show(low, instant), "allowed_max": _show(high, instant)}
