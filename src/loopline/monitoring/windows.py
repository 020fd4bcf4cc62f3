"""What a measurement is asked for: a rule, its window, and the settings it is judged by.

Pure: no I/O. A window ends at the evaluation time rounded down to a whole minute and starts
the rule's window before, so every evaluation in the same minute asks about the same window
(and the store keeps one evaluation per rule, scope and window end). ``Measurer`` is the
port the evaluator measures through: ``monitoring.signals.SignalMeasurer`` reads the
prediction log, the reference profiles and the serving stats; tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import AlertRule, DriftSettings, Measurement, SliceSpec


def window_end(now: datetime) -> datetime:
    """Return ``now`` rounded down to a whole minute (aware, UTC kept).

    Raises:
        InvalidArgumentError: naming ``now`` when it is naive.
    """
    if now.utcoffset() is None:
        raise InvalidArgumentError("now", "must be a timezone-aware datetime")
    return now.replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class MeasureTask:
    """Measure ``rule``'s signal over ``[start, end)`` as the data stood at ``as_of``.

    ``drift`` and ``slices`` are the config's settings the rule is judged by. Feedback
    labels timed after ``as_of`` are not counted, so measuring again later gives the same
    answer while the window's predictions stay as they were.
    """

    rule: AlertRule
    start: datetime
    end: datetime
    as_of: datetime
    drift: DriftSettings = field(default_factory=DriftSettings)
    slices: Mapping[str, SliceSpec] = field(default_factory=dict)

    @property
    def slice(self) -> SliceSpec | None:
        """The slice the rule looks at, if any."""
        name = self.rule.scope.slice
        return None if name is None else self.slices[name]


class Measurer(Protocol):
    """Measures one rule's signal over one window."""

    def measure(self, task: MeasureTask) -> Measurement:
        """Return what the signal measured (``value`` None when it cannot be measured).

        Raises:
            LooplineError: when the data cannot be read as the rule needs (the evaluator
                records it as an insufficient evaluation, with the message).
        """
        ...
