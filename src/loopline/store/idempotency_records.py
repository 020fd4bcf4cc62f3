"""Idempotency keys in SQL: claim a key for a request, record its answer, read it back.

``claim`` inserts the key with the request's hash in its own short transaction; the primary
key (scope, key) lets exactly one of two concurrent requests claim it. ``complete`` stores
the answer; ``forget`` removes a claim whose request failed without an answer worth
replaying (a 5xx), so a retry runs again; ``prune`` deletes keys older than their lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from loopline.core.errors import ConflictError
from loopline.store.metadata_store import MetadataStore
from loopline.store.models import IDEMPOTENCY_KEYS

ACTOR = "api"  # these rows are bookkeeping of the HTTP layer, never audited changes


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A key's first request: its hash, and its answer once there is one."""

    request_hash: str
    status: int | None
    content_type: str | None
    body: bytes | None
    created_at: datetime


def claim(store: MetadataStore, scope: str, key: str, request_hash: str) -> StoredRequest | None:
    """Claim ``key`` for this request; return None when claimed, else the stored request.

    Raises:
        BackendError: when the metadata store fails.
    """
    try:
        with store.write(ACTOR) as uow:
            uow.session.connection().execute(sa.insert(IDEMPOTENCY_KEYS), {
                "scope": scope, "key": key, "request_hash": request_hash, "status": None,
                "content_type": None, "body": None, "created_at": uow.now(),
                "completed_at": None})
        return None
    except ConflictError:
        pass
    found = read(store, scope, key)
    if found is None:  # claimed and forgotten in between: take it now
        return claim(store, scope, key, request_hash)
    return found


def read(store: MetadataStore, scope: str, key: str) -> StoredRequest | None:
    """Return what is stored under (``scope``, ``key``), or None."""
    with store.read() as session:
        row = session.connection().execute(sa.select(IDEMPOTENCY_KEYS).where(
            IDEMPOTENCY_KEYS.c.scope == scope, IDEMPOTENCY_KEYS.c.key == key)).first()
    return None if row is None else StoredRequest(row.request_hash, row.status,
                                                  row.content_type, row.body, row.created_at)


def complete(store: MetadataStore, scope: str, key: str, status: int, content_type: str | None,
             body: bytes) -> None:
    """Store the answer of the request that claimed ``key``."""
    with store.write(ACTOR) as uow:
        uow.session.connection().execute(
            sa.update(IDEMPOTENCY_KEYS).where(IDEMPOTENCY_KEYS.c.scope == scope,
                                              IDEMPOTENCY_KEYS.c.key == key)
            .values(status=status, content_type=content_type, body=body,
                    completed_at=uow.now()))


def forget(store: MetadataStore, scope: str, key: str) -> None:
    """Remove the claim on ``key`` (its request got no answer worth replaying)."""
    with store.write(ACTOR) as uow:
        uow.session.connection().execute(sa.delete(IDEMPOTENCY_KEYS).where(
            IDEMPOTENCY_KEYS.c.scope == scope, IDEMPOTENCY_KEYS.c.key == key))


def prune(store: MetadataStore, before: datetime) -> int:
    """Delete keys created before ``before``; return how many."""
    with store.write(ACTOR) as uow:
        return int(uow.session.connection().execute(sa.delete(IDEMPOTENCY_KEYS).where(
            IDEMPOTENCY_KEYS.c.created_at < before)).rowcount)
