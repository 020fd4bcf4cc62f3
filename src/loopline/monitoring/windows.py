"""What a measurement is asked for: a rule, its window, and the settings it is judged by.

Pure: no I/O. A window ends at the evaluation time less ``SETTLE``, rounded down to a whole
minute, and starts the rule's window before, so every evaluation in the same minute asks
about the same window (and the store keeps one evaluation per rule, scope and window end).
``SETTLE`` lets the window's data arrive before it is read, as the canary analysis does
(``loop.rollout.DEFAULT_SETTLE``): a server writes a 10-second stats bucket within 5 seconds
of its end, and the prediction writer flushes within about a second; so an evaluation at
12:00:05 judges the window ending at 11:59, and one at 12:00:15 the window ending at 12:00.
A server whose writes lag by more than that (the store was away) can still add to a judged
window. ``Measurer`` is the
port the evaluator measures through: ``monitoring.signals.SignalMeasurer`` reads the
prediction log, the reference profiles and the serving stats; tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import AlertRule, DriftSettings, Measurement, SliceSpec
from loopline.store.serving_stats import BUCKET_SECONDS, FLUSH_SECONDS

SETTLE = timedelta(seconds=BUCKET_SECONDS + FLUSH_SECONDS)
"""How long after its end a window is read: one stats bucket plus one flush period (15 s)."""


def window_end(now: datetime, settle: timedelta = SETTLE) -> datetime:
    """Return ``now - settle`` rounded down to a whole minute (aware, UTC kept).

    Raises:
        InvalidArgumentError: naming ``now`` when it is naive, ``settle`` when negative.
    """
    if now.utcoffset() is None:
        raise InvalidArgumentError("now", "must be a timezone-aware datetime")
    if settle < timedelta(0):
        raise InvalidArgumentError("settle", f"{settle} must be 0 or more")
    return (now - settle).replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class MeasureTask:
    """Measure ``rule``'s signal over ``[start, end)`` as the data stood at ``as_of``.

    ``drift`` and ``slices`` are the config's settings the rule is judged by. Feedback
    labels timed after ``as_of`` are not counted, so measuring again later gives the same
    answer while the window's predictions stay as they were.

    ``cache`` is a memo shared by the tasks of one ``Evaluator.run`` (None: nothing is
    shared): what a measurer read and computed for one window (its profile, its labelled
    rows, a version's reference) is kept there under a key naming everything it depends
    on, so several rules on the same window read the log once. It lives as long as the run.
    """

    rule: AlertRule
    start: datetime
    end: datetime
    as_of: datetime
    drift: DriftSettings = field(default_factory=DriftSettings)
    slices: Mapping[str, SliceSpec] = field(default_factory=dict)
    cache: dict[Hashable, Any] | None = field(default=None, compare=False, repr=False)

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
                records it, or any other error but ``BackendError``, as an insufficient
                evaluation with the message).
        """
        ...
