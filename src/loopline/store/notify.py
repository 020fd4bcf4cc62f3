"""Waking event consumers: LISTEN/NOTIFY on PostgreSQL, a short poll on SQLite.

A waiter only says "there may be new events"; consumers always re-read from their cursor,
so a lost or spurious wake-up costs at most one poll interval, never an event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy.engine import URL

from loopline.core.errors import BackendError
from loopline.core.events import Event
from loopline.store.outbox import NOTIFY_CHANNEL, EventLog


class EventWaiter(Protocol):
    """Blocks until new events may exist."""

    def wait(self, timeout: float) -> bool:
        """Return True when woken by a notification, False after ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Release what the waiter holds."""
        ...


class PollingWaiter:
    """Sleeps for the poll interval (or less when the timeout is shorter)."""

    def __init__(self, interval: float = 0.2) -> None:
        self._interval = interval
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Sleep ``min(timeout, interval)`` seconds; never claims a notification."""
        self._closed.wait(min(timeout, self._interval))
        return False

    def close(self) -> None:
        """Cut any current wait short."""
        self._closed.set()


class PostgresListener:
    """Holds a dedicated connection that LISTENs on the events channel."""

    def __init__(self, url: URL) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        # Connect on first wait: a consumer that only polls once never holds a connection.
        import psycopg

        if self._conn is None:
            try:
                self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=2)
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.Error as exc:
                raise BackendError(f"cannot LISTEN for events on PostgreSQL: {exc}") from exc
        return self._conn

    def wait(self, timeout: float) -> bool:
        """Block until a NOTIFY arrives or ``timeout`` seconds pass."""
        import psycopg

        with self._lock:
            try:
                for _ in self._connection().notifies(timeout=timeout, stop_after=1):
                    return True
            except psycopg.Error as exc:
                self._drop()
                raise BackendError(f"lost the event LISTEN connection: {exc}") from exc
        return False

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the listening connection, if one was opened."""
        with self._lock:
            self._drop()


class WaitingEventSource:
    """The store's event log plus a waiter: what the dispatcher consumes (``EventSource``)."""

    def __init__(self, events: EventLog, waiter: EventWaiter) -> None:
        self._events = events
        self._waiter = waiter

    def read_after(self, position: int, limit: int,
                   types: Iterable[str] | None = None) -> list[Event]:
        """Return up to ``limit`` events after ``position``."""
        return self._events.read_after(position, limit, types)

    def cursor(self, subscriber: str) -> int:
        """Return a subscriber's position."""
        return self._events.cursor(subscriber)

    def advance(self, subscriber: str, expected: int, new: int) -> bool:
        """Move a cursor by compare-and-set."""
        return self._events.advance(subscriber, expected, new)

    def wait_for_events(self, timeout: float) -> bool:
        """Block until new events may exist or ``timeout`` passes."""
        return self._waiter.wait(timeout)

    def close(self) -> None:
        """Release the waiter."""
        self._waiter.close()
