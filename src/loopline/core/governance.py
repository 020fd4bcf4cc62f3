"""Governance records: identities, roles and what they permit, approvals and legal holds.

Pure: no I/O. ``ROLE_PERMISSIONS`` is the one table of what each role may do: ``permits``
reads it for a subject's role bindings (``governance.access`` authorises through it), and
the token checks (``governance.tokens.TokenAuthorizer``, ``api.auth.requires``) read it for
a token's role, the ceiling of what a request made with it may do. A role is bound to a
subject (a user or a service account) for the whole workspace or for the models whose names
match a glob pattern (``fraud-*``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from loopline.core.errors import InvalidArgumentError

_E = TypeVar("_E", bound=StrEnum)


class Role(StrEnum):
    """The roles a subject can hold."""

    VIEWER = "viewer"
    DEVELOPER = "developer"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    """What an action needs.

    ``read`` looks; ``write`` changes data, runs and models (register, alias moves, status
    changes, deploys, approval requests); ``approve`` decides approval requests; ``trust``
    records that an artifact able to run code may be loaded; ``admin`` manages roles,
    policies, retention and legal holds.
    """

    READ = "read"
    WRITE = "write"
    APPROVE = "approve"
    TRUST = "trust"
    ADMIN = "admin"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.DEVELOPER: frozenset({Permission.READ, Permission.WRITE}),
    Role.APPROVER: frozenset({Permission.READ, Permission.APPROVE}),
    Role.ADMIN: frozenset(Permission),
}


class IdentityKind(StrEnum):
    """A person, or a service account a machine acts as (a scheduler, a CI job)."""

    USER = "user"
    SERVICE = "service"


def _member(kind: type[_E], value: str, field: str, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgumentError(
            field, f"{value!r} is not {what}; use one of {', '.join(kind)}") from None


def parse_role(value: str, field: str = "role") -> Role:
    """Return the role named ``value``.

    Raises:
        InvalidArgumentError: naming ``field`` and the roles there are otherwise.
    """
    return _member(Role, value, field, "a role")


def parse_permission(value: str, field: str = "permission") -> Permission:
    """Return the permission named ``value``.

    Raises:
        InvalidArgumentError: naming ``field`` and the permissions there are otherwise.
    """
    return _member(Permission, value, field, "a permission")


def parse_identity_kind(value: str, field: str = "kind") -> IdentityKind:
    """Return the identity kind named ``value``.

    Raises:
        InvalidArgumentError: naming ``field`` and the kinds there are otherwise.
    """
    return _member(IdentityKind, value, field, "an identity kind")


@dataclass(frozen=True, slots=True)
class Identity:
    """A subject loopline knows: a user or a service account."""

    name: str
    kind: IdentityKind
    created_at: datetime
    created_by: str
    description: str | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class RoleBinding:
    """``subject`` holds ``role`` for the models whose names match ``models`` (a glob)."""

    subject: str
    role: Role
    models: str
    created_at: datetime
    created_by: str

    def covers(self, model: str | None) -> bool:
        """Tell whether the binding applies to ``model`` (workspace-wide actions: ``*`` only)."""
        if model is None:
            return self.models == "*"
        return fnmatch.fnmatchcase(model, self.models)


def permits(bindings: Iterable[RoleBinding], permission: Permission,
            model: str | None = None) -> bool:
    """Tell whether any of ``bindings`` grants ``permission`` (on ``model``, when given)."""
    return any(permission in ROLE_PERMISSIONS[b.role] and b.covers(model) for b in bindings)


class ApprovalStatus(StrEnum):
    """Where an approval request stands; ``expired`` is derived from the clock when read."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class Verdict(StrEnum):
    """An approver's answer."""

    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class ApprovalVote:
    """One approver's verdict on a request, with the role that let them give it."""

    approver: str
    verdict: Verdict
    comment: str
    decided_at: datetime
    role: Role


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """Someone asks for a governed action on a model version to be approved.

    ``gate`` and ``target`` say which action (``alias`` to ``production``, ``deploy`` ...);
    ``required`` is how many approving votes the policy asked for when the request was made.
    """

    id: str
    model: str
    version: int
    gate: str
    target: str | None
    requester: str
    reason: str
    status: ApprovalStatus
    required: int
    created_at: datetime
    expires_at: datetime
    votes: tuple[ApprovalVote, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def status_at(self, now: datetime) -> ApprovalStatus:
        """Return the status at ``now``: an open request past its expiry is ``expired``."""
        open_states = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
        if self.status in open_states and now >= self.expires_at:
            return ApprovalStatus.EXPIRED
        return self.status

    def approvers(self, excluding: Iterable[str] = ()) -> tuple[str, ...]:
        """Return the distinct subjects who approved, minus the requester and ``excluding``."""
        left_out = {self.requester, *excluding}
        seen: dict[str, None] = {}
        for vote in self.votes:
            if vote.verdict is Verdict.APPROVE and vote.approver not in left_out:
                seen.setdefault(vote.approver)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class LegalHold:
    """Retention must not delete what this hold covers until it is released.

    ``data_class`` is a retention data class (``prediction_log``, ``dataset_snapshots`` ...)
    or ``*``; ``ref`` is a glob that narrows it, or ``*`` for the whole class. It matches an
    item's own ref (a segment id, ``dataset@version``, a run id, a digest) or a name the
    item belongs to (a dataset, a segment's deployment, a run's pipeline); when it matches
    model names, it also holds what the lineage of every version of those models reaches
    (training snapshots, segments, runs, artifacts), within ``data_class``.
    """

    id: str
    data_class: str
    ref: str
    reason: str
    created_at: datetime
    created_by: str
    released_at: datetime | None = None
    released_by: str | None = None

    def covers(self, data_class: str, ref: str) -> bool:
        """Tell whether the hold, while active, protects ``ref`` of ``data_class``."""
        return (self.released_at is None
                and self.data_class in ("*", data_class)
                and (self.ref == "*" or fnmatch.fnmatchcase(ref, self.ref)))
