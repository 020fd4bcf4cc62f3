"""Governance over HTTP: approvals, policies, users and roles, legal holds, retention, report.

Permissions: reading is ``Reader``; asking for an approval and withdrawing one's own is
``Writer``; deciding one is ``Approver``; applying policies, managing identities and roles,
legal holds and applying retention is ``Admin``. The route dependency applies the token's
role ceiling (``AccessControl.grant`` and friends authorise by the user's own bindings
only, so the ``Admin`` dependency is what caps them). Where a service reads without asking
(approvals, policies, users, the report), the route asks the view's authoriser for ``read``:
on the request's model, or on every model for what spans the workspace. The actor is always
the view's (the token's user), never a value from the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.api.auth import Admin, Approver, Reader, Writer
from loopline.api.pagination import MAX_LIMIT, Page, Paging, paginate
from loopline.app import Workspace
from loopline.core.errors import AccessDeniedError, NotFoundError
from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    Identity,
    IdentityKind,
    LegalHold,
    Permission,
    Role,
    RoleBinding,
)
from loopline.governance.access import ALL_MODELS
from loopline.governance.durations import parse_duration
from loopline.governance.policy_files import EMPTY_POLICY_SET, PolicySet
from loopline.governance.policy_sets import AppliedPolicySet, rule_count
from loopline.governance.report import ReportItem
from loopline.governance.retention import RetentionReport
from loopline.store.policy_records import PolicySetRecord

__all__ = ["router"]

router = APIRouter()

MAX_TEXT = 2_000
MAX_NAME = 256
MAX_POLICY_FILES = 256
POLICY_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(?i:ya?ml)$")
NO_RETENTION = ("add a `kind: retention` document to the policy files and apply them "
                "(POST /policies, or `loopline policy apply`)")

RequestId = Annotated[str, Path(max_length=64, description="An approval request's id.")]
Subject = Annotated[str, Path(max_length=MAX_NAME,
                              description="A user or service account.")]
HoldId = Annotated[str, Path(max_length=64, description="A legal hold's id.")]
ModelName = Annotated[str | None, Query(max_length=MAX_NAME, description="A model name.")]


def _require_read(ws: Workspace, model: str | None = None) -> None:
    """Let the caller's user read ``model`` (every model, without one), or refuse.

    Raises:
        AccessDeniedError: when the user's bindings (capped by the token) do not permit it.
    """
    ws.authorizer.authorize(ws.actor, Permission.READ, model)


def _readable(ws: Workspace, found: Iterable[ApprovalRequest]) -> list[ApprovalRequest]:
    """Return the requests about models the caller's user may read (one check per model)."""
    allowed: dict[str, bool] = {}
    kept: list[ApprovalRequest] = []
    for request in found:
        if request.model not in allowed:
            try:
                _require_read(ws, request.model)
                allowed[request.model] = True
            except AccessDeniedError:
                allowed[request.model] = False
        if allowed[request.model]:
            kept.append(request)
    return kept


# -- approvals -------------------------------------------------------------------------------


class NewApproval(BaseModel):
    """What to ask approval for: a gate (to a target) on one model version, and why."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=MAX_NAME)
    version: int = Field(ge=1, le=2**31 - 1)
    gate: str = Field(min_length=1, max_length=64)
    target: str | None = Field(default=None, max_length=MAX_NAME)
    reason: str = Field(min_length=1, max_length=MAX_TEXT)
    expires_in: str | None = Field(default=None, max_length=32,
                                   description="How long it stays open: 3d, 12h, 2w.")


class Decision(BaseModel):
    """An approver's note kept with the vote (required to reject)."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=MAX_TEXT)


@router.get("/approvals", response_model=Page[ApprovalRequest], tags=["approvals"])
def list_approvals(ws: Reader, paging: Paging,
                   status: Annotated[ApprovalStatus | None, Query()] = None,
                   model: ModelName = None) -> Page[ApprovalRequest]:
    """List approval requests newest first (of models the caller may read)."""
    return paginate(_readable(ws, ws.approvals.list(status, model, MAX_LIMIT)), paging)


@router.get("/approvals/for-action", response_model=Page[ApprovalRequest], tags=["approvals"])
def approvals_for_action(
        ws: Reader, paging: Paging, model: Annotated[str, Query(max_length=MAX_NAME)],
        version: Annotated[int, Query(ge=1, le=2**31 - 1)],
        gate: Annotated[str, Query(max_length=64)],
        target: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
) -> Page[ApprovalRequest]:
    """List every request (any status) for one gate to one target on a version, newest first."""
    _require_read(ws, model)
    return paginate(ws.approvals.for_action(model, version, gate, target), paging)


