"""Write serialisation for the chained logs, so sequence order equals commit order.

On SQLite every write transaction already holds the database's single write lock from its
first statement (``BEGIN IMMEDIATE``). On PostgreSQL, a writer that appends events or audit
entries takes two transaction-scoped advisory locks, always in the same order, so no two
appenders interleave and a reader that sees ``seq = n`` committed has seen every ``seq < n``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

# Arbitrary fixed 64-bit keys; loopline owns them in its database.
EVENTS_LOCK_KEY = 0x6C6F6F706C696E65  # "loopline"
AUDIT_LOCK_KEY = 0x6C6F6F7061756474  # "loopaudt"


def serialise_appenders(session: Session) -> None:
    """Take the append locks for the rest of the session's transaction (no-op on SQLite)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK_KEY})
    session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
