"""``/audit``: list audit entries, read the chain's head, verify the chain end to end.

Reading the audit log needs ``read``, as ``loopline audit log`` and ``loopline audit verify``
need nothing beyond a workspace: the log is the record of who changed what, meant for
anyone who may look at the workspace (it holds summaries of changes, never secrets).
Listings page by offset over at most ``MAX_ENTRIES`` entries of one filter (the store's own
bound; a cursor past it is refused naming ``cursor``); narrow a longer history with
``since``/``until``. Verifying reads the whole chain, so it takes a slot of its kind of work
(``api.capacity``; 503 ``busy`` when every one is taken).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from loopline.api.auth import Reader
from loopline.api.capacity import Limits, Work
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText, aware
from loopline.core.audit import AuditEntry, ChainReport
from loopline.store import AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_ENTRIES = 10_000


class AuditHead(BaseModel):
    """The chain's recorded last entry: its sequence number and hash."""

    seq: int
    hash: str


class AuditQuery(BaseModel):
    """The filters of a listing; every one is optional and they combine with AND."""

    actor: FilterText | None = Field(default=None, max_length=256)
    action: FilterText | None = Field(default=None, max_length=128,
                                      description="An action, e.g. `dataset.snapshot`.")
    subject: FilterText | None = Field(default=None, max_length=512)
    since: datetime | None = Field(
        default=None, description="Entries at or after this time (UTC when it has no zone).")
    until: datetime | None = Field(default=None, description="Entries before this time.")
    newest_first: bool = True


@router.get("", response_model=Page[AuditEntry])
def list_entries(ws: Reader, paging: Paging,
                 query: Annotated[AuditQuery, Query()]) -> Page[AuditEntry]:
    """List audit entries matching every filter given, newest first by default."""
    where = AuditFilter(actor=query.actor, action=query.action, subject=query.subject,
                        since=aware(query.since, "since"), until=aware(query.until, "until"),
                        limit=paging.window(MAX_ENTRIES), newest_first=query.newest_first)
    return paginate(ws.audit.entries(where), paging)


@router.get("/head", response_model=AuditHead)
def head(ws: Reader) -> AuditHead:
    """Return the chain's recorded last sequence number and hash."""
    seq, digest = ws.audit.head()
    return AuditHead(seq=seq, hash=digest)


@router.get("/verify", response_model=ChainReport)
def verify(ws: Reader, limits: Limits) -> ChainReport:
    """Check the whole chain and its head; report the first break (``first_break``).

    Raises:
        ApiError: 503 ``busy`` when every verification slot is taken.
    """
    with limits.slot(Work.AUDIT_VERIFY):
        return ws.audit.verify()
