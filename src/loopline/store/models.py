"""The metadata store's tables as SQLAlchemy 2 typed models (and their Core tables).

Tables are created only by the Alembic revisions in ``migrations/``; a test checks that
upgrading an empty database yields exactly these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loopline.store.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class EventRow(Base):
    """The transactional outbox: one row per event, ``seq`` increasing in commit order."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_type_seq", "type", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    type: Mapped[str] = mapped_column(sa.String(128))
    subject: Mapped[str] = mapped_column(sa.String(512))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    actor: Mapped[str] = mapped_column(sa.String(256))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventCursorRow(Base):
    """A durable subscriber's position in the event log."""

    __tablename__ = "event_cursors"

    subscriber: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    position: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntryRow(Base):
    """One audit entry; ``hash`` chains over the canonical JSON of the fields and ``prev_hash``.

    ``before`` and ``after`` are kept as canonical JSON text so they read back byte-for-byte
    and the hash recomputes exactly on every backend.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        sa.Index("ix_audit_entries_subject", "subject"),
        sa.Index("ix_audit_entries_actor", "actor"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(256))
    action: Mapped[str] = mapped_column(sa.String(128))
    subject: Mapped[str] = mapped_column(sa.String(512))
    before: Mapped[str | None] = mapped_column(sa.Text)
    after: Mapped[str | None] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditHeadRow(Base):
    """The single row naming the chain's last entry; also the lock appenders serialise on."""

    __tablename__ = "audit_head"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))


EVENTS = cast(sa.Table, EventRow.__table__)
AUDIT_ENTRIES = cast(sa.Table, AuditEntryRow.__table__)
AUDIT_HEAD = cast(sa.Table, AuditHeadRow.__table__)
