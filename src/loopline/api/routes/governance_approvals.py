"""``/approvals``: ask for, list, decide and withdraw approvals of governed actions.

Reading is ``Reader``: the approval service reads without asking, so the routes ask the
view's authoriser for ``read`` on each request's model, and a listing keeps the requests of
models the caller may read. Asking for an approval and withdrawing one's own is ``Writer``;
deciding one is ``Approver`` (four-eyes: never one's own). The actor is always the view's
(the token's user), never a value from the request. Listings reach the newest
``MAX_LIMIT`` requests of a filter (the service's bound); narrow a longer history with
``status`` or ``model``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from loopline.api.auth import Approver, Reader, Writer
from loopline.api.pagination import Page, PageRequest, Paging, paginate
from loopline.api.params import FilterText
from loopline.api.routes.governance_access import MAX_NAME, MAX_TEXT, ModelFilter, require_read
from loopline.app import Workspace
from loopline.core.errors import AccessDeniedError
from loopline.core.governance import ApprovalRequest, ApprovalStatus
from loopline.governance.approvals import MAX_LIMIT
from loopline.governance.durations import parse_duration

__all__ = ["router"]

router = APIRouter(prefix="/approvals", tags=["approvals"])

RequestId = Annotated[FilterText, Path(max_length=64, description="An approval request's id.")]


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


def _reads_every_model(ws: Workspace) -> bool:
    try:
        require_read(ws)
    except AccessDeniedError:
        return False
    return True


def _readable(ws: Workspace, found: Iterable[ApprovalRequest]) -> list[ApprovalRequest]:
    """Return the requests about models the caller's user may read (one check per model)."""
    allowed: dict[str, bool] = {}
    kept: list[ApprovalRequest] = []
    for request in found:
        if request.model not in allowed:
            try:
                require_read(ws, request.model)
                allowed[request.model] = True
            except AccessDeniedError:
                allowed[request.model] = False
        if allowed[request.model]:
            kept.append(request)
    return kept


def _listed(ws: Workspace, status: ApprovalStatus | None, model: str | None,
            paging: PageRequest) -> list[ApprovalRequest]:
    """Return the requests a page is cut from: its window, or every readable one up to the cap.

    A caller who may read every model gets the window; one who may not, every request up to
    the cap with the unreadable left out (a window of the unfiltered rows would end pages
    early).
    """
    window = paging.window(MAX_LIMIT)
    if _reads_every_model(ws):
        return ws.approvals.list(status, model, window)
    return _readable(ws, ws.approvals.list(status, model, MAX_LIMIT))


@router.get("", response_model=Page[ApprovalRequest])
def list_approvals(ws: Reader, paging: Paging,
                   status: Annotated[ApprovalStatus | None, Query()] = None,
                   model: ModelFilter = None) -> Page[ApprovalRequest]:
    """List approval requests newest first (of models the caller may read)."""
    return paginate(_listed(ws, status, model, paging), paging)


@router.get("/for-action", response_model=Page[ApprovalRequest])
def approvals_for_action(
        ws: Reader, paging: Paging, model: Annotated[FilterText, Query(max_length=MAX_NAME)],
        version: Annotated[int, Query(ge=1, le=2**31 - 1)],
        gate: Annotated[FilterText, Query(max_length=64)],
        target: Annotated[FilterText | None, Query(max_length=MAX_NAME)] = None,
) -> Page[ApprovalRequest]:
    """List every request (any status) for one gate to one target on a version, newest first."""
    require_read(ws, model)
    return paginate(ws.approvals.for_action(model, version, gate, target), paging)


@router.get("/{request_id}", response_model=ApprovalRequest)
def show_approval(request_id: RequestId, ws: Reader) -> ApprovalRequest:
    """Show one approval request with its votes."""
    found = ws.approvals.get(request_id)
    require_read(ws, found.model)
    return found


@router.post("", status_code=201, response_model=ApprovalRequest)
def request_approval(body: NewApproval, ws: Writer) -> ApprovalRequest:
    """Ask for a governed action on a model version to be approved (needs write on it)."""
    lifetime = None if body.expires_in is None else parse_duration(body.expires_in,
                                                                   "expires_in")
    return ws.approvals.request(body.model, body.version, body.gate, body.target,
                                body.reason, lifetime)


@router.post("/{request_id}/approve", response_model=ApprovalRequest)
def approve(request_id: RequestId, ws: Approver,
            body: Decision | None = None) -> ApprovalRequest:
    """Vote for the request (four-eyes: never one's own; one vote per approver)."""
    return ws.approvals.approve(request_id, "" if body is None else body.comment)


@router.post("/{request_id}/reject", response_model=ApprovalRequest)
def reject(request_id: RequestId, body: Decision, ws: Approver) -> ApprovalRequest:
    """Reject the request, closing it; ``comment`` says why (required)."""
    return ws.approvals.reject(request_id, body.comment)


@router.post("/{request_id}/withdraw", response_model=ApprovalRequest)
def withdraw(request_id: RequestId, ws: Writer) -> ApprovalRequest:
    """Withdraw the caller's own open request."""
    return ws.approvals.withdraw(request_id)
