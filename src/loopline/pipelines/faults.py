"""Fault injection: named tasks fail with a given probability, for tests and evaluation.

Off unless configured (``LOOPLINE_FAULTS="train=0.3,load=0.1"`` or ``RunnerOptions.faults``).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping

from loopline.core.errors import InvalidArgumentError


class InjectedFault(ConnectionError):
    """A failure loopline injected on purpose; transient, so the default retry policy retries."""


def parse_faults(text: str, field: str = "faults") -> dict[str, float]:
    """Parse ``"task=p,task2=p"`` into a mapping of task name (or key) to probability.

    Raises:
        InvalidArgumentError: naming ``field`` when an item is malformed or p is not in [0, 1].
    """
    faults: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            probability = float(value)
        except ValueError:
            probability = -1.0
        if not sep or not name.strip() or not 0.0 <= probability <= 1.0:
            raise InvalidArgumentError(field, f"{item!r} must look like task=p with p in [0, 1]")
        faults[name.strip()] = probability
    return faults


class FaultInjector:
    """Decides, reproducibly when seeded, whether an attempt of a task fails on purpose."""

    def __init__(self, faults: Mapping[str, float], seed: int | None = None) -> None:
        for name, probability in faults.items():
            if not 0.0 <= probability <= 1.0:
                raise InvalidArgumentError(f"faults.{name}", "must be a probability in [0, 1]")
        self._faults = dict(faults)
        self._seed = seed
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def check(self, task_name: str, task_key: str) -> None:
        """Raise ``InjectedFault`` with the task's configured probability (by key or name).

        Raises:
            InjectedFault: when this attempt was chosen to fail.
        """
        probability = self._faults.get(task_key, self._faults.get(task_name, 0.0))
        if probability <= 0.0:
            return
        with self._lock:
            self._counts[task_key] += 1
            nth = self._counts[task_key]
            roll = self._random.random() if self._seed is None else None
        if roll is None:
            # Seeded: the n-th attempt of a task rolls the same number whichever worker
            # thread gets there first, so a seeded run fails the same attempts every time.
            roll = random.Random(f"{self._seed}:{task_key}:{nth}").random()
        if roll < probability:
            raise InjectedFault(f"injected fault in task {task_key!r} (p={probability:g})")
