"""API tokens: create (the secret shown once), list, revoke, and authenticate a request.

Managing tokens needs ``admin``; each change is audited (``governance.token_created`` /
``governance.token_revoked``, never with the secret or its hash) with a
``governance.tokens_changed`` event in the same transaction. ``authenticate`` turns a
presented secret into the token it stands for, or one ``AuthenticationError`` whatever was
wrong with it, so a caller learns nothing from a guess. ``TokenAuthorizer`` is the per-request
``Authorizer``: the token's role is a ceiling over the user's own role bindings.
"""

from __future__ import annotations

import builtins
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from loopline.core.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackendError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.events import EventType
from loopline.core.governance import (
    ROLE_PERMISSIONS,
    Permission,
    Role,
    parse_permission,
    parse_role,
)
from loopline.core.ids import new_id
from loopline.core.names import validate_text
from loopline.core.ports import Authorizer
from loopline.core.tokens import ApiToken, hash_token, looks_like_token, new_token_secret
from loopline.governance.access import validate_subject
from loopline.governance.durations import parse_duration
from loopline.store import MetadataStore
from loopline.store import token_records as records

__all__ = ["TOKEN_ID", "TokenAuthorizer", "Tokens", "describe"]

log = logging.getLogger(__name__)
TOKEN_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_DESCRIPTION = 2_000
# Writing ``last_used_at`` on every request would make every read a write; once a minute
# per token is enough to tell which tokens are still in use.
USE_RESOLUTION = timedelta(minutes=1)
LIST_HINT = "list tokens with `loopline tokens list`"
INVALID = "missing, unknown, expired or revoked API token; send 'Authorization: Bearer <token>'"


def describe(token: ApiToken) -> dict[str, Any]:
    """Return the token as the audit entry and ``--json`` show it (never the secret)."""
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None
    return {"id": token.id, "user": token.user, "role": str(token.role),
            "description": token.description, "created_at": token.created_at.isoformat(),
            "created_by": token.created_by, "expires_at": when(token.expires_at),
            "revoked_at": when(token.revoked_at), "revoked_by": token.revoked_by,
            "last_used_at": when(token.last_used_at)}


def _token_id(value: object) -> str:
    if not isinstance(value, str) or not TOKEN_ID.fullmatch(value):
        raise InvalidArgumentError("token_id", f"{value!r} is not a token id (32 hex "
                                               f"characters); {LIST_HINT}")
    return value


