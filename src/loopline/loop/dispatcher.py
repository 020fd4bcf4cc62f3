"""The event dispatcher: hands outbox events to named subscribers, at least once, in order.

Each subscriber has a durable cursor. A batch is handled in order and the cursor moves past
the last event handled successfully; an event whose handler raises stops that subscriber
(not the others) and is retried on a later round, after an exponential backoff. Handlers are
therefore idempotent. Many dispatchers may run at once: cursors move by compare-and-set, so
a lost race only means the winner's batch is not applied twice by the loser's cursor.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loopline.core.errors import InvalidArgumentError, LooplineError
from loopline.core.events import Event
from loopline.core.names import validate_name
from loopline.core.ports import EventSource

log = logging.getLogger(__name__)

Handler = Callable[[Event], object]  # what a handler returns is ignored


@dataclass(frozen=True, slots=True)
class Subscription:
    """A named consumer of the event log, optionally limited to some event types."""

    name: str
    handler: Handler
    types: frozenset[str] | None = None

    def wants(self, event: Event) -> bool:
        """Tell whether this subscription handles ``event``."""
        return self.types is None or event.type in self.types


@dataclass(slots=True)
class DispatchReport:
    """What one dispatch round did."""

    handled: int = 0
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    not_before: float = 0.0


class Dispatcher:
    """Delivers events from an ``EventSource`` to subscriptions with durable cursors."""

    def __init__(self, source: EventSource, batch_size: int = 500,
                 max_backoff: float = 30.0) -> None:
        if not 1 <= batch_size <= 10_000:
            raise InvalidArgumentError("batch_size", "must be between 1 and 10000")
        self._source = source
        self._batch_size = batch_size
        self._max_backoff = max_backoff
        self._subscriptions: dict[str, Subscription] = {}
        self._backoff: dict[str, _Backoff] = {}

    def subscribe(self, name: str, handler: Handler, types: set[str] | None = None) -> None:
        """Register ``handler`` under the durable cursor ``name``.

        Raises:
            InvalidArgumentError: when the name is invalid or already subscribed.
        """
        validate_name(name, "subscriber")
        if name in self._subscriptions:
            raise InvalidArgumentError("subscriber", f"{name!r} is already subscribed")
        self._subscriptions[name] = Subscription(name, handler,
                                                 frozenset(types) if types else None)

    def run_once(self) -> DispatchReport:
        """Deliver every pending event to every subscription that is not backing off."""
        report = DispatchReport()
        now = time.monotonic()
        for sub in self._subscriptions.values():
            if self._backoff.get(sub.name, _Backoff()).not_before > now:
                continue
            self._drain(sub, report)
        return report

    def _drain(self, sub: Subscription, report: DispatchReport) -> None:
        while True:
            position = self._source.cursor(sub.name)
            batch = self._source.read_after(position, self._batch_size)
            if not batch:
                return
            reached, error = self._deliver(sub, batch, report)
            if reached > position and not self._source.advance(sub.name, position, reached):
                log.info("subscriber %s: cursor moved by another dispatcher", sub.name)
                return
            if error is not None:
                self._fail(sub.name, error, report)
                return
            self._backoff.pop(sub.name, None)
            if len(batch) < self._batch_size:
                return

    def _deliver(self, sub: Subscription, batch: list[Event], report: DispatchReport,
                 ) -> tuple[int, Exception | None]:
        reached = batch[0].seq - 1
        for event in batch:
            if sub.wants(event):
                try:
                    sub.handler(event)
                except Exception as exc:  # noqa: BLE001 - any handler error means "retry later"
                    return reached, exc
                report.handled += 1
            reached = event.seq
        return reached, None

    def _fail(self, name: str, error: Exception, report: DispatchReport) -> None:
        state = self._backoff.setdefault(name, _Backoff())
        state.failures += 1
        # Full jitter keeps many failing dispatchers from retrying in lockstep.
        delay = min(self._max_backoff, 0.1 * 2 ** (state.failures - 1)) * random.uniform(0.5, 1)
        state.not_before = time.monotonic() + delay
        report.failed[name] = f"{type(error).__name__}: {error}"
        log.warning("subscriber %s failed (attempt %d), retrying in %.1fs: %s", name,
                    state.failures, delay, error)

    def close(self) -> None:
        """Release the event source."""
        self._source.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, stop: threading.Event, idle_wait: float = 1.0) -> None:
        """Dispatch until ``stop`` is set, sleeping on the source between empty rounds."""
        outages = 0
        while not stop.is_set():
            try:
                report = self.run_once()
                if report.handled == 0 and not stop.is_set():
                    self._source.wait_for_events(idle_wait)
                outages = 0
            except LooplineError as exc:  # the database went away: wait, then carry on
                outages += 1
                delay = min(self._max_backoff, 0.2 * 2 ** (outages - 1)) * random.uniform(0.5, 1)
                log.warning("dispatcher: %s; retrying in %.1fs", exc, delay)
                stop.wait(delay)
