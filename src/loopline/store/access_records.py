"""Identities and role bindings in the metadata store.

The SQL side of ``governance.access``. Writes run inside the caller's unit of work and audit
themselves (``governance.identity_added``, ``governance.identity_disabled``,
``governance.role_granted``, ``governance.role_revoked``) with a ``governance.roles_changed``
event, so a change and its record commit together or not at all.

Reads that a change depends on (is the workspace enforced, who is still an admin) are made
with the ``*_in(uow, ...)`` functions: they take the append lock first (``uow.serialise``;
SQLite's write transactions already hold the database's write lock), so two writers cannot
both read the same state and then both change it. Validation of names, roles and patterns is
the caller's job; this module stores what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.events import EventType
from loopline.core.governance import Identity, IdentityKind, Role, RoleBinding
from loopline.store.errors import translated
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import IDENTITIES, ROLE_BINDINGS

__all__ = ["AccessQueries", "SubjectAccess", "add_identity", "bindings_in", "delete_binding",
           "identity_in", "insert_binding", "set_disabled", "subject_in", "to_binding",
           "to_identity"]


@dataclass(frozen=True, slots=True)
class SubjectAccess:
    """What authorisation reads about one subject, from one consistent view.

    ``enforced`` is False while the workspace holds no role binding at all (it is open).
    """

    enforced: bool
    identity: Identity | None
    bindings: tuple[RoleBinding, ...]


def to_identity(row: RowMapping) -> Identity:
    """Return the entity of an ``identities`` row."""
    return Identity(name=row["name"], kind=IdentityKind(row["kind"]),
                    created_at=row["created_at"], created_by=row["created_by"],
                    description=row["description"], disabled=bool(row["disabled"]))


def to_binding(row: RowMapping) -> RoleBinding:
    """Return the entity of a ``role_bindings`` row."""
    return RoleBinding(subject=row["subject"], role=Role(row["role"]), models=row["models"],
                       created_at=row["created_at"], created_by=row["created_by"])


def _bindings(connection: Connection, subject: str | None) -> list[RoleBinding]:
    query = sa.select(ROLE_BINDINGS)
    if subject is not None:
        query = query.where(ROLE_BINDINGS.c.subject == subject)
    rows = connection.execute(query.order_by(ROLE_BINDINGS.c.subject, ROLE_BINDINGS.c.role,
                                             ROLE_BINDINGS.c.models)).mappings()
    return [to_binding(row) for row in rows]


def _identity(connection: Connection, name: str) -> Identity | None:
    row = connection.execute(sa.select(IDENTITIES).where(IDENTITIES.c.name == name)
                             ).mappings().first()
    return None if row is None else to_identity(row)


def _subject(connection: Connection, name: str) -> SubjectAccess:
    any_binding = connection.execute(sa.select(ROLE_BINDINGS.c.subject).limit(1)).first()
    return SubjectAccess(enforced=any_binding is not None, identity=_identity(connection, name),
                         bindings=tuple(_bindings(connection, name)))


class AccessQueries:
    """Reads of identities and role bindings outside any write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def subject(self, name: str) -> SubjectAccess:
        """Return whether roles are enforced, and ``name``'s identity and bindings."""
        with self._engine.connect() as connection:
            return _subject(connection, name)

    @translated
    def bindings(self, subject: str | None = None) -> list[RoleBinding]:
        """List role bindings (of ``subject`` only, when given) by subject, role, models."""
        with self._engine.connect() as connection:
            return _bindings(connection, subject)

    @translated
    def identities(self) -> list[Identity]:
        """List every known identity, by name."""
        with self._engine.connect() as connection:
            rows = connection.execute(sa.select(IDENTITIES).order_by(IDENTITIES.c.name))
            return [to_identity(row) for row in rows.mappings()]

    @translated
    def count_bindings(self) -> int:
        """Return how many role bindings there are (0: the workspace is open)."""
        with self._engine.connect() as connection:
            return int(connection.execute(
                sa.select(sa.func.count()).select_from(ROLE_BINDINGS)).scalar_one())


def _locked(uow: UnitOfWork) -> Connection:
    uow.serialise()
    return uow.session.connection()