@router.get("/approvals/{request_id}", response_model=ApprovalRequest, tags=["approvals"])
def show_approval(request_id: RequestId, ws: Reader) -> ApprovalRequest:
    """Show one approval request with its votes."""
    found = ws.approvals.get(request_id)
    _require_read(ws, found.model)
    return found


@router.post("/approvals", status_code=201, response_model=ApprovalRequest,
             tags=["approvals"])
def request_approval(body: NewApproval, ws: Writer) -> ApprovalRequest:
    """Ask for a governed action on a model version to be approved (needs write on it)."""
    lifetime = None if body.expires_in is None else parse_duration(body.expires_in,
                                                                   "expires_in")
    return ws.approvals.request(body.model, body.version, body.gate, body.target,
                                body.reason, lifetime)


@router.post("/approvals/{request_id}/approve", response_model=ApprovalRequest,
             tags=["approvals"])
def approve(request_id: RequestId, ws: Approver,
            body: Decision | None = None) -> ApprovalRequest:
    """Vote for the request (four-eyes: never one's own; one vote per approver)."""
    return ws.approvals.approve(request_id, "" if body is None else body.comment)


@router.post("/approvals/{request_id}/reject", response_model=ApprovalRequest,
             tags=["approvals"])
def reject(request_id: RequestId, body: Decision, ws: Approver) -> ApprovalRequest:
    """Reject the request, closing it; ``comment`` says why (required)."""
    return ws.approvals.reject(request_id, body.comment)


@router.post("/approvals/{request_id}/withdraw", response_model=ApprovalRequest,
             tags=["approvals"])
def withdraw(request_id: RequestId, ws: Writer) -> ApprovalRequest:
    """Withdraw the caller's own open request."""
    return ws.approvals.withdraw(request_id)


# -- policies --------------------------------------------------------------------------------


class PolicyDocuments(BaseModel):
    """Policy files as the CLI reads them from a folder: file name -> YAML text."""

    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] = Field(max_length=MAX_POLICY_FILES, description=(
        "File name (NAME.yaml or NAME.yml) -> the file's YAML text."))
    allow_empty: bool = Field(default=False, description=(
        "Apply even a set with no policy, turning every gate off (clearing on purpose)."))

    @field_validator("files")
    @classmethod
    def _file_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            if not POLICY_FILE.fullmatch(name):
                raise ValueError(f"{name[:140]!r} is not a policy file name: 1-128 letters, "
                                 "digits, '.', '_' or '-' ending in .yaml or .yml")
        return files


class RuleView(BaseModel):
    """One rule of a gate policy: its id and kind."""

    id: str
    kind: str


class GatePolicyView(BaseModel):
    """One gate policy: where it applies and its rules."""

    name: str
    description: str | None = None
    models: list[str]
    gates: list[str]
    targets: list[str]
    rules: list[RuleView]


class PolicySetView(BaseModel):
    """A policy set: its files (what was applied), digest and what they define."""

    digest: str
    files: dict[str, str]
    gate_policies: list[GatePolicyView]
    rules: int
    retention: str | None = Field(description="The retention policy's name, if any.")

    @classmethod
    def of(cls, policy_set: PolicySet) -> PolicySetView:
        """Return the view of ``policy_set``."""
        return cls(
            digest=policy_set.digest, files=dict(policy_set.files), rules=rule_count(policy_set),
            retention=None if policy_set.retention is None else policy_set.retention.name,
            gate_policies=[GatePolicyView(
                name=p.name, description=p.description,
                models=[str(m) for m in p.applies_to.models],
                gates=[str(g) for g in p.applies_to.gates],
                targets=[str(t) for t in p.applies_to.targets],
                rules=[RuleView(id=r.id, kind=str(r.kind)) for r in p.rules])
                for p in policy_set.gate_policies])


class AppliedPolicyView(BaseModel):
    """A policy set as applied; ``changed`` is false when it was in force already."""

    id: str
    applied_at: datetime
    applied_by: str
    changed: bool
    policy_set: PolicySetView

    @classmethod
    def of(cls, applied: AppliedPolicySet) -> AppliedPolicyView:
        """Return the view of ``applied``."""
        return cls(id=applied.id, applied_at=applied.applied_at, applied_by=applied.applied_by,
                   changed=applied.changed, policy_set=PolicySetView.of(applied.policy_set))


