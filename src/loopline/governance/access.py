"""Who may do what: the one authorisation function, and the management of roles.

``AccessControl.authorize`` implements the ``Authorizer`` port and is where role bindings are
consulted (``core.governance.ROLE_PERMISSIONS`` is the one table of what each role may do; the
API's token ceiling reads it too). A workspace with no role binding at all is open:
everyone acts as admin, so a laptop user is never locked out of their own workspace. The first
grant turns enforcement on and must make someone admin on every model, or nobody could manage
roles afterwards; for the same reason the last admin cannot be revoked or disabled while other
bindings remain.

Every change checks its actor and reads the bindings it depends on inside its own write
transaction (see ``store.access_records``), so two concurrent first grants cannot both see an
open workspace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from loopline.core.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.governance import (
    ROLE_PERMISSIONS,
    Identity,
    IdentityKind,
    Permission,
    Role,
    RoleBinding,
    parse_identity_kind,
    parse_permission,
    parse_role,
    permits,
)
from loopline.core.names import validate_text
from loopline.store import MetadataStore, UnitOfWork
from loopline.store import access_records as records

__all__ = ["ALL_MODELS", "ROLE_ORDER", "AccessControl", "validate_models",
           "validate_subject"]

ALL_MODELS = "*"
# Which role ``authorize`` reports when several permit the action: the strongest first.
ROLE_ORDER = (Role.ADMIN, Role.DEVELOPER, Role.APPROVER, Role.VIEWER)
SUBJECT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,255}$")
MODELS_PATTERN = re.compile(r"^[A-Za-z0-9._*?\[\]-]{1,256}$")
MAX_DESCRIPTION = 2_000
LIST_HINT = "list them with `loopline users list`"


def validate_subject(value: str, field: str = "subject") -> str:
    """Return ``value`` when it is a valid user or service-account name.

    Raises:
        InvalidArgumentError: naming ``field`` when it does not match ``SUBJECT_PATTERN``.
    """
    if not isinstance(value, str) or not SUBJECT_PATTERN.fullmatch(value):
        raise InvalidArgumentError(
            field, f"{value!r} must be 1-256 characters of letters, digits, '.', '_', '@', "
                   "'+' or '-', starting with a letter or digit")
    return value


def validate_models(value: str) -> str:
    """Return ``value`` when it is a valid model-name pattern (a glob such as ``fraud-*``).

    Raises:
        InvalidArgumentError: naming ``models`` when it is empty, too long or has other
            characters than those of model names and ``*``, ``?``, ``[``, ``]``.
    """
    if not isinstance(value, str) or not MODELS_PATTERN.fullmatch(value):
        raise InvalidArgumentError(
            "models", f"{value!r} must be a glob of 1-256 characters: letters, digits, '.', "
                      "'_', '-' and the wildcards '*', '?', '[', ']' (e.g. 'fraud-*')")
    return value


def _validate_description(value: str | None) -> str | None:
    # Optional: None means "no description"; given, it follows every free-text field's rule.
    return None if value is None else validate_text(value, "description", MAX_DESCRIPTION)


def _decide(access: records.SubjectAccess, permission: Permission,
            model: str | None) -> Role | None:
    """Return the strongest role of ``access`` that permits the action (admin when open)."""
    if not access.enforced:
        return Role.ADMIN
    if access.identity is not None and access.identity.disabled:
        return None
    for role in ROLE_ORDER:
        if permits((b for b in access.bindings if b.role is role), permission, model):
            return role
    return None


def _decide_anywhere(access: records.SubjectAccess, permission: Permission) -> bool:
    if not access.enforced:
        return True
    if access.identity is not None and access.identity.disabled:
        return False
    return any(permission in ROLE_PERMISSIONS[b.role] for b in access.bindings)


def _held(binding: RoleBinding) -> str:
    return str(binding.role) if binding.models == ALL_MODELS else \
        f"{binding.role} on {binding.models}"


def _denied(actor: str, permission: Permission, model: str | None,
            access: records.SubjectAccess) -> AccessDeniedError:
    held = tuple(_held(b) for b in access.bindings)
    if access.identity is not None and access.identity.disabled:
        held = (f"{', '.join(held) or 'no role'} (identity disabled)",)
    return AccessDeniedError(actor, str(permission),
                             f"model {model!r}" if model is not None else None, held)


def _is_root_admin(binding: RoleBinding) -> bool:
    return binding.role is Role.ADMIN and binding.models == ALL_MODELS


def _enabled_admins(uow: UnitOfWork, bindings: Iterable[RoleBinding]) -> set[str]:
    """Return the subjects among ``bindings`` that are admin on every model and not disabled."""
    found: set[str] = set()
    for binding in bindings:
        if _is_root_admin(binding) and binding.subject not in found:
            identity = records.identity_in(uow, binding.subject)
            if identity is None or not identity.disabled:
                found.add(binding.subject)
    return found


class AccessControl:
    """Roles of users and service accounts, and the one authorisation function."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self._queries = records.AccessQueries(store.engine)

    def enforced(self) -> bool:
        """Tell whether roles are enforced (some role binding exists) or the workspace is open."""
        return self._queries.count_bindings() > 0

    def authorize(self, actor: str, permission: Permission, model: str | None = None) -> Role:
        """Return the strongest role that lets ``actor`` do what ``permission`` covers.

        With ``model``, only bindings whose pattern matches it count; without, only bindings
        on every model (``*``). An open workspace returns ``admin``; a disabled identity holds
        nothing.

        Raises:
            InvalidArgumentError: naming ``permission`` when it is not a permission.
            AccessDeniedError: naming the actor, the permission, the model and the roles held.
        """
        permission = parse_permission(str(permission))
        access = self._queries.subject(actor)
        role = _decide(access, permission, model)
        if role is None:
            raise _denied(actor, permission, model, access)
        return role

    def authorize_in(self, uow: UnitOfWork, actor: str, permission: Permission,
                     model: str | None = None) -> Role:
        """Authorise like ``authorize``, reading inside ``uow`` so the answer holds until commit.

        Raises:
            InvalidArgumentError: naming ``permission`` when it is not a permission.
            AccessDeniedError: naming the actor, the permission, the model and the roles held.
        """
        permission = parse_permission(str(permission))
        access = records.subject_in(uow, actor)
        role = _decide(access, permission, model)
        if role is None:
            raise _denied(actor, permission, model, access)
        return role

    def permits_anywhere(self, actor: str, permission: Permission) -> bool:
        """Tell whether ``actor`` holds ``permission`` on at least one binding.

        True in an open workspace; False for a disabled identity. The API asks this of every
        request before any service checks the models the action touches.
        """
        access = self._queries.subject(actor)
        return _decide_anywhere(access, parse_permission(str(permission)))

    def held(self, actor: str) -> tuple[str, ...]:
        """Return the roles ``actor`` holds, as an error message names them."""
        access = self._queries.subject(actor)
        held = tuple(_held(b) for b in access.bindings)
        if access.identity is not None and access.identity.disabled:
            return (f"{', '.join(held) or 'no role'} (identity disabled)",)
        return held

    def roles_of(self, actor: str, model: str | None = None) -> frozenset[Role]:
        """Return the roles ``actor`` holds on ``model`` (on every model, without one).

        An open workspace gives ``{admin}``; a disabled identity holds none.
        """
        access = self._queries.subject(actor)
        if not access.enforced:
            return frozenset({Role.ADMIN})
        if access.identity is not None and access.identity.disabled:
            return frozenset()
        return frozenset(b.role for b in access.bindings if b.covers(model))

    def bindings(self, subject: str | None = None) -> list[RoleBinding]:
        """List role bindings (of ``subject`` only, when given) by subject, role and models."""
        return self._queries.bindings(subject)

    def identities(self) -> list[Identity]:
        """List every known identity by name."""
        return self._queries.identities()

    def grant(self, actor: str, subject: str, role: Role | str, models: str = ALL_MODELS,
              kind: IdentityKind | str = IdentityKind.USER) -> RoleBinding:
        """Bind ``role`` on the models matching ``models`` to ``subject``; return the binding.

        A missing identity is created as ``kind``. Granting a binding that exists returns it
        and records nothing.

        Raises:
            InvalidArgumentError: naming ``subject``, ``role``, ``models`` or ``kind`` when bad,
                or ``role`` when the first grant of a workspace is not admin on ``*``.
            AccessDeniedError: when ``actor`` may not administer roles.
            ConflictError: when the first grant would go to a disabled identity.
        """
        subject, models = validate_subject(subject), validate_models(models)
        role, kind = parse_role(str(role)), parse_identity_kind(str(kind))
        with self._store.write(actor) as uow:
            self.authorize_in(uow, actor, Permission.ADMIN)
            current = records.bindings_in(uow)
            for binding in current:
                if (binding.subject, binding.role, binding.models) == (subject, role, models):
                    return binding
            identity = records.identity_in(uow, subject)
            if not current:
                self._check_first(subject, role, models, identity)
            if identity is None:
                records.add_identity(uow, subject, kind)
            return records.insert_binding(uow, subject, role, models)

    @staticmethod
    def _check_first(subject: str, role: Role, models: str, identity: Identity | None) -> None:
        if role is not Role.ADMIN or models != ALL_MODELS:
            raise InvalidArgumentError(
                "role", f"the first role granted turns enforcement on and must be admin on "
                        f"models '*', or nobody could manage roles; grant it first "
                        f"(`loopline users grant NAME admin`), not {role} on {models!r}")
        if identity is not None and identity.disabled:
            raise ConflictError(f"identity {subject!r} is disabled; the first admin must be "
                                "able to act")

    def revoke(self, actor: str, subject: str, role: Role | str,
               models: str = ALL_MODELS) -> None:
        """Remove the binding of ``role`` on ``models`` from ``subject``.

        Revoking the very last binding opens the workspace again.

        Raises:
            InvalidArgumentError: naming ``subject``, ``role`` or ``models`` when bad.
            AccessDeniedError: when ``actor`` may not administer roles.
            NotFoundError: when there is no such binding.
            ConflictError: when it would remove the last enabled admin on ``*`` while other
                bindings remain.
        """
        subject, models = validate_subject(subject), validate_models(models)
        role = parse_role(str(role))
        with self._store.write(actor) as uow:
            self.authorize_in(uow, actor, Permission.ADMIN)
            current = records.bindings_in(uow)
            found = [b for b in current if (b.subject, b.role, b.models) == (subject, role,
                                                                               models)]
            if not found:
                held = [_held(b) for b in current if b.subject == subject]
                raise NotFoundError("role binding", f"{subject} {role} on {models}",
                                    f"{subject} holds {', '.join(held) or 'no role'}")
            remaining = [b for b in current if b is not found[0]]
            if _is_root_admin(found[0]) and remaining and not _enabled_admins(uow, remaining):
                raise ConflictError(
                    f"cannot revoke admin on '*' from {subject!r}: no other enabled admin "
                    "would remain and a workspace must keep one; grant admin to another "
                    "identity first, or revoke every other binding to open the workspace")
            records.delete_binding(uow, found[0])

    def add_identity(self, actor: str, name: str, kind: IdentityKind | str = IdentityKind.USER,
                     description: str | None = None) -> Identity:
        """Record the user or service account ``name`` (it holds no role until granted one).

        Raises:
            InvalidArgumentError: naming ``subject``, ``kind`` or ``description`` when bad.
            AccessDeniedError: when ``actor`` may not administer roles.
            AlreadyExistsError: when ``name`` is already known.
        """
        name, kind = validate_subject(name), parse_identity_kind(str(kind))
        description = _validate_description(description)
        with self._store.write(actor) as uow:
            self.authorize_in(uow, actor, Permission.ADMIN)
            if records.identity_in(uow, name) is not None:
                raise AlreadyExistsError("identity", name)
            return records.add_identity(uow, name, kind, description)

    def disable(self, actor: str, name: str) -> Identity:
        """Disable ``name``: it keeps its bindings but holds nothing; return the identity.

        Disabling an identity that is already disabled changes nothing.

        Raises:
            InvalidArgumentError: naming ``subject`` when the name is invalid.
            AccessDeniedError: when ``actor`` may not administer roles.
            NotFoundError: when ``name`` is not a known identity.
            ConflictError: when no enabled admin on ``*`` would remain (disabling yourself as
                the last admin).
        """
        with self._store.write(actor) as uow:
            identity = self._identity_to_change(uow, actor, name)
            current = records.bindings_in(uow)
            if current and not identity.disabled and \
                    not _enabled_admins(uow, current) - {identity.name}:
                raise ConflictError(
                    f"cannot disable {identity.name!r}: it is the last enabled admin on '*' and a "
                    "workspace must keep one; grant admin to another identity first")
            return records.set_disabled(uow, identity, True)

    def enable(self, actor: str, name: str) -> Identity:
        """Enable ``name`` again: its bindings count once more; return the identity.

        Enabling an identity that is not disabled changes nothing.

        Raises:
            InvalidArgumentError: naming ``subject`` when the name is invalid.
            AccessDeniedError: when ``actor`` may not administer roles.
            NotFoundError: when ``name`` is not a known identity.
        """
        with self._store.write(actor) as uow:
            return records.set_disabled(uow, self._identity_to_change(uow, actor, name), False)

    def _identity_to_change(self, uow: UnitOfWork, actor: str, name: str) -> Identity:
        """Return identity ``name`` once ``actor`` may administer it, inside ``uow``."""
        name = validate_subject(name)
        self.authorize_in(uow, actor, Permission.ADMIN)
        identity = records.identity_in(uow, name)
        if identity is None:
            raise NotFoundError("identity", name, LIST_HINT)
        return identity
