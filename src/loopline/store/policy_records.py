"""Applied policy sets in the metadata store: insert one, read the newest, list the history.

The newest row (by ``applied_at``, then ``id``) is the set the gates evaluate. Inserts run in
the caller's unit of work, so the row commits with its audit entry and event; the caller
takes the append lock (``uow.serialise``) before reading the newest set it compares with, so
two applies cannot both believe they are first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.errors import InvalidArgumentError
from loopline.core.ids import new_id
from loopline.store.errors import translated
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import POLICY_SETS

MAX_HISTORY = 1000
# Ids are time-ordered only to the millisecond, and a test clock may stand still: each new
# set is stamped at least this much after the one before, so "newest" is never a tie.
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PolicySetRecord:
    """One applied policy set as stored: its files (name -> YAML text) and who applied it."""

    id: str
    digest: str
    files: Mapping[str, str]
    applied_at: datetime
    applied_by: str


def _record(row: RowMapping) -> PolicySetRecord:
    return PolicySetRecord(id=row["id"], digest=row["digest"], files=dict(row["files"] or {}),
                           applied_at=row["applied_at"], applied_by=row["applied_by"])


def _newest_first() -> sa.Select[tuple[str]]:
    return sa.select(POLICY_SETS.c.id).order_by(POLICY_SETS.c.applied_at.desc(),
                                                POLICY_SETS.c.id.desc())


def newest(connection: Connection) -> PolicySetRecord | None:
    """Return the newest applied set read through ``connection`` (a transaction's), if any."""
    row = connection.execute(
        sa.select(POLICY_SETS).order_by(POLICY_SETS.c.applied_at.desc(),
                                        POLICY_SETS.c.id.desc()).limit(1)).mappings().first()
    return _record(row) if row is not None else None


def insert_policy_set(uow: UnitOfWork, digest: str, files: Mapping[str, str],
                      previous: PolicySetRecord | None) -> PolicySetRecord:
    """Insert a new applied set in ``uow``'s transaction and return it.

    ``previous`` is the newest set the caller read under the append lock; the new one is
    stamped after it even when the clock has not moved.
    """
    applied_at = uow.now()
    if previous is not None and applied_at <= previous.applied_at:
        applied_at = previous.applied_at + _TICK
    record = PolicySetRecord(id=new_id(), digest=digest, files=dict(files),
                             applied_at=applied_at, applied_by=uow.actor)
    uow.session.connection().execute(sa.insert(POLICY_SETS), {
        "id": record.id, "digest": digest, "files": dict(files), "applied_at": applied_at,
        "applied_by": record.applied_by})
    return record


class PolicyRecords:
    """Reads of applied policy sets."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def newest_id(self) -> str | None:
        """Return the id of the newest applied set (None before the first): one small query."""
        with self._engine.connect() as connection:
            value = connection.execute(_newest_first().limit(1)).scalar()
        return None if value is None else str(value)

    @translated
    def newest(self) -> PolicySetRecord | None:
        """Return the newest applied set, or None before the first."""
        with self._engine.connect() as connection:
            return newest(connection)

    @translated
    def get(self, set_id: str) -> PolicySetRecord | None:
        """Return the applied set with this id, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(POLICY_SETS).where(
                POLICY_SETS.c.id == set_id)).mappings().first()
        return _record(row) if row is not None else None

    @translated
    def history(self, limit: int = 20) -> list[PolicySetRecord]:
        """List applied sets, newest first.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or \
                not 1 <= limit <= MAX_HISTORY:
            raise InvalidArgumentError("limit", f"must be a whole number from 1 to {MAX_HISTORY}")
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(POLICY_SETS).order_by(POLICY_SETS.c.applied_at.desc(),
                                                POLICY_SETS.c.id.desc())
                .limit(limit)).mappings().all()
        return [_record(row) for row in rows]
