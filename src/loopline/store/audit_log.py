"""The audit log: append chained entries inside write transactions, list them, verify the chain.

Appenders lock the head row (and, on PostgreSQL, the append locks in ``locks``) so two
processes appending at once still produce one unbroken chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from loopline.core.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    ChainBreak,
    ChainReport,
    entry_hash,
    verify_chain,
)
from loopline.core.canonical import canonical_json
from loopline.core.clock import Clock
from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.core.ids import new_id
from loopline.store.errors import translated
from loopline.store.models import AUDIT_ENTRIES, AUDIT_HEAD, AuditEntryRow, AuditHeadRow

VERIFY_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list: every field is optional and they combine with AND."""

    actor: str | None = None
    action: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    newest_first: bool = True


def _summary(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        return canonical_json(dict(value))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(field, f"must be a JSON-serialisable mapping: {exc}") from exc


def _check_record(record: AuditRecord) -> None:
    for field, value, limit in (("actor", record.actor, 256), ("action", record.action, 128),
                                ("subject", record.subject, 512)):
        if not value or len(value) > limit:
            raise InvalidArgumentError(f"audit.{field}", f"must be 1-{limit} characters")


@dataclass(slots=True)
class ChainHead:
    """The chain's last seq and hash, held by a writer that has locked the head row."""

    seq: int
    hash: str


def lock_head(session: Session) -> ChainHead:
    """Lock the head row for the rest of the transaction and return its value.

    Raises:
        BackendError: when the head row is missing (the schema was altered by hand).
    """
    row = session.execute(
        sa.select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == 1)
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise BackendError("the audit head row is missing; the database was altered by hand")
    return ChainHead(row.seq, row.hash)


def append_entry(session: Session, head: ChainHead, record: AuditRecord,
                 clock: Clock) -> AuditEntry:
    """Append ``record`` after ``head`` (locked by ``lock_head``) and move ``head`` on.

    Raises:
        InvalidArgumentError: when a field is empty, too long, or not JSON.
    """
    _check_record(record)
    before = _summary(record.before, "audit.before")
    after = _summary(record.after, "audit.after")
    entry = AuditEntry(
        seq=head.seq + 1, id=new_id(), at=clock.now(), actor=record.actor,
        action=record.action, subject=record.subject,
        before=json.loads(before) if before is not None else None,
        after=json.loads(after) if after is not None else None,
        prev_hash=head.hash, hash="",
    )
    digest = entry_hash(seq=entry.seq, id=entry.id, at=entry.at, actor=entry.actor,
                        action=entry.action, subject=entry.subject, before=entry.before,
                        after=entry.after, prev_hash=entry.prev_hash)
    connection = session.connection()  # Core: the ORM insert path costs several times more
    connection.execute(sa.insert(AUDIT_ENTRIES), {
        "seq": entry.seq, "id": entry.id, "at": entry.at, "actor": entry.actor,
        "action": entry.action, "subject": entry.subject, "before": before, "after": after,
        "prev_hash": entry.prev_hash, "hash": digest,
    })
    connection.execute(sa.update(AUDIT_HEAD).where(AUDIT_HEAD.c.id == 1)
                       .values(seq=entry.seq, hash=digest))
    head.seq, head.hash = entry.seq, digest
    return replace(entry, hash=digest)


UNDECODABLE = "__undecodable__"


def _summary_value(text: str | None) -> dict[str, Any] | None:
    # A summary edited into something that is not a JSON object is kept as text under a key
    # no real summary has: listings still show it, and its hash no longer matches.
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {UNDECODABLE: text}
    return value if isinstance(value, dict) else {UNDECODABLE: text}


def _to_entry(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq, id=row.id, at=row.at, actor=row.actor, action=row.action,
        subject=row.subject, before=_summary_value(row.before),
        after=_summary_value(row.after), prev_hash=row.prev_hash, hash=row.hash,
    )


class AuditLog:
    """Reads and verification of the audit chain."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def entries(self, where: AuditFilter | None = None) -> list[AuditEntry]:
        """List entries matching ``where`` (newest first by default).

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..10000.
        """
        where = where or AuditFilter()
        if not 1 <= where.limit <= 10_000:
            raise InvalidArgumentError("limit", "must be between 1 and 10000")
        query = sa.select(AuditEntryRow)
        for column, value in ((AuditEntryRow.actor, where.actor),
                              (AuditEntryRow.action, where.action),
                              (AuditEntryRow.subject, where.subject)):
            if value is not None:
                query = query.where(column == value)
        if where.since is not None:
            query = query.where(AuditEntryRow.at >= where.since)
        if where.until is not None:
            query = query.where(AuditEntryRow.at < where.until)
        order = AuditEntryRow.seq.desc() if where.newest_first else AuditEntryRow.seq
        query = query.order_by(order).limit(where.limit)
        with Session(self._engine) as session:
            return [_to_entry(row) for row in session.scalars(query)]

    @translated
    def head(self) -> tuple[int, str]:
        """Return the recorded last sequence number and hash of the chain."""
        with Session(self._engine) as session:
            head = session.get(AuditHeadRow, 1)
            if head is None:
                raise BackendError("the audit head row is missing; the database was altered")
            return head.seq, head.hash

    @translated
    def verify(self) -> ChainReport:
        """Check the whole chain and the head in one snapshot; report the first break."""
        engine = self._engine
        if engine.dialect.name == "postgresql":
            # One snapshot for head and entries, so appends during the walk are not breaks.
            engine = engine.execution_options(isolation_level="REPEATABLE READ")
        with Session(engine) as session:
            head = session.get(AuditHeadRow, 1)
            if head is None:
                return ChainReport(0, 0, GENESIS_HASH, ChainBreak(
                    1, None, "the chain's head record is missing: the audit tables were altered"))
            return verify_chain(_iter_all(session), head.seq, head.hash)


def _iter_all(session: Session) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = list(session.scalars(
            sa.select(AuditEntryRow).where(AuditEntryRow.seq > last)
            .order_by(AuditEntryRow.seq).limit(VERIFY_BATCH)))
        if not rows:
            return
        yield from (_to_entry(row) for row in rows)
        last = rows[-1].seq
