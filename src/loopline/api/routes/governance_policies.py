"""``/policies``: the policy set in force, its history, and applying policy files.

Reading is ``Reader`` and asks the view's authoriser for ``read`` on every model (the set
governs them all; the policy service reads without asking). Applying is ``Admin``, as the
token's user: files are sent as text (name -> YAML), never as paths on the server.
"""

from __future__ import annotations

import re
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.api.auth import Admin, Reader
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.routes.governance_access import require_read
from loopline.governance.policy_files import EMPTY_POLICY_SET, PolicySet
from loopline.governance.policy_sets import AppliedPolicySet, rule_count
from loopline.store.policy_records import MAX_HISTORY, PolicySetRecord

__all__ = ["router"]

router = APIRouter(prefix="/policies", tags=["policies"])

MAX_POLICY_FILES = 256
POLICY_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(?i:ya?ml)$")


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


@router.get("", response_model=PolicyState)
def show_policies(ws: Reader) -> PolicyState:
    """Show the policy set in force, when and by whom it was applied."""
    require_read(ws)
    current = ws.policies.current()
    active = current.policy_set if current is not None else EMPTY_POLICY_SET
    return PolicyState(current=None if current is None else AppliedPolicyView.of(current),
                       active=PolicySetView.of(active))


@router.get("/history", response_model=Page[PolicySetRecord])
def policy_history(ws: Reader, paging: Paging) -> Page[PolicySetRecord]:
    """List applied policy sets newest first, files included (the newest 1,000 at most)."""
    require_read(ws)
    return paginate(ws.policies.history(paging.window(MAX_HISTORY)), paging)


@router.post("", status_code=201, response_model=AppliedPolicyView)
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