def subject_in(uow: UnitOfWork, name: str) -> SubjectAccess:
    """Return ``name``'s access as this write transaction sees it, after taking the lock."""
    return _subject(_locked(uow), name)


def bindings_in(uow: UnitOfWork, subject: str | None = None) -> list[RoleBinding]:
    """List role bindings as this write transaction sees them, after taking the lock."""
    return _bindings(_locked(uow), subject)


def identity_in(uow: UnitOfWork, name: str) -> Identity | None:
    """Return the identity ``name`` as this write transaction sees it (None when unknown)."""
    return _identity(_locked(uow), name)


def _identity_state(identity: Identity) -> dict[str, Any]:
    return {"name": identity.name, "kind": str(identity.kind),
            "description": identity.description, "disabled": identity.disabled}


def _binding_state(binding: RoleBinding) -> dict[str, Any]:
    return {"subject": binding.subject, "role": str(binding.role), "models": binding.models}


def _subject_key(name: str) -> str:
    return f"identity:{name}"


def add_identity(uow: UnitOfWork, name: str, kind: IdentityKind,
                 description: str | None = None) -> Identity:
    """Insert the identity ``name`` (the caller checked that it is new); audit it."""
    identity = Identity(name=name, kind=kind, created_at=uow.now(), created_by=uow.actor,
                        description=description)
    _locked(uow).execute(sa.insert(IDENTITIES), {
        "name": name, "kind": str(kind), "description": description, "disabled": False,
        "created_at": identity.created_at, "created_by": identity.created_by})
    state = _identity_state(identity)
    uow.emit(EventType.ROLES_CHANGED, _subject_key(name), {"change": "identity_added", **state})
    uow.audit("governance.identity_added", _subject_key(name), None, state)
    return identity


def set_disabled(uow: UnitOfWork, identity: Identity, disabled: bool) -> Identity:
    """Set whether ``identity`` is disabled; audit the change (none when nothing changes)."""
    if identity.disabled == disabled:
        return identity
    _locked(uow).execute(sa.update(IDENTITIES).where(IDENTITIES.c.name == identity.name)
                         .values(disabled=disabled))
    changed = Identity(name=identity.name, kind=identity.kind, created_at=identity.created_at,
                       created_by=identity.created_by, description=identity.description,
                       disabled=disabled)
    action = "identity_disabled" if disabled else "identity_enabled"
    key = _subject_key(identity.name)
    uow.emit(EventType.ROLES_CHANGED, key, {"change": action, "name": identity.name,
                                            "disabled": disabled})
    uow.audit(f"governance.{action}", key, {"disabled": identity.disabled},
              {"disabled": disabled})
    return changed


def insert_binding(uow: UnitOfWork, subject: str, role: Role, models: str) -> RoleBinding:
    """Bind ``role`` on ``models`` to ``subject`` (whose identity exists); audit it."""
    binding = RoleBinding(subject=subject, role=role, models=models, created_at=uow.now(),
                          created_by=uow.actor)
    _locked(uow).execute(sa.insert(ROLE_BINDINGS), {
        "subject": subject, "role": str(role), "models": models,
        "created_at": binding.created_at, "created_by": binding.created_by})
    state = _binding_state(binding)
    uow.emit(EventType.ROLES_CHANGED, _subject_key(subject), {"change": "role_granted", **state})
    uow.audit("governance.role_granted", _subject_key(subject), None, state)
    return binding


def delete_binding(uow: UnitOfWork, binding: RoleBinding) -> None:
    """Remove ``binding`` (the caller read it in this transaction); audit it."""
    _locked(uow).execute(sa.delete(ROLE_BINDINGS).where(
        ROLE_BINDINGS.c.subject == binding.subject, ROLE_BINDINGS.c.role == str(binding.role),
        ROLE_BINDINGS.c.models == binding.models))
    state = _binding_state(binding)
    key = _subject_key(binding.subject)
    uow.emit(EventType.ROLES_CHANGED, key, {"change": "role_revoked", **state})
    uow.audit("governance.role_revoked", key, state, None)
