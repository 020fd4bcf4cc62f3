"""Legal holds in SQL: record, read, release and list the holds retention must respect.

Writes run inside the caller's unit of work; reads take a ``Connection`` so retention can
read the active holds on the same connection as the rest of its decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loopline.core.governance import LegalHold
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import LEGAL_HOLDS


def _hold(row: Any) -> LegalHold:
    return LegalHold(id=row.id, data_class=row.data_class, ref=row.ref, reason=row.reason,
                     created_at=row.created_at, created_by=row.created_by,
                     released_at=row.released_at, released_by=row.released_by)


def insert_hold(uow: UnitOfWork, hold: LegalHold) -> None:
    """Record ``hold`` in the caller's write transaction."""
    uow.session.connection().execute(sa.insert(LEGAL_HOLDS), {
        "id": hold.id, "data_class": hold.data_class, "ref": hold.ref, "reason": hold.reason,
        "created_at": hold.created_at, "created_by": hold.created_by,
        "released_at": None, "released_by": None})


def get_hold(connection: Connection, hold_id: str, lock: bool = False) -> LegalHold | None:
    """Return the hold ``hold_id`` (locked for the transaction when ``lock``), or None."""
    query = sa.select(LEGAL_HOLDS).where(LEGAL_HOLDS.c.id == hold_id)
    row = connection.execute(query.with_for_update() if lock else query).first()
    return _hold(row) if row is not None else None


def release_hold(uow: UnitOfWork, hold_id: str, at: datetime) -> None:
    """Mark the hold ``hold_id`` released by the unit's actor at ``at``."""
    uow.session.connection().execute(
        sa.update(LEGAL_HOLDS).where(LEGAL_HOLDS.c.id == hold_id,
                                     LEGAL_HOLDS.c.released_at.is_(None))
        .values(released_at=at, released_by=uow.actor))


def list_holds(connection: Connection, active_only: bool = True) -> list[LegalHold]:
    """List holds, oldest first (only those not released when ``active_only``)."""
    query = sa.select(LEGAL_HOLDS)
    if active_only:
        query = query.where(LEGAL_HOLDS.c.released_at.is_(None))
    return [_hold(row) for row in connection.execute(
        query.order_by(LEGAL_HOLDS.c.created_at, LEGAL_HOLDS.c.id))]
