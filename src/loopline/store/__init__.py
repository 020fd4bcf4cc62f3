"""Layer L1: the metadata store, the only package that imports SQLAlchemy and Alembic.

SQLite (WAL, ``synchronous=FULL``) by default, PostgreSQL for teams; tables come only from
the Alembic revisions shipped in ``migrations/``.
"""

from loopline.store.audit_log import AuditFilter, AuditLog
from loopline.store.metadata_store import MetadataStore, StoreHealth, UnitOfWork
from loopline.store.notify import EventWaiter, WaitingEventSource
from loopline.store.outbox import EventLog
from loopline.store.schema import RevisionInfo, SchemaState, SchemaStatus

__all__ = [
    "AuditFilter",
    "AuditLog",
    "EventLog",
    "EventWaiter",
    "MetadataStore",
    "RevisionInfo",
    "SchemaState",
    "SchemaStatus",
    "StoreHealth",
    "UnitOfWork",
    "WaitingEventSource",
]
