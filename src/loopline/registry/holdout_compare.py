"""Comparing a model's fresh outputs on the holdout with the recorded ones, one check each.

Pure: no I/O. ``exact`` means equal values (NaN equals NaN in the same place); a tolerance
``{"rtol", "atol"}`` accepts ``|fresh - recorded| <= atol + rtol * |recorded|`` for
floating-point outputs and is ignored for labels, integers and text, which must be equal.
A check reports the rows compared, the rows that differ and, for numbers, the largest
absolute difference, so a failure says by how much as well as where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.registry.holdout import EXACT


@dataclass(frozen=True, slots=True)
class Check:
    """One thing ``verify`` compared: what, under which policy, and whether it held.

    ``rows`` and ``max_abs_diff`` are None where they do not apply (the artifact hash; text
    labels have no difference in size).
    """

    name: str
    passed: bool
    compared: str
    policy: str
    detail: str
    rows: int | None = None
    max_abs_diff: float | None = None


def describe_policy(tolerance: str | Mapping[str, float]) -> str:
    """Return ``exact`` or ``rtol=…, atol=…`` for a tolerance."""
    if tolerance == EXACT or isinstance(tolerance, str):
        return EXACT
    return f"rtol={tolerance['rtol']:g}, atol={tolerance['atol']:g}"


def _numeric(array: Any) -> bool:
    return bool(array.dtype.kind in "biuf")


def _equal_rows(recorded: Any, fresh: Any, tolerance: str | Mapping[str, float]) -> Any:
    """Return a boolean per row: all its values agree under the policy."""
    if _numeric(recorded) and _numeric(fresh):
        left, right = recorded.astype(np.float64), fresh.astype(np.float64)
        floats = recorded.dtype.kind == "f" or fresh.dtype.kind == "f"
        if floats and isinstance(tolerance, Mapping):
            same = np.isclose(right, left, rtol=tolerance["rtol"], atol=tolerance["atol"],
                              equal_nan=True)
        else:
            same = (left == right) | (np.isnan(left) & np.isnan(right))
    else:
        same = np.asarray(recorded == fresh, dtype=bool)
        if same.shape != recorded.shape:  # numpy could not compare them element by element
            same = np.zeros(recorded.shape, dtype=bool)
    return same if same.ndim == 1 else same.all(axis=1)


def _max_abs_diff(recorded: Any, fresh: Any) -> float | None:
    if not (_numeric(recorded) and _numeric(fresh)) or recorded.size == 0:
        return 0.0 if recorded.size == 0 else None
    left, right = recorded.astype(np.float64), fresh.astype(np.float64)
    both_nan = np.isnan(left) & np.isnan(right)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan, 0.0, np.abs(left - right))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff)))


def _shape_text(array: Any) -> str:
    return "x".join(str(n) for n in array.shape)


def compare(name: str, recorded: Any, fresh: Any,
            tolerance: str | Mapping[str, float]) -> Check:
    """Return the check of output ``name``: ``fresh`` against ``recorded`` (None: missing)."""
    policy = describe_policy(tolerance)
    if recorded is None or fresh is None:
        where = "recorded" if recorded is None else "given by the loaded model"
        return Check(name, False, name, policy, f"{name} was not {where}")
    recorded, fresh = np.asarray(recorded), np.asarray(fresh)
    compared = f"{name} ({_shape_text(recorded)})"
    if recorded.shape != fresh.shape:
        return Check(name, False, compared, policy,
                     f"shape {_shape_text(fresh)} now, {_shape_text(recorded)} recorded",
                     len(recorded) if recorded.ndim else None)
    rows = len(recorded)
    differing = int(rows - np.count_nonzero(_equal_rows(recorded, fresh, tolerance)))
    biggest = _max_abs_diff(recorded, fresh)
    if differing:
        size = f" (max abs diff {biggest:.3g})" if biggest is not None else ""
        return Check(name, False, compared, policy,
                     f"{differing} of {rows} rows differ{size}", rows, biggest)
    return Check(name, True, compared, policy, f"all {rows} rows agree", rows, biggest)
