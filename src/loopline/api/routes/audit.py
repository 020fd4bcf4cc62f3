"""``/audit``: list audit entries, read the chain's head, verify the chain end to end.

Reading the audit log needs ``read``, as ``loopline audit log`` and ``loopline audit verify``
need nothing beyond a workspace: the log is the record of who changed what, meant for
anyone who may look at the workspace (it holds summaries of changes, never secrets).
Listings page by offset over at most ``MAX_ENTRIES`` entries of one filter (the store's own
bound); narrow a longer history with ``since``/``until``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from loopline.api.auth import Reader
from loopline.api.pagination import Page, Paging, paginate
from loopline.core.audit import AuditEntry, ChainReport
from loopline.store import AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_ENTRIES = 10_000


class AuditHead(BaseModel):
    """The chain's recorded last entry: its sequence number and hash."""

    seq: int
    hash: str


def _aware(value: datetime | None) -> datetime | None:
    # A time without a zone is taken as UTC, as the CLI takes it.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class AuditQuery(BaseModel):
    """The filters of a listing; every one is optional and they combine with AND."""

    actor: str | None = Field(default=None, max_length=256)
    action: str | None = Field(default=None, max_length=128,
                               description="An action, e.g. `dataset.snapshot`.")
    subject: str | None = Field(default=None, max_length=512)
    since: datetime | None = Field(
        default=None, description="Entries at or after this time (UTC when it has no zone).")
    until: datetime | None = Field(default=None, description="Entries before this time.")
    newest_first: bool = True


@router.get("", response_model=Page[AuditEntry])
def list_entries(ws: Reader, paging: Paging,
                 query: Annotated[AuditQuery, Query()]) -> Page[AuditEntry]:
    """List audit entries matching every filter given, newest first by default."""
    window = min(paging.offset + paging.limit + 1, MAX_ENTRIES)
    where = AuditFilter(actor=query.actor, action=query.action, subject=query.subject,
                        since=_aware(query.since), until=_aware(query.until), limit=window,
                        newest_first=query.newest_first)
    return paginate(ws.audit.entries(where), paging)


@router.get("/head", response_model=AuditHead)
def head(ws: Reader) -> AuditHead:
    """Return the chain's recorded last sequence number and hash."""
    seq, digest = ws.audit.head()
    return AuditHead(seq=seq, hash=digest)


@router.get("/verify", response_model=ChainReport)
def verify(ws: Reader) -> ChainReport:
    """Check the whole chain and its head; report the first break (``first_break``)."""
    return ws.audit.verify()
