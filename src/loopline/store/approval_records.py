"""Approval requests and their votes in the metadata store.

The SQL side of ``governance.approvals``: writes run inside the caller's unit of work, so the
change, its ``governance.approval_changed`` event and its audit entry commit together or not
at all. Deciding what a vote means (four-eyes, thresholds, who may withdraw) is governance's
job; this module stores what it decided.

Lock order: every writer takes the append lock (``uow.serialise``) first, then the request
row (``SELECT ... FOR UPDATE``), as every other appender does, so writers cannot deadlock and
two approvers racing on the last vote are put one after the other: the second one reads the
first one's vote. On SQLite the write transaction holds the database's write lock anyway.

``expired`` is never stored: an open request (``pending`` or ``approved``) past its
``expires_at`` reads as expired, and the queries here filter on the clock the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.errors import AlreadyExistsError, NotFoundError
from loopline.core.events import EventType
from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    ApprovalVote,
    Role,
    Verdict,
)
from loopline.store.errors import translated
from loopline.store.metadata_store import UnitOfWork
from loopline.store.model_queries import version_row
from loopline.store.models import APPROVAL_REQUESTS, APPROVAL_VOTES

__all__ = ["ApprovalQueries", "close_request", "insert_request", "lock_request", "record_vote",
           "subject_of"]

OPEN = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
LIST_HINT = "list approval requests with `loopline approvals list`"
VOTE_ACTIONS = {Verdict.APPROVE: "governance.approval_approved",
                Verdict.REJECT: "governance.approval_rejected"}


def subject_of(request_id: str) -> str:
    """Return the audit and event subject of a request: ``approval:<id>``."""
    return f"approval:{request_id}"


def _to_vote(row: RowMapping) -> ApprovalVote:
    return ApprovalVote(approver=row["approver"], verdict=Verdict(row["verdict"]),
                        comment=row["comment"], decided_at=row["decided_at"],
                        role=Role(row["role"]))


def _to_request(row: RowMapping, votes: Iterable[ApprovalVote]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row["id"], model=row["model"], version=row["version"], gate=row["gate"],
        target=row["target"], requester=row["requester"], reason=row["reason"],
        status=ApprovalStatus(row["status"]), required=row["required"],
        created_at=row["created_at"], expires_at=row["expires_at"],
        votes=tuple(sorted(votes, key=lambda v: (v.decided_at, v.approver))),
        details=row["details"] or {})


def _votes_of(connection: Connection, ids: Sequence[str]) -> dict[str, list[ApprovalVote]]:
    found: dict[str, list[ApprovalVote]] = {request_id: [] for request_id in ids}
    if not ids:
        return found
    rows = connection.execute(sa.select(APPROVAL_VOTES).where(
        APPROVAL_VOTES.c.request_id.in_(list(ids)))).mappings()
    for row in rows:
        found[row["request_id"]].append(_to_vote(row))
    return found


def _with_votes(connection: Connection, rows: Sequence[RowMapping]) -> list[ApprovalRequest]:
    votes = _votes_of(connection, [row["id"] for row in rows])
    return [_to_request(row, votes[row["id"]]) for row in rows]


def _missing(request_id: str) -> NotFoundError:
    return NotFoundError("approval request", request_id, LIST_HINT)


def _target_is(target: str | None) -> Any:
    column = APPROVAL_REQUESTS.c.target
    return column.is_(None) if target is None else column == target


def _open_at(now: datetime) -> Any:
    return sa.and_(APPROVAL_REQUESTS.c.status.in_([str(s) for s in OPEN]),
                   APPROVAL_REQUESTS.c.expires_at > now)


def _state(request: ApprovalRequest) -> dict[str, Any]:
    return {"status": str(request.status), "votes": len(request.votes),
            "approvals": len(request.approvers()), "required": request.required}


def _announce(uow: UnitOfWork, action: str, before: ApprovalRequest | None,
              after: ApprovalRequest, extra: dict[str, Any]) -> None:
    subject = subject_of(after.id)
    uow.emit(EventType.APPROVAL_CHANGED, subject, {
        "id": after.id, "model": after.model, "version": after.version, "gate": after.gate,
        "target": after.target, "status": str(after.status),
        "approvals": len(after.approvers()), "required": after.required})
    uow.audit(action, subject, None if before is None else _state(before),
              {**_state(after), **extra})


def insert_request(uow: UnitOfWork, request: ApprovalRequest) -> ApprovalRequest:
    """Store a new pending request once its model version exists and no open one collides.

    Raises:
        NotFoundError: naming ``models:/NAME/VERSION`` when that version does not exist.
        AlreadyExistsError: naming the open request for the same model version, gate and
            target (pending or approved, not expired).
    """
    uow.serialise()  # before the duplicate check: a concurrent request waits, then sees ours
    connection = uow.session.connection()
    version_row(connection, request.model, request.version)
    duplicate = connection.execute(sa.select(APPROVAL_REQUESTS.c.id).where(
        APPROVAL_REQUESTS.c.model == request.model,
        APPROVAL_REQUESTS.c.version == request.version,
        APPROVAL_REQUESTS.c.gate == request.gate, _target_is(request.target),
        _open_at(request.created_at))).scalar()
    if duplicate is not None:
        raise AlreadyExistsError("open approval request", str(duplicate))
    connection.execute(sa.insert(APPROVAL_REQUESTS), {
        "id": request.id, "model": request.model, "version": request.version,
        "gate": request.gate, "target": request.target, "requester": request.requester,
        "reason": request.reason, "status": str(request.status), "required": request.required,
        "details": dict(request.details), "created_at": request.created_at,
        "expires_at": request.expires_at, "closed_at": None})
    _announce(uow, "governance.approval_requested", None, request, {
        "model": request.model, "version": request.version, "gate": request.gate,
        "target": request.target, "reason": request.reason,
        "expires_at": request.expires_at.isoformat()})
    return request


def lock_request(uow: UnitOfWork, request_id: str) -> ApprovalRequest:
    """Return the request with its votes, its row locked until this unit commits.

    The status is the stored one; callers derive ``expired`` with ``status_at``.

    Raises:
        NotFoundError: when no request has that id.
    """
    uow.serialise()  # the append lock comes before any row lock (see the module docstring)
    connection = uow.session.connection()
    row = connection.execute(sa.select(APPROVAL_REQUESTS).where(
        APPROVAL_REQUESTS.c.id == request_id).with_for_update()).mappings().first()
    if row is None:
        raise _missing(request_id)
    return _with_votes(connection, [row])[0]


def _set_status(uow: UnitOfWork, request_id: str, status: ApprovalStatus,
                closed: bool) -> None:
    values: dict[str, Any] = {"status": str(status)}
    if closed:
        values["closed_at"] = uow.now()
    uow.session.connection().execute(sa.update(APPROVAL_REQUESTS).where(
        APPROVAL_REQUESTS.c.id == request_id).values(**values))


def record_vote(uow: UnitOfWork, before: ApprovalRequest, vote: ApprovalVote,
                status: ApprovalStatus) -> ApprovalRequest:
    """Store ``vote`` on the locked request ``before`` and move it to ``status``.

    A rejection closes the request (``closed_at``); an approval does not, since an approved
    request still expires.

    Raises:
        ConflictError: when the approver has voted on the request already (primary key).
    """
    uow.session.connection().execute(sa.insert(APPROVAL_VOTES), {
        "request_id": before.id, "approver": vote.approver, "verdict": str(vote.verdict),
        "role": str(vote.role), "comment": vote.comment, "decided_at": vote.decided_at})
    if status is not before.status:
        _set_status(uow, before.id, status, closed=status is ApprovalStatus.REJECTED)
    after = replace(before, status=status, votes=(*before.votes, vote))
    _announce(uow, VOTE_ACTIONS[vote.verdict], before, after, {
        "vote": {"approver": vote.approver, "verdict": str(vote.verdict),
                 "role": str(vote.role), "comment": vote.comment}})
    return after


def close_request(uow: UnitOfWork, before: ApprovalRequest) -> ApprovalRequest:
    """Withdraw the locked request ``before`` (status ``withdrawn``, ``closed_at`` now)."""
    _set_status(uow, before.id, ApprovalStatus.WITHDRAWN, closed=True)
    after = replace(before, status=ApprovalStatus.WITHDRAWN)
    _announce(uow, "governance.approval_withdrawn", before, after, {})
    return after


def _status_filter(status: ApprovalStatus, now: datetime) -> Any:
    """Return the WHERE clause of requests that read as ``status`` at ``now``."""
    column, expires = APPROVAL_REQUESTS.c.status, APPROVAL_REQUESTS.c.expires_at
    if status is ApprovalStatus.EXPIRED:
        return sa.and_(column.in_([str(s) for s in OPEN]), expires <= now)
    if status in OPEN:
        return sa.and_(column == str(status), expires > now)
    return column == str(status)


def _newest_first(query: sa.Select[Any]) -> sa.Select[Any]:
    return query.order_by(APPROVAL_REQUESTS.c.created_at.desc(), APPROVAL_REQUESTS.c.id.desc())


class ApprovalQueries:
    """Reads of approval requests with their votes; statuses are as stored."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def get(self, request_id: str) -> ApprovalRequest:
        """Return the request ``request_id`` with its votes.

        Raises:
            NotFoundError: when no request has that id.
        """
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(APPROVAL_REQUESTS).where(
                APPROVAL_REQUESTS.c.id == request_id)).mappings().first()
            if row is None:
                raise _missing(request_id)
            return _with_votes(connection, [row])[0]

    @translated
    def search(self, now: datetime, status: ApprovalStatus | None = None,
               model: str | None = None, limit: int = 100) -> list[ApprovalRequest]:
        """List at most ``limit`` requests newest first, as ``status`` at ``now``, of ``model``.

        The caller bounds ``limit`` (``ApprovalService.list`` does).
        """
        query = sa.select(APPROVAL_REQUESTS)
        if status is not None:
            query = query.where(_status_filter(status, now))
        if model is not None:
            query = query.where(APPROVAL_REQUESTS.c.model == model)
        with self._engine.connect() as connection:
            return _with_votes(connection, connection.execute(
                _newest_first(query).limit(limit)).mappings().all())

    @translated
    def for_action(self, model: str, version: int, gate: str,
                   target: str | None) -> list[ApprovalRequest]:
        """List every request for one action on one model version, newest first."""
        query = sa.select(APPROVAL_REQUESTS).where(
            APPROVAL_REQUESTS.c.model == model, APPROVAL_REQUESTS.c.version == version,
            APPROVAL_REQUESTS.c.gate == gate, _target_is(target))
        with self._engine.connect() as connection:
            return _with_votes(connection, connection.execute(_newest_first(query))
                               .mappings().all())
