"""Admission for expensive work: a few slots per kind, and ``503 busy`` at once when full.

Some routes do work far larger than their request: render a report, walk the whole audit
chain, plan retention over every stored object, measure an evaluation again, run a model
in a fresh process. Each takes a slot of its kind (``Work``) for as long as it runs; a
request that finds every slot of its kind taken is refused at once with 503, code
``busy`` and ``Retry-After``, instead of parking one of the server's worker threads behind
the others (RELIABILITY.md: overload sheds quickly rather than queueing without bound).
Kinds are limited separately, so a burst of reports never blocks verifying the audit chain.

A route takes a slot with the ``Limits`` dependency::

    @router.get("/audit/verify")
    def verify(ws: Reader, limits: Limits) -> ChainReport:
        with limits.slot(Work.AUDIT_VERIFY):
            return ws.audit.verify()

``create_api`` may set ``app.state.capacity`` to a ``Capacity`` of its choosing; without one
the first request that asks makes one with ``DEFAULT_SLOTS`` per kind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import State

from loopline.api.errors import ApiError

__all__ = ["DEFAULT_SLOTS", "RETRY_AFTER_SECONDS", "Capacity", "Limits", "Work", "capacity_of"]

DEFAULT_SLOTS = 2
RETRY_AFTER_SECONDS = 5
_MAKING = threading.Lock()


class Work(StrEnum):
    """A kind of expensive work; each kind has slots of its own."""

    MONITORING_REPORT = "monitoring report"
    GOVERNANCE_REPORT = "governance report"
    AUDIT_VERIFY = "audit chain verification"
    EVALUATION_RERUN = "evaluation rerun"
    RETENTION = "retention run"
    MODEL_VERIFY = "model verification"


class Capacity:
    """Slots for each kind of expensive work, taken without waiting."""

    def __init__(self, slots: int | Mapping[Work, int] = DEFAULT_SLOTS,
                 retry_after: int = RETRY_AFTER_SECONDS) -> None:
        """Give each kind ``slots`` slots (a mapping: per kind, ``DEFAULT_SLOTS`` for the rest).

        Raises:
            ValueError: when a kind would have fewer than one slot, or ``retry_after`` < 1.
        """
        chosen = {work: slots if isinstance(slots, int) else slots.get(work, DEFAULT_SLOTS)
                  for work in Work}
        if min(chosen.values()) < 1 or retry_after < 1:
            raise ValueError("every kind of work needs at least one slot, and Retry-After "
                             "at least one second")
        self._limits = chosen
        self._free = {work: threading.BoundedSemaphore(n) for work, n in chosen.items()}
        self._taken = dict.fromkeys(Work, 0)
        self._lock = threading.Lock()
        self._retry_after = retry_after

    @contextmanager
    def slot(self, work: Work) -> Iterator[None]:
        """Hold a slot of ``work`` for the block.

        Raises:
            ApiError: 503 ``busy`` with ``Retry-After`` when every slot of ``work`` is taken.
        """
        if not self._free[work].acquire(blocking=False):
            raise ApiError(503, "busy", f"the server is running as many {work}s as it allows "
                           f"({self._limits[work]}); retry in {self._retry_after}s", None,
                           {"Retry-After": str(self._retry_after)})
        with self._lock:
            self._taken[work] += 1
        try:
            yield
        finally:
            with self._lock:
                self._taken[work] -= 1
            self._free[work].release()

    def taken(self, work: Work) -> int:
        """Return how many slots of ``work`` are held now."""
        with self._lock:
            return self._taken[work]


def capacity_of(state: State) -> Capacity:
    """Return the app's ``Capacity`` (``state.capacity``), made on first use when unset."""
    with _MAKING:
        found = getattr(state, "capacity", None)
        if not isinstance(found, Capacity):
            found = Capacity()
            state.capacity = found
    return found


async def _limits(request: Request) -> Capacity:
    # async: answered on the event loop, without taking a worker thread for it
    return capacity_of(request.app.state)


Limits = Annotated[Capacity, Depends(_limits)]
"""A route's handle on the app's ``Capacity`` (a dependency: declare ``limits: Limits``)."""