class Tokens:
    """The API tokens of one workspace."""

    def __init__(self, store: MetadataStore, authorizer: Authorizer, actor: str) -> None:
        self._store = store
        self._authorizer = authorizer
        self._actor = actor

    def create(self, user: str, role: Role | str, expires: str | timedelta | None = None,
               description: str | None = None) -> tuple[ApiToken, str]:
        """Create a token for ``user`` carrying ``role``; return it and its secret.

        The secret is returned here and never again: only its hash is stored.
        ``expires`` is a duration from now (``90d``, ``12h``) or None for no expiry.

        Raises:
            AccessDeniedError: when the actor does not hold ``admin``.
            InvalidArgumentError: naming ``user``, ``role``, ``expires`` or ``description``.
        """
        user = validate_subject(user, "user")
        role = parse_role(str(role))
        lifetime = None if expires is None else parse_duration(expires, "expires")
        text = None if description is None else \
            validate_text(description, "description", MAX_DESCRIPTION)
        self._authorizer.authorize(self._actor, Permission.ADMIN)
        secret = new_token_secret()
        with self._store.write(self._actor) as uow:
            now = uow.now()
            token = ApiToken(id=new_id(), user=user, role=role, created_at=now,
                             created_by=self._actor, description=text,
                             expires_at=None if lifetime is None else now + lifetime)
            records.insert_token(uow, token, hash_token(secret))
            uow.audit("governance.token_created", f"token:{token.id}", None, describe(token))
            uow.emit(EventType.TOKENS_CHANGED, f"token:{token.id}",
                     {"action": "created", "user": user, "role": str(role)})
        return token, secret

    def revoke(self, token_id: str) -> ApiToken:
        """Revoke the token ``token_id``: requests made with it fail from now on.

        Raises:
            AccessDeniedError: when the actor does not hold ``admin``.
            InvalidArgumentError: naming ``token_id`` when it is not a token id.
            NotFoundError: when no token has that id.
            ConflictError: when it was revoked already.
        """
        token_id = _token_id(token_id)
        self._authorizer.authorize(self._actor, Permission.ADMIN)
        with self._store.write(self._actor) as uow:
            connection = uow.session.connection()
            before = records.get_token(connection, token_id, lock=True)
            if before is None:
                raise NotFoundError("token", token_id, LIST_HINT)
            if before.revoked_at is not None:
                raise ConflictError(f"token {token_id!r} was already revoked on "
                                    f"{before.revoked_at:%Y-%m-%d} by {before.revoked_by}")
            records.revoke_token(uow, token_id, uow.now())
            after = records.get_token(connection, token_id)
            if after is None:  # pragma: no cover - the row is locked by this transaction
                raise NotFoundError("token", token_id, LIST_HINT)
            uow.audit("governance.token_revoked", f"token:{token_id}", describe(before),
                      describe(after))
            uow.emit(EventType.TOKENS_CHANGED, f"token:{token_id}",
                     {"action": "revoked", "user": after.user, "role": str(after.role)})
        return after

    def get(self, token_id: str) -> ApiToken:
        """Return the token ``token_id`` (never its secret).

        Raises:
            AccessDeniedError: when the actor does not hold ``admin``.
            InvalidArgumentError, NotFoundError: for a malformed or unknown id.
        """
        token_id = _token_id(token_id)
        self._authorizer.authorize(self._actor, Permission.ADMIN)
        with self._store.read() as session:
            found = records.get_token(session.connection(), token_id)
        if found is None:
            raise NotFoundError("token", token_id, LIST_HINT)
        return found

    def list(self, user: str | None = None,
             include_revoked: bool = False) -> builtins.list[ApiToken]:
        """List tokens, newest first (of ``user`` only; without revoked ones by default).

        Raises:
            AccessDeniedError: when the actor does not hold ``admin``.
            InvalidArgumentError: naming ``user`` when it is not a valid name.
        """
        if user is not None:
            validate_subject(user, "user")
        self._authorizer.authorize(self._actor, Permission.ADMIN)
        with self._store.read() as session:
            return records.list_tokens(session.connection(), user, include_revoked)

    def authenticate(self, secret: str | None) -> ApiToken:
        """Return the usable token ``secret`` stands for.

        Raises:
            AuthenticationError: when it is missing, malformed, unknown, expired or revoked
                (one message for all, so a guess learns nothing).
            BackendError: when the metadata store fails.
        """
        if not secret or not looks_like_token(secret):
            raise AuthenticationError(INVALID)
        with self._store.read() as session:
            token = records.token_by_hash(session.connection(), hash_token(secret))
        now = self._store.clock.now()
        if token is None or not token.usable_at(now):
            raise AuthenticationError(INVALID)
        if token.last_used_at is None or now - token.last_used_at >= USE_RESOLUTION:
            self._mark_used(token, now)
        return token


    def _mark_used(self, token: ApiToken, now: datetime) -> None:
        # Best effort: a busy database must not turn a valid request away.
        try:
            with self._store.write(token.user) as uow:
                records.mark_used(uow.session.connection(), token.id, now)
        except (BackendError, ConflictError) as exc:
            log.info("could not record the use of token %s: %s", token.id, exc.message)


class TokenAuthorizer:
    """The ``Authorizer`` of one request: the token's role caps the user's role bindings."""

    def __init__(self, inner: Authorizer, token: ApiToken) -> None:
        self._inner = inner
        self._token = token

    def authorize(self, actor: str, permission: Permission, model: str | None = None) -> Role:
        """Authorise as the workspace does, refusing first what the token's role does not permit.

        Raises:
            AccessDeniedError: naming the token's role when it is the ceiling that refused.
            InvalidArgumentError: naming ``permission`` when it is not a permission.
        """
        permission = parse_permission(str(permission))
        if permission not in ROLE_PERMISSIONS[self._token.role]:
            raise AccessDeniedError(actor, str(permission),
                                    f"model {model!r}" if model is not None else None,
                                    (f"a {self._token.role} token",))
        return self._inner.authorize(actor, permission, model)
