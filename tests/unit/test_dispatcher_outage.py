"""The dispatcher rides out a database outage: it backs off and carries on, never dies."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from loopline.core.errors import BackendError
from loopline.core.events import Event
from loopline.loop import Dispatcher


class FlakySource:
    """An event source whose database is down for the first ``outages`` reads."""

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.position = 0
        self.events = [Event(seq, f"id{seq}", "custom.tick", "s", {}, "t", datetime.now(UTC))
                       for seq in (1, 2, 3)]

    def read_after(self, position: int, limit: int,
                   types: Iterable[str] | None = None) -> list[Event]:
        if self.outages:
            self.outages -= 1
            raise BackendError("metadata database error: connection refused")
        return [e for e in self.events if e.seq > position][:limit]

    def cursor(self, subscriber: str) -> int:
        return self.position

    def advance(self, subscriber: str, expected: int, new: int) -> bool:
        self.position = new
        return True

    def wait_for_events(self, timeout: float) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release."""


def test_run_survives_an_outage_and_delivers_afterwards() -> None:
    source = FlakySource(outages=3)
    seen: list[int] = []
    done = threading.Event()

    def handle(event: Event) -> None:
        seen.append(event.seq)
        if len(seen) == 3:
            done.set()

    dispatcher = Dispatcher(source, max_backoff=0.05)
    dispatcher.subscribe("after-outage", handle)
    stop = threading.Event()
    runner = threading.Thread(target=dispatcher.run, args=(stop, 0.01))
    runner.start()
    try:
        assert done.wait(10), "the dispatcher must resume once the database is back"
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert seen == [1, 2, 3] and source.outages == 0
