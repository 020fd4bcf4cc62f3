"""Model metrics, overall and per slice, in the one form a version records them.

Pure: no I/O. Stored form (what ``ModelVersion.metrics`` holds)::

    {"accuracy": 0.93, "recall": 0.81,                       overall: metric -> number
     "slices": {"region=EU": {"recall": 0.75},               per slice: slice -> metric -> number
                "region=US": {"recall": 0.84}}}

Overall metrics stay top-level numbers, so a policy reads ``metrics["accuracy"]``; slices
sit under the reserved key ``slices`` (absent when there are none). Registration accepts
that form and also the metric-major form, where a metric maps slices to values and the
slice ``overall`` is the overall value::

    {"accuracy": 0.93, "recall": {"overall": 0.81, "region=EU": 0.75}}

Both normalise to the stored form; a value given twice is refused. Values are real numbers
(not bools); NaN and infinities are kept (stored by name, as ``"nan"``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name

SLICES = "slices"
OVERALL = "overall"
MAX_SLICE_KEY = 200

Number = int | float


def _number(field: str, value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(field, f"{value!r} is not a number")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _slice_key(field: str, key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_SLICE_KEY or any(
            not c.isprintable() for c in key):
        raise InvalidArgumentError(field, f"slice {key!r} must be 1-{MAX_SLICE_KEY} printable "
                                          "characters, e.g. 'region=EU'")
    return key


class _Collector:
    """Gathers overall and per-slice values, refusing any given twice."""

    def __init__(self) -> None:
        self.overall: dict[str, Number] = {}
        self.slices: dict[str, dict[str, Number]] = {}

    def add(self, metric: str, slice_key: str, value: Any) -> None:
        field = f"metrics.{metric}" if slice_key == OVERALL else \
            f"metrics.{SLICES}.{slice_key}.{metric}"
        validate_name(metric, "metrics")
        if metric == SLICES:
            raise InvalidArgumentError("metrics", f"{SLICES!r} is reserved for per-slice values")
        target = self.overall if slice_key == OVERALL else self.slices.setdefault(slice_key, {})
        if metric in target:
            raise InvalidArgumentError(field, "is given twice")
        target[metric] = _number(field, value)

    def stored(self) -> dict[str, Any]:
        if not self.slices:
            return dict(self.overall)
        return {**self.overall, SLICES: {key: dict(values) for key, values in
                                         sorted(self.slices.items())}}


def _mapping(field: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(field, "must be a mapping")
    return value


def normalise_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``metrics`` in the stored form (see the module docstring).

    Raises:
        InvalidArgumentError: naming the metric or slice that is malformed, not a number, or
            given twice.
    """
    found = _Collector()
    for name, value in _mapping("metrics", metrics or {}).items():
        if name == SLICES:
            for slice_key, values in _mapping(f"metrics.{SLICES}", value).items():
                key = _slice_key(f"metrics.{SLICES}", slice_key)
                for metric, number in _mapping(f"metrics.{SLICES}.{key}", values).items():
                    found.add(metric, key, number)
        elif isinstance(value, Mapping):
            for slice_key, number in value.items():
                found.add(name, _slice_key(f"metrics.{name}", slice_key), number)
        else:
            found.add(name, OVERALL, value)
    return found.stored()


def overall_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Return the overall metrics of a stored mapping (everything but ``slices``)."""
    return {name: value for name, value in metrics.items() if name != SLICES}


def slice_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the per-slice metrics of a stored mapping: slice -> metric -> value."""
    slices = metrics.get(SLICES)
    if not isinstance(slices, Mapping):
        return {}
    return {str(key): dict(values) for key, values in slices.items()
            if isinstance(values, Mapping)}