class PolicyState(BaseModel):
    """The set in force: as applied (null before any) and what the gates evaluate."""

    current: AppliedPolicyView | None
    active: PolicySetView


@router.get("/policies", response_model=PolicyState, tags=["policies"])
def show_policies(ws: Reader) -> PolicyState:
    """Show the policy set in force, when and by whom it was applied."""
    _require_read(ws)
    current = ws.policies.current()
    active = current.policy_set if current is not None else EMPTY_POLICY_SET
    return PolicyState(current=None if current is None else AppliedPolicyView.of(current),
                       active=PolicySetView.of(active))


@router.get("/policies/history", response_model=Page[PolicySetRecord], tags=["policies"])
def policy_history(ws: Reader, paging: Paging) -> Page[PolicySetRecord]:
    """List applied policy sets newest first, files included."""
    _require_read(ws)
    return paginate(ws.policies.history(MAX_LIMIT), paging)


@router.post("/policies", status_code=201, response_model=AppliedPolicyView,
             tags=["policies"])
def apply_policies(body: PolicyDocuments, ws: Admin, response: Response) -> AppliedPolicyView:
    """Apply the files as the set every gate evaluates (200 when it is in force already).

    Every file is checked first: a malformed one is refused naming ``<file>:<line>`` and
    nothing is stored; an empty set is refused (naming ``files``) unless ``allow_empty``.
    """
    applied = ws.policies.apply(ws.actor, body.files, allow_empty=body.allow_empty,
                                source="files")
    if not applied.changed:
        response.status_code = 200
    return AppliedPolicyView.of(applied)


# -- users and roles -------------------------------------------------------------------------


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


@router.get("/access", response_model=AccessState, tags=["users"])
def access_state(ws: Reader) -> AccessState:
    """Tell whether roles are enforced or the workspace is open (everyone admin)."""
    return AccessState(enforced=ws.access.enforced())


@router.get("/users", response_model=Page[UserView], tags=["users"])
def list_users(ws: Reader, paging: Paging) -> Page[UserView]:
    """List identities by name with the role bindings each holds."""
    _require_read(ws)
    by_subject: dict[str, list[RoleBinding]] = {}
    for binding in ws.access.bindings():
        by_subject.setdefault(binding.subject, []).append(binding)
    return paginate([UserView(
        name=i.name, kind=i.kind, created_at=i.created_at, created_by=i.created_by,
        description=i.description, disabled=i.disabled, bindings=by_subject.get(i.name, []))
        for i in ws.access.identities()], paging)


@router.get("/roles", response_model=Page[RoleBinding], tags=["users"])
def list_bindings(ws: Reader, paging: Paging,
                  subject: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
                  ) -> Page[RoleBinding]:
    """List role bindings (of ``subject`` only, when given) by subject, role and models."""
    _require_read(ws)
    return paginate(ws.access.bindings(subject), paging)


@router.get("/users/{subject}/roles", response_model=HeldRoles, tags=["users"])
def roles_of(subject: Subject, ws: Reader, model: ModelName = None) -> HeldRoles:
    """Show the roles ``subject`` holds on ``model`` (open workspace: admin; disabled: none)."""
    _require_read(ws)
    held = ws.access.roles_of(subject, model)
    return HeldRoles(subject=subject, model=model, roles=sorted(held))


@router.post("/users", status_code=201, response_model=Identity, tags=["users"])
def add_identity(body: NewIdentity, ws: Admin) -> Identity:
    """Record a user or service account."""
    return ws.access.add_identity(ws.actor, body.name, body.kind, body.description)


@router.post("/users/{subject}/roles", status_code=201, response_model=RoleBinding,
             tags=["users"])
def grant_role(subject: Subject, body: NewBinding, ws: Admin) -> RoleBinding:
    """Grant a role (the first grant must be admin on ``*``, and turns enforcement on)."""
    return ws.access.grant(ws.actor, subject, body.role, body.models, body.kind)


@router.delete("/users/{subject}/roles/{role}", status_code=204, response_class=Response,
               tags=["users"])
