"""``/legal-holds``, ``/retention`` and ``/governance/report``: what is kept, and the report.

Permissions: listing legal holds and the report is ``Reader`` (the report asks for ``read`` on
every model: it examines them all); adding and releasing holds is ``Admin``, and so is
retention, the dry run included: a plan names every stored object of every model that would
expire, which is more than a caller bound to some models may see, and it reads the whole
catalogue to make. Retention runs and reports take a slot of their kind of work
(``api.capacity``; 503 ``busy`` when taken). The report's summary covers every version
examined; its ``items`` come a page at a time (``limit``/``cursor``): ask for the next page
with the same ``sample`` and ``seed``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from loopline.api.auth import Admin, Reader
from loopline.api.capacity import Limits, Work
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText, aware
from loopline.api.routes.governance_access import MAX_TEXT, require_read
from loopline.app import Workspace
from loopline.core.errors import NotFoundError
from loopline.core.governance import LegalHold
from loopline.governance.report import MAX_SAMPLE, ReportItem
from loopline.governance.retention import RetentionReport

__all__ = ["router"]

router = APIRouter()

NO_RETENTION = ("add a `kind: retention` document to the policy files and apply them "
                "(POST /policies, or `loopline policy apply`)")
HoldId = Annotated[FilterText, Path(max_length=64, description="A legal hold's id.")]


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


def _run_retention(ws: Workspace, limits: Limits, dry_run: bool,
                   now: datetime | None) -> RetentionReport:
    """Run the applied set's retention policy in a slot of its own.

    Raises:
        NotFoundError: when the applied policy set holds no retention policy.
        ApiError: 503 ``busy`` when every retention slot is taken.
    """
    policy = ws.policies.active().retention
    if policy is None:
        raise NotFoundError("retention policy", "in the applied policy set", NO_RETENTION)
    with limits.slot(Work.RETENTION):
        return ws.retention.run(policy, dry_run=dry_run, now=now)


@router.get("/retention", response_model=RetentionReport, tags=["retention"])
def plan_retention(ws: Admin, limits: Limits, now: Annotated[datetime | None, Query(description=(
        "Judge ages as of this moment (UTC without a zone); default: now."))] = None,
                   ) -> RetentionReport:
    """Show what the applied retention policy would delete (a dry run: writes nothing)."""
    return _run_retention(ws, limits, True, aware(now, "now"))


@router.post("/retention/apply", response_model=RetentionReport, tags=["retention"])
def apply_retention(ws: Admin, limits: Limits) -> RetentionReport:
    """Delete what the applied retention policy lets expire now, keeping what is held."""
    return _run_retention(ws, limits, False, None)


# -- the governance report -------------------------------------------------------------------


class GovernanceReportView(BaseModel):
    """Rates over every version examined, and one page of the versions themselves."""

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
    items: list[ReportItem] = Field(description="This page of the versions examined.")
    next_cursor: str | None = Field(default=None, description=(
        "The cursor of the next page of items (ask with the same sample and seed); null on "
        "the last."))


@router.get("/governance/report", response_model=GovernanceReportView, tags=["governance"])
def governance_report(
        ws: Reader, paging: Paging, limits: Limits,
        sample: Annotated[int | None, Query(ge=1, le=MAX_SAMPLE, description=(
            "Examine this many versions chosen at random with seed (default: all)."))] = None,
        seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> GovernanceReportView:
    """Audit every model version (or a seeded sample) for its record and the policies.

    Raises:
        ApiError: 503 ``busy`` when every report slot is taken.
    """
    require_read(ws)
    with limits.slot(Work.GOVERNANCE_REPORT):
        found = ws.governance_report.build(sample, seed)
    record = found.as_record()
    page: Page[ReportItem] = paginate(found.items, paging)
    return GovernanceReportView(
        generated_at=found.generated_at, policy_set=found.policy_set,
        population=found.population, examined=found.examined, in_use=record["in_use"],
        completeness=record["completeness"], complete_share=record["complete_share"],
        violation_rate=record["violation_rate"],
        in_use_violation_rate=record["in_use_violation_rate"],
        missing_counts=dict(found.missing_counts), items=page.items,
        next_cursor=page.next_cursor)
