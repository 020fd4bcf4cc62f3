"""The event outbox: append inside a write transaction, read after a cursor, move cursors.

Delivery is at least once: a subscriber moves its cursor only after handling, so a crash
between handling and moving replays the batch. Cursors move by compare-and-set and never
backwards, so two consumers of one cursor cannot rewind each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from loopline.core.canonical import canonical_json
from loopline.core.clock import Clock
from loopline.core.errors import InvalidArgumentError
from loopline.core.events import CursorPosition, Event, NewEvent
from loopline.core.ids import new_id
from loopline.core.names import validate_name
from loopline.store.engine import WRITE_OPTION
from loopline.store.errors import translated
from loopline.store.models import EVENTS, EventCursorRow, EventRow

NOTIFY_CHANNEL = "loopline_events"
MAX_READ = 10_000


def append_event(session: Session, event: NewEvent, actor: str, clock: Clock) -> Event:
    """Insert ``event`` in the session's transaction and return it with its sequence number.

    Raises:
        InvalidArgumentError: when the type, subject or payload is not acceptable.
    """
    _check_event(event)
    event_id, payload, at = new_id(), dict(event.payload), clock.now()
    # Core on the session's connection: the ORM insert path costs several times more here.
    seq = session.connection().execute(sa.insert(EVENTS).returning(EVENTS.c.seq), {
        "id": event_id, "type": event.type, "subject": event.subject, "payload": payload,
        "actor": actor, "occurred_at": at,
    }).scalar_one()
    return Event(seq, event_id, event.type, event.subject, payload, actor, at)


def _check_event(event: NewEvent) -> None:
    if not event.type or len(event.type) > 128:
        raise InvalidArgumentError("event.type", "must be 1-128 characters")
    if not event.subject or len(event.subject) > 512:
        raise InvalidArgumentError("event.subject", "must be 1-512 characters")
    try:
        canonical_json(dict(event.payload))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError("event.payload", f"must be JSON-serialisable: {exc}") from exc


def notify(session: Session) -> None:
    """Ask PostgreSQL to wake listeners when this transaction commits (no-op elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


def _to_event(row: EventRow) -> Event:
    payload: Mapping[str, Any] = row.payload
    return Event(seq=row.seq, id=row.id, type=row.type, subject=row.subject, payload=payload,
                 actor=row.actor, occurred_at=row.occurred_at)


class EventLog:
    """Reads of the outbox and the subscribers' durable cursors."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    @translated
    def read_after(self, position: int, limit: int = 1000,
                   types: Iterable[str] | None = None) -> list[Event]:
        """Return up to ``limit`` events with ``seq > position``, oldest first.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..10000 or position is negative.
        """
        if not 1 <= limit <= MAX_READ:
            raise InvalidArgumentError("limit", f"must be between 1 and {MAX_READ}")
        if position < 0:
            raise InvalidArgumentError("position", "must be zero or more")
        query = sa.select(EventRow).where(EventRow.seq > position)
        wanted = list(types) if types is not None else None
        if wanted:
            query = query.where(EventRow.type.in_(wanted))
        query = query.order_by(EventRow.seq).limit(limit)
        with Session(self._engine) as session:
            return [_to_event(row) for row in session.scalars(query)]

    @translated
    def last_seq(self) -> int:
        """Return the sequence number of the newest event (0 when the log is empty)."""
        with Session(self._engine) as session:
            return int(session.scalar(sa.select(sa.func.coalesce(sa.func.max(EventRow.seq), 0)))
                       or 0)

    @translated
    def count(self) -> int:
        """Return how many events the log holds."""
        with Session(self._engine) as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(EventRow)) or 0)

    @translated
    def cursor(self, subscriber: str) -> int:
        """Return a subscriber's position, 0 when it has never consumed."""
        validate_name(subscriber, "subscriber")
        with Session(self._engine) as session:
            row = session.get(EventCursorRow, subscriber)
            return row.position if row else 0

    @translated
    def cursors(self) -> list[CursorPosition]:
        """List every subscriber's position."""
        with Session(self._engine) as session:
            rows = session.scalars(sa.select(EventCursorRow).order_by(EventCursorRow.subscriber))
            return [CursorPosition(r.subscriber, r.position, r.updated_at) for r in rows]

    def advance(self, subscriber: str, expected: int, new: int) -> bool:
        """Move ``subscriber`` from ``expected`` to ``new``; False when it is no longer there.

        Raises:
            InvalidArgumentError: when ``new`` is behind ``expected``.
        """
        validate_name(subscriber, "subscriber")
        if new < expected:
            raise InvalidArgumentError("position", f"cannot move back from {expected} to {new}")
        now = self._clock.now()
        try:
            with Session(self._engine.execution_options(**{WRITE_OPTION: True})) as session, \
                    session.begin():
                row = session.get(EventCursorRow, subscriber, with_for_update=True)
                if row is None:
                    if expected != 0:
                        return False
                    session.add(EventCursorRow(subscriber=subscriber, position=new,
                                               updated_at=now))
                    return True
                if row.position != expected:
                    return False
                row.position = new
                row.updated_at = now
                return True
        except sa.exc.IntegrityError:
            return False  # another consumer created the cursor first
