"""``/access``, ``/users`` and ``/roles``: identities and role bindings; the governance read check.

Reading is ``Reader`` and asks the view's authoriser for ``read`` on every model
(``require_read``, which the other governance routes use too: their services read without
asking). Recording identities, granting, revoking, disabling and enabling is ``Admin``: the
route dependency applies the token's role ceiling, since ``AccessControl.grant`` and friends
authorise by the user's own bindings only. The actor is always the view's (the token's
user), never a value from the request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from loopline.api.auth import Admin, Reader
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText
from loopline.app import Workspace
from loopline.core.governance import Identity, IdentityKind, Permission, Role, RoleBinding
from loopline.governance.access import ALL_MODELS

__all__ = ["MAX_NAME", "MAX_TEXT", "ModelFilter", "require_read", "router"]

router = APIRouter(tags=["users"])

MAX_TEXT = 2_000
MAX_NAME = 256

Subject = Annotated[FilterText, Path(max_length=MAX_NAME,
                                     description="A user or service account.")]
ModelFilter = Annotated[FilterText | None, Query(max_length=MAX_NAME,
                                                 description="A model name.")]


def require_read(ws: Workspace, model: str | None = None) -> None:
    """Let the caller's user read ``model`` (every model, without one), or refuse.

    Raises:
        AccessDeniedError: when the user's bindings (capped by the token) do not permit it.
    """
    ws.authorizer.authorize(ws.actor, Permission.READ, model)


class UserView(BaseModel):
    """An identity and the role bindings it holds."""

    name: str
    kind: IdentityKind
    created_at: datetime
    created_by: str
    description: str | None = None
    disabled: bool
    bindings: list[RoleBinding]


class NewIdentity(BaseModel):
    """A user or service account to record (it holds no role until granted one)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    kind: IdentityKind = IdentityKind.USER
    description: str | None = Field(default=None, max_length=MAX_TEXT)


class NewBinding(BaseModel):
    """A role to bind, on the models whose names match ``models`` (a glob; ``*``: all)."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    models: str = Field(default=ALL_MODELS, min_length=1, max_length=MAX_NAME)
    kind: IdentityKind = Field(default=IdentityKind.USER, description=(
        "The kind of identity created when the subject is not known yet."))


class AccessState(BaseModel):
    """Whether roles are enforced (some binding exists) or the workspace is open."""

    enforced: bool


class HeldRoles(BaseModel):
    """The roles a subject holds on a model (on every model, without one)."""

    subject: str
    model: str | None
    roles: list[Role]


@router.get("/access", response_model=AccessState)
def access_state(ws: Reader) -> AccessState:
    """Tell whether roles are enforced or the workspace is open (everyone admin)."""
    return AccessState(enforced=ws.access.enforced())


@router.get("/users", response_model=Page[UserView])
def list_users(ws: Reader, paging: Paging) -> Page[UserView]:
    """List identities by name with the role bindings each holds."""
    require_read(ws)
    by_subject: dict[str, list[RoleBinding]] = {}
    for binding in ws.access.bindings():
        by_subject.setdefault(binding.subject, []).append(binding)
    return paginate([UserView(
        name=i.name, kind=i.kind, created_at=i.created_at, created_by=i.created_by,
        description=i.description, disabled=i.disabled, bindings=by_subject.get(i.name, []))
        for i in ws.access.identities()], paging)


@router.get("/roles", response_model=Page[RoleBinding])
def list_bindings(ws: Reader, paging: Paging,
                  subject: Annotated[FilterText | None, Query(max_length=MAX_NAME)] = None,
                  ) -> Page[RoleBinding]:
    """List role bindings (of ``subject`` only, when given) by subject, role and models."""
    require_read(ws)
    return paginate(ws.access.bindings(subject), paging)


@router.get("/users/{subject}/roles", response_model=HeldRoles)
def roles_of(subject: Subject, ws: Reader, model: ModelFilter = None) -> HeldRoles:
    """Show the roles ``subject`` holds on ``model`` (open workspace: admin; disabled: none)."""
    require_read(ws)
    held = ws.access.roles_of(subject, model)
    return HeldRoles(subject=subject, model=model, roles=sorted(held))


@router.post("/users", status_code=201, response_model=Identity)
def add_identity(body: NewIdentity, ws: Admin) -> Identity:
    """Record a user or service account."""
    return ws.access.add_identity(ws.actor, body.name, body.kind, body.description)


@router.post("/users/{subject}/roles", status_code=201, response_model=RoleBinding)
def grant_role(subject: Subject, body: NewBinding, ws: Admin) -> RoleBinding:
    """Grant a role (the first grant must be admin on ``*``, and turns enforcement on)."""
    return ws.access.grant(ws.actor, subject, body.role, body.models, body.kind)


@router.delete("/users/{subject}/roles/{role}", status_code=204, response_class=Response)
def revoke_role(subject: Subject, role: Role, ws: Admin,
                models: Annotated[FilterText, Query(max_length=MAX_NAME)] = ALL_MODELS,
                ) -> Response:
    """Revoke a role binding (revoking the very last one opens the workspace)."""
    ws.access.revoke(ws.actor, subject, role, models)
    return Response(status_code=204)


@router.post("/users/{subject}/disable", response_model=Identity)
def disable_identity(subject: Subject, ws: Admin) -> Identity:
    """Disable an identity: it keeps its bindings but may do nothing."""
    return ws.access.disable(ws.actor, subject)


@router.post("/users/{subject}/enable", response_model=Identity)
def enable_identity(subject: Subject, ws: Admin) -> Identity:
    """Enable a disabled identity again."""
    return ws.access.enable(ws.actor, subject)
