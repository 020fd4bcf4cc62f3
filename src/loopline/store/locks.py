"""Write serialisation for the chained logs, so sequence order equals commit order.

On SQLite every write transaction already holds the database's single write lock from its
first statement (``BEGIN IMMEDIATE``). On PostgreSQL, a writer that appends events or audit
entries first takes one transaction-scoped advisory lock, so appenders commit one after
another and a reader that sees ``seq = n`` committed has seen every ``seq < n``. The audit
head row, locked after it, is therefore always taken in the same order: no deadlock.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

# An arbitrary fixed 64-bit key; loopline owns it in its database.
APPEND_LOCK_KEY = 0x6C6F6F706C696E65  # "loopline"


def serialise_appenders(session: Session) -> None:
    """Take the append lock for the rest of the session's transaction.

    On SQLite the write transaction's ``BEGIN IMMEDIATE`` is the lock; the session begins it
    lazily, at its first statement, so it is begun here: a caller that serialises and then
    decides something (a gate) must already hold the lock while it decides.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        session.connection()  # begins the transaction: BEGIN IMMEDIATE for a write
        return
    session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