def revoke_role(subject: Subject, role: Role, ws: Admin,
                models: Annotated[str, Query(min_length=1, max_length=MAX_NAME)] = ALL_MODELS,
                ) -> Response:
    """Revoke a role binding (revoking the very last one opens the workspace)."""
    ws.access.revoke(ws.actor, subject, role, models)
    return Response(status_code=204)


@router.post("/users/{subject}/disable", response_model=Identity, tags=["users"])
def disable_identity(subject: Subject, ws: Admin) -> Identity:
    """Disable an identity: it keeps its bindings but may do nothing."""
    return ws.access.disable(ws.actor, subject)


@router.post("/users/{subject}/enable", response_model=Identity, tags=["users"])
def enable_identity(subject: Subject, ws: Admin) -> Identity:
    """Enable a disabled identity again."""
    return ws.access.enable(ws.actor, subject)


# -- legal holds and retention ---------------------------------------------------------------


class NewLegalHold(BaseModel):
    """What retention must keep: a data class (or ``*``) and a ref glob in it, and why."""

    model_config = ConfigDict(extra="forbid")

    data_class: str = Field(min_length=1, max_length=64)
    ref: str = Field(min_length=1, max_length=512)
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


@router.get("/legal-holds", response_model=Page[LegalHold], tags=["retention"])
def list_legal_holds(ws: Reader, paging: Paging, active_only: bool = True) -> Page[LegalHold]:
    """List legal holds oldest first (only those not released, by default)."""
    return paginate(ws.legal_holds.list(active_only), paging)


@router.post("/legal-holds", status_code=201, response_model=LegalHold, tags=["retention"])
def add_legal_hold(body: NewLegalHold, ws: Admin) -> LegalHold:
    """Hold ``ref`` of ``data_class``: retention keeps it until the hold is released."""
    return ws.legal_holds.add(body.data_class, body.ref, body.reason)


@router.post("/legal-holds/{hold_id}/release", response_model=LegalHold, tags=["retention"])
def release_legal_hold(hold_id: HoldId, ws: Admin) -> LegalHold:
    """Release a legal hold; the next retention run may delete what it kept."""
    return ws.legal_holds.release(hold_id)


def _run_retention(ws: Workspace, dry_run: bool, now: datetime | None) -> RetentionReport:
    """Run the applied set's retention policy.

    Raises:
        NotFoundError: when the applied policy set holds no retention policy.
    """
    policy = ws.policies.active().retention
    if policy is None:
        raise NotFoundError("retention policy", "in the applied policy set", NO_RETENTION)
    return ws.retention.run(policy, dry_run=dry_run, now=now)


@router.get("/retention", response_model=RetentionReport, tags=["retention"])
def plan_retention(ws: Reader, now: Annotated[datetime | None, Query(description=(
        "Judge ages as of this moment (timezone-aware); default: now."))] = None,
                   ) -> RetentionReport:
    """Show what the applied retention policy would delete (a dry run: writes nothing)."""
    return _run_retention(ws, True, now)


@router.post("/retention/apply", response_model=RetentionReport, tags=["retention"])
def apply_retention(ws: Admin) -> RetentionReport:
    """Delete what the applied retention policy lets expire now, keeping what is held."""
    return _run_retention(ws, False, None)


# -- the governance report -------------------------------------------------------------------


class GovernanceReportView(BaseModel):
    """Completeness and policy-violation rates over the versions examined, and each version."""

    generated_at: datetime
    policy_set: str
    population: int
    examined: int
    in_use: int
    completeness: float
    complete_share: float
    violation_rate: float
    in_use_violation_rate: float
    missing_counts: dict[str, int]
    items: list[ReportItem]


@router.get("/governance/report", response_model=GovernanceReportView, tags=["governance"])
def governance_report(
        ws: Reader, sample: Annotated[int | None, Query(ge=1, le=1_000_000, description=(
            "Examine this many versions chosen at random with seed (default: all)."))] = None,
        seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> GovernanceReportView:
    """Audit every model version (or a seeded sample) for its record and the policies."""
    _require_read(ws)
    found = ws.governance_report.build(sample, seed)
    record = found.as_record()
    return GovernanceReportView(
        generated_at=found.generated_at, policy_set=found.policy_set,
        population=found.population, examined=found.examined, in_use=record["in_use"],
        completeness=record["completeness"], complete_share=record["complete_share"],
        violation_rate=record["violation_rate"],
        in_use_violation_rate=record["in_use_violation_rate"],
        missing_counts=dict(found.missing_counts), items=list(found.items))
