"""What commands that run locally or through ``--server`` need beyond the shared surface.

A session is the local ``Workspace`` or a server's ``Client`` (``context.open_session``).
Their services mirror each other, except where a local change names its actor: the client
acts as the token's user and takes no ``actor``. This module holds those few adaptations,
so commands call one surface: ``actor_of`` (who acts) and ``access_changes`` (grants,
revocations and identities without an ``actor`` argument, as the client's).
"""

from __future__ import annotations

from typing import Protocol

from loopline.app import Workspace
from loopline.client import Client
from loopline.core.governance import Identity, IdentityKind, Role, RoleBinding
from loopline.governance.access import ALL_MODELS, AccessControl

Session = Workspace | Client

__all__ = ["AccessChanges", "Session", "access_changes", "actor_of"]


def actor_of(session: Session) -> str:
    """Return who acts: the workspace's actor, or the user the server's token acts as.

    Raises:
        AuthenticationError: when the server refuses the token.
        BackendError: when the server cannot be reached.
    """
    if isinstance(session, Client):
        return session.whoami()["user"]
    return session.actor


class AccessChanges(Protocol):
    """Changes to identities and roles, made as the session's actor (``RemoteAccess``'s)."""

    def grant(self, subject: str, role: Role | str, models: str = ALL_MODELS,
              kind: IdentityKind | str = IdentityKind.USER) -> RoleBinding:
        """Bind ``role`` on ``models`` to ``subject``; return the binding."""

    def revoke(self, subject: str, role: Role | str, models: str = ALL_MODELS) -> None:
        """Remove the binding of ``role`` on ``models`` from ``subject``."""

    def add_identity(self, name: str, kind: IdentityKind | str = IdentityKind.USER,
                     description: str | None = None) -> Identity:
        """Record the user or service account ``name``."""

    def disable(self, name: str) -> Identity:
        """Disable ``name``."""

    def enable(self, name: str) -> Identity:
        """Enable ``name`` again."""


class _LocalAccessChanges:
    """``AccessControl``'s changes with the workspace's actor filled in."""

    def __init__(self, access: AccessControl, actor: str) -> None:
        self._access, self._actor = access, actor

    def grant(self, subject: str, role: Role | str, models: str = ALL_MODELS,
              kind: IdentityKind | str = IdentityKind.USER) -> RoleBinding:
        return self._access.grant(self._actor, subject, role, models, kind)

    def revoke(self, subject: str, role: Role | str, models: str = ALL_MODELS) -> None:
        self._access.revoke(self._actor, subject, role, models)

    def add_identity(self, name: str, kind: IdentityKind | str = IdentityKind.USER,
                     description: str | None = None) -> Identity:
        return self._access.add_identity(self._actor, name, kind, description)

    def disable(self, name: str) -> Identity:
        return self._access.disable(self._actor, name)

    def enable(self, name: str) -> Identity:
        return self._access.enable(self._actor, name)


def access_changes(session: Session) -> AccessChanges:
    """Return the session's identity and role changes, made as its actor."""
    if isinstance(session, Client):
        return session.access
    return _LocalAccessChanges(session.access, session.actor)
