"""Named leases in SQL: several server processes share background work, one holder at a time.

A lease is taken when it is free, expired, or already held by the asker (a renewal); the
update's ``WHERE`` decides that atomically, and a first insert that loses a race to another
process's insert is refused by the primary key. Each attempt is its own short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from loopline.core.errors import ConflictError, InvalidArgumentError
from loopline.store.metadata_store import MetadataStore
from loopline.store.models import LEASES

MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds the lease ``name`` and until when."""

    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


def _check(name: str, holder: str) -> None:
    for field, value in (("name", name), ("holder", holder)):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
            raise InvalidArgumentError(f"lease {field}", f"must be 1-{MAX_NAME} characters")


def try_acquire(store: MetadataStore, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until now + ``ttl``; tell whether it did.

    Raises:
        InvalidArgumentError: when ``name`` or ``holder`` is blank or too long.
        BackendError: when the metadata store fails.
    """
    _check(name, holder)
    with store.write(holder) as uow:
        now = uow.now()
        taken = uow.session.connection().execute(
            sa.update(LEASES)
            .where(LEASES.c.name == name,
                   sa.or_(LEASES.c.holder == holder, LEASES.c.expires_at <= now))
            .values(acquired_at=sa.case((LEASES.c.holder == holder, LEASES.c.acquired_at),
                                        else_=now),
                    holder=holder, expires_at=now + ttl)).rowcount
        if taken:
            return True
        exists = uow.session.connection().execute(
            sa.select(LEASES.c.name).where(LEASES.c.name == name)).first()
    if exists is not None:
        return False
    try:
        with store.write(holder) as uow:
            now = uow.now()
            uow.session.connection().execute(sa.insert(LEASES), {
                "name": name, "holder": holder, "acquired_at": now, "expires_at": now + ttl})
    except ConflictError:  # another process inserted it first
        return False
    return True


def release(store: MetadataStore, name: str, holder: str) -> None:
    """Give the lease ``name`` up when ``holder`` holds it (on a graceful shutdown)."""
    _check(name, holder)
    with store.write(holder) as uow:
        uow.session.connection().execute(
            sa.delete(LEASES).where(LEASES.c.name == name, LEASES.c.holder == holder))


def current(store: MetadataStore, name: str) -> Lease | None:
    """Return the lease ``name`` as stored (expired or not), or None."""
    with store.read() as session:
        row = session.connection().execute(
            sa.select(LEASES).where(LEASES.c.name == name)).first()
    return None if row is None else Lease(row.name, row.holder, row.acquired_at,
                                          row.expires_at)
