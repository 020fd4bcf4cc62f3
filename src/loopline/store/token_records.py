"""API tokens in SQL: record, find by secret hash, list, revoke and mark as used.

Writes run inside the caller's unit of work; lookups take a ``Connection`` so the API's
authentication reads one row by the unique hash index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loopline.core.governance import parse_role
from loopline.core.tokens import ApiToken
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import API_TOKENS


def _token(row: Any) -> ApiToken:
    return ApiToken(id=row.id, user=row.user_name, role=parse_role(row.role),
                    created_at=row.created_at, created_by=row.created_by,
                    expires_at=row.expires_at, description=row.description,
                    revoked_at=row.revoked_at, revoked_by=row.revoked_by,
                    last_used_at=row.last_used_at)


def insert_token(uow: UnitOfWork, token: ApiToken, secret_hash: str) -> None:
    """Record ``token`` with the hash of its secret in the caller's write transaction."""
    uow.session.connection().execute(sa.insert(API_TOKENS), {
        "id": token.id, "secret_hash": secret_hash, "user_name": token.user,
        "role": str(token.role), "description": token.description,
        "created_at": token.created_at, "created_by": token.created_by,
        "expires_at": token.expires_at, "revoked_at": None, "revoked_by": None,
        "last_used_at": None})


def token_by_hash(connection: Connection, secret_hash: str) -> ApiToken | None:
    """Return the token whose secret hashes to ``secret_hash``, or None."""
    row = connection.execute(
        sa.select(API_TOKENS).where(API_TOKENS.c.secret_hash == secret_hash)).first()
    return _token(row) if row is not None else None


def get_token(connection: Connection, token_id: str, lock: bool = False) -> ApiToken | None:
    """Return the token ``token_id`` (locked for the transaction when ``lock``), or None."""
    query = sa.select(API_TOKENS).where(API_TOKENS.c.id == token_id)
    row = connection.execute(query.with_for_update() if lock else query).first()
    return _token(row) if row is not None else None


def revoke_token(uow: UnitOfWork, token_id: str, at: datetime) -> None:
    """Mark the token ``token_id`` revoked by the unit's actor at ``at``."""
    uow.session.connection().execute(
        sa.update(API_TOKENS).where(API_TOKENS.c.id == token_id,
                                    API_TOKENS.c.revoked_at.is_(None))
        .values(revoked_at=at, revoked_by=uow.actor))


def mark_used(connection: Connection, token_id: str, at: datetime) -> None:
    """Record that the token ``token_id`` was used at ``at`` (the caller commits)."""
    connection.execute(sa.update(API_TOKENS).where(API_TOKENS.c.id == token_id)
                       .values(last_used_at=at))


def list_tokens(connection: Connection, user: str | None = None,
                include_revoked: bool = False) -> list[ApiToken]:
    """List tokens, newest first (of ``user`` only, and without revoked ones, by default)."""
    query = sa.select(API_TOKENS)
    if user is not None:
        query = query.where(API_TOKENS.c.user_name == user)
    if not include_revoked:
        query = query.where(API_TOKENS.c.revoked_at.is_(None))
    return [_token(row) for row in connection.execute(
        query.order_by(API_TOKENS.c.created_at.desc(), API_TOKENS.c.id))]
