"""The metadata store: one engine, write transactions that carry events and audit entries.

``MetadataStore.write(actor)`` opens one transaction (a ``UnitOfWork``); whatever state
changes, events and audit entries it records commit together or not at all, which is the
transactional outbox the rest of loopline relies on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from loopline.core.audit import AuditEntry, AuditRecord
from loopline.core.clock import Clock, SystemClock
from loopline.core.errors import InvalidArgumentError
from loopline.core.events import Event, NewEvent
from loopline.store import schema
from loopline.store.audit_log import AuditLog, ChainHead, append_entry, lock_head
from loopline.store.engine import WRITE_OPTION, create_engine, parse_url, redacted
from loopline.store.errors import database_errors, first_line, translated
from loopline.store.locks import serialise_appenders
from loopline.store.notify import (
    EventWaiter,
    PollingWaiter,
    PostgresListener,
    WaitingEventSource,
)
from loopline.store.outbox import EventLog, append_event, notify

MAX_ACTOR = 256


class UnitOfWork:
    """One write transaction: state changes, events and audit entries commit together."""

    def __init__(self, session: Session, actor: str, clock: Clock) -> None:
        self.session = session
        self.actor = actor
        self._clock = clock
        self._serialised = False
        self._notified = False
        self._head: ChainHead | None = None

    def now(self) -> datetime:
        """Return the store clock's current time (injectable in tests)."""
        return self._clock.now()

    def serialise(self) -> None:
        """Take the append lock now (on PostgreSQL), before reading what the write depends on."""
        if not self._serialised:
            serialise_appenders(self.session)
            self._serialised = True

    def emit(self, type: str, subject: str, payload: Mapping[str, Any] | None = None) -> Event:
        """Append an event that becomes visible when this transaction commits."""
        self.serialise()
        event = append_event(self.session, NewEvent(type, subject, payload or {}), self.actor,
                             self._clock)
        if not self._notified:
            notify(self.session)
            self._notified = True
        return event

    def audit(self, action: str, subject: str, before: Mapping[str, Any] | None = None,
              after: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append an audit entry by this unit's actor to the chain."""
        self.serialise()
        if self._head is None:  # read once: the row stays locked until this unit commits
            self._head = lock_head(self.session)
        return append_entry(self.session, self._head,
                            AuditRecord(self.actor, action, subject, before, after), self._clock)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What ``status`` shows about the metadata database."""

    url: str
    backend: str
    reachable: bool
    schema: schema.SchemaStatus | None
    error: str | None = None


class MetadataStore:
    """The metadata database of a workspace (SQLite by default, PostgreSQL for teams)."""

    def __init__(self, engine: Engine, url: str, clock: Clock | None = None) -> None:
        self.engine = engine
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self.events = EventLog(engine, self.clock)
        self.audit = AuditLog(engine)

    @classmethod
    def open(cls, url: str, *, clock: Clock | None = None, check_schema: bool = True,
             ) -> MetadataStore:
        """Connect to ``url``; refuse a database that is not at the code's schema revision.

        Raises:
            ConfigurationError: when the URL is unusable.
            SchemaVersionError: when the schema is missing, older or newer than the code.
            BackendError: when the database cannot be reached.
        """
        store = cls(create_engine(url), url, clock)
        if check_schema:
            try:
                store.ensure_schema()
            except BaseException:
                store.close()
                raise
        return store

    @property
    def backend(self) -> str:
        """The database backend's name: ``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return redacted(self.url)

    @translated
    def ensure_schema(self) -> schema.SchemaStatus:
        """Refuse unless the database is at the code's head revision."""
        return schema.ensure_current(self.engine)

    @translated
    def schema_status(self) -> schema.SchemaStatus:
        """Compare the database's revision with the code's."""
        return schema.status(self.engine)

    @translated
    def upgrade(self) -> schema.SchemaStatus:
        """Migrate the database to the code's head revision (a no-op when already there)."""
        return schema.upgrade(self.engine)

    @contextmanager
    def write(self, actor: str) -> Iterator[UnitOfWork]:
        """Open one write transaction; commit on success, roll back on any exception.

        Raises:
            BackendError, ConflictError, ConfigurationError: for database failures (the
                caller's own exceptions pass through unchanged).
        """
        if not isinstance(actor, str) or not 0 < len(actor) <= MAX_ACTOR:
            raise InvalidArgumentError("actor", f"must be 1-{MAX_ACTOR} characters")
        with database_errors(), Session(self.engine.execution_options(**{WRITE_OPTION: True}),
                                        expire_on_commit=False) as session, session.begin():
            yield UnitOfWork(session, actor, self.clock)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a read-only session; database errors inside leave it as ``BackendError``.

        Raises:
            BackendError, ConfigurationError: as ``store.errors.database_errors``.
        """
        with database_errors(), Session(self.engine) as session:
            yield session

    def waiter(self, poll_interval: float = 0.2) -> EventWaiter:
        """Return a waiter for new events: LISTEN on PostgreSQL, polling on SQLite."""
        if self.backend == "postgresql":
            return PostgresListener(parse_url(self.url))
        return PollingWaiter(poll_interval)

    def event_source(self, poll_interval: float = 0.2) -> WaitingEventSource:
        """Return the event log with a waiter attached, for a dispatcher to consume."""
        return WaitingEventSource(self.events, self.waiter(poll_interval))

    def ping(self) -> str | None:
        """Run ``SELECT 1``; return None when the database answers, else the error's line.

        Cheap enough for a load balancer's health check (``health`` also reads the schema).
        """
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return first_line(exc)
        return None

    def health(self) -> StoreHealth:
        """Probe the database and its schema without raising."""
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return StoreHealth(self.display_url, self.backend, True, schema.status(self.engine))
        except sa.exc.SQLAlchemyError as exc:
            return StoreHealth(self.display_url, self.backend, False, None, first_line(exc))

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()
