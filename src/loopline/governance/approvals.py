"""Approval requests: ask for a governed action to be approved, vote on it, withdraw it.

Rules kept here: asking needs ``write`` on the model, deciding needs ``approve``; four-eyes
(nobody approves or rejects their own request); one vote per approver; a request becomes
``approved`` when its distinct approvers reach the number its policy required, and stays
open until it expires (an approved request still expires); a rejection or a withdrawal
closes it. ``expired`` is derived from the store's clock when a request is read.

A request names what the gate will be asked: a target for every gate that moves something
(alias, delete_alias, status, deploy, rollout_step) and none for ``trust``; ``register`` is
never approvable, as a registration has no version to name yet. The requester may shorten
the lifetime the policy gives (``expires_after``) but never lengthen it.

Authorisation is asked before the write transaction (the authoriser reads the database,
which must not wait behind this transaction's write lock); the request is then read again,
locked, inside the transaction, and every rule about its state is checked on that copy.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from loopline.core.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    PolicyDeniedError,
)
from loopline.core.gates import GateAction, parse_gate_action
from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    ApprovalVote,
    Permission,
    Verdict,
)
from loopline.core.ids import new_id
from loopline.core.models import validate_version
from loopline.core.names import validate_name, validate_text
from loopline.core.ports import Authorizer
from loopline.governance.durations import format_duration
from loopline.store import MetadataStore
from loopline.store import approval_records as records

__all__ = ["DEFAULT_EXPIRY", "MAX_EXPIRY", "ApprovalRequirement", "ApprovalService",
           "DEFAULT_LIMIT", "MAX_LIMIT"]

ApprovalRequirement = Callable[[str, str, str | None], tuple[int, timedelta | None]]
"""``(model, gate, target) -> (approvals required, default expiry or None)``."""

DEFAULT_EXPIRY = timedelta(days=7)
MAX_EXPIRY = timedelta(days=365)
MAX_TEXT = 2_000
MAX_TARGET = 128
DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
KIND = "approval request"
# What the target of each gate that needs one names, for the error that asks for it.
TARGET_OF = {GateAction.ALIAS: "the alias name", GateAction.DELETE_ALIAS: "the alias name",
             GateAction.STATUS: "the new status", GateAction.DEPLOY: "the stage",
             GateAction.ROLLOUT_STEP: "the stage"}


def _one_approval(model: str, gate: str, target: str | None) -> tuple[int, timedelta | None]:
    return 1, None


def _approvable(gate: str) -> str:
    if gate == GateAction.REGISTER:
        raise InvalidArgumentError(
            "gate", "'register' cannot be approved: a request names an existing model "
                    "version, and a registration has none yet; ask for approval of the step "
                    "after it (alias, status, deploy)")
    return gate


def _target(gate: str, value: str | None) -> str | None:
    """Return the target the gate will be asked with: required, forbidden or free."""
    needed = TARGET_OF.get(GateAction(gate))
    if value is None:
        if needed is not None:
            raise InvalidArgumentError("target", f"is required for gate {gate!r} ({needed}); "
                                                 "the gate is always asked with one")
        return None
    if gate == GateAction.TRUST:
        raise InvalidArgumentError("target", f"{value!r} given, but gate 'trust' has no "
                                             "target; leave it out")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TARGET:
        raise InvalidArgumentError("target", f"{value!r} must be 1-{MAX_TARGET} characters "
                                             "(an alias, a status or a stage)")
    return value


def _expiry(value: timedelta) -> timedelta:
    if not isinstance(value, timedelta) or not timedelta(0) < value <= MAX_EXPIRY:
        raise InvalidArgumentError("expires_in", f"{value!r} must be more than 0 and at most "
                                                 f"{MAX_EXPIRY.days} days")
    return value


def _policy_expiry(value: timedelta | None) -> timedelta:
    """Return the policy's default expiry, seven days without one, capped at the maximum.

    Capped rather than refused: the requester did not choose it and could not fix it here.
    """
    if value is None or value <= timedelta(0):
        return DEFAULT_EXPIRY
    return min(value, MAX_EXPIRY)


def _lifetime(asked: timedelta | None,
              policy: timedelta | None) -> tuple[timedelta, dict[str, Any]]:
    """Return how long the request stays open, and what decided it (for its ``details``).

    The policy's ``expires_after`` bounds what the requester asks for: a requester choosing
    a year would otherwise outlive the review the policy asks for.
    """
    allowed = _policy_expiry(policy)
    details: dict[str, Any] = {}
    if policy is not None:
        details["policy_expires_after"] = format_duration(policy)
    if asked is None:
        return allowed, details
    details["expires_in_asked"] = format_duration(asked)
    if policy is not None and asked > allowed:
        details["expiry_clamped"] = True
        return allowed, details
    return asked, details


def _limit(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidArgumentError("limit", f"{value!r} must be a whole number from 1 to "
                                            f"{MAX_LIMIT}")
    return value


def _status(value: ApprovalStatus | str) -> ApprovalStatus:
    try:
        return ApprovalStatus(value)
    except ValueError:
        raise InvalidArgumentError("status", f"{value!r} is not an approval status; use one "
                                             f"of {', '.join(ApprovalStatus)}") from None


class ApprovalService:
    """Approval requests of one workspace, acted on by ``actor``."""

    def __init__(self, store: MetadataStore, authorizer: Authorizer, actor: str,
                 requirement: ApprovalRequirement | None = None) -> None:
        self._store = store
        self._authorizer = authorizer
        self._actor = actor
        self._requirement: ApprovalRequirement = requirement or _one_approval
        self._clock = store.clock
        self.queries = records.ApprovalQueries(store.engine)

    def request(
            self, model: str, version: int, gate: str, target: str | None, reason: str,
            expires_in: timedelta | None = None) -> ApprovalRequest:
        """Ask for ``gate`` (to ``target``) on ``models:/MODEL/VERSION`` to be approved.

        The number of approvals and the default expiry come from the requirement (the
        policy); ``expires_in`` may shorten the policy's expiry but not lengthen it (the
        request's ``details`` record what was asked, the policy's bound and
        ``expiry_clamped`` when the bound applied).

        Raises:
            InvalidArgumentError: naming ``model``, ``version``, ``gate``, ``target``,
                ``reason`` or ``expires_in`` when it is invalid: ``gate`` for
                ``register`` (never approvable), ``target`` when missing for a gate that
                moves something or given for ``trust``.
            AccessDeniedError: when the actor may not write to the model.
            NotFoundError: naming ``models:/MODEL/VERSION`` when it does not exist.
            AlreadyExistsError: naming the open request for the same action.
        """
        validate_name(model, "model")
        validate_version(version)
        gate = _approvable(str(parse_gate_action(gate)))
        target = _target(gate, target)
        reason = validate_text(reason, "reason", MAX_TEXT)
        if expires_in is not None:
            expires_in = _expiry(expires_in)
        self._authorizer.authorize(self._actor, Permission.WRITE, model)
        required, default = self._requirement(model, gate, target)
        lifetime, details = _lifetime(expires_in, default)
        with self._store.write(self._actor) as uow:
            now = uow.now()
            return records.insert_request(uow, ApprovalRequest(
                id=new_id(), model=model, version=version, gate=gate, target=target,
                requester=self._actor, reason=reason, status=ApprovalStatus.PENDING,
                required=max(required, 1), created_at=now, expires_at=now + lifetime,
                details=details))

    def approve(self, request_id: str, comment: str = "") -> ApprovalRequest:
        """Vote for the request; it becomes ``approved`` once enough distinct approvers agree.

        Raises:
            NotFoundError: when no request has that id.
            AccessDeniedError: when the actor may not approve on the request's model.
            PolicyDeniedError: (four-eyes) when the actor made the request.
            ConflictError: when the actor has voted on it already.
            InvalidTransitionError: when the request is expired, rejected or withdrawn.
            InvalidArgumentError: naming ``comment`` when it is too long.
        """
        comment = comment.strip() if isinstance(comment, str) else comment
        return self._vote(request_id, Verdict.APPROVE,
                          validate_text(comment, "comment", MAX_TEXT) if comment else "")

    def reject(self, request_id: str, comment: str) -> ApprovalRequest:
        """Reject the request, closing it; ``comment`` says why.

        Raises:
            InvalidArgumentError: naming ``comment`` when it is empty or too long.
            NotFoundError, AccessDeniedError, PolicyDeniedError, ConflictError,
                InvalidTransitionError: as :meth:`approve`.
        """
        return self._vote(request_id, Verdict.REJECT,
                          validate_text(comment, "comment", MAX_TEXT))

    def withdraw(self, request_id: str) -> ApprovalRequest:
        """Withdraw the actor's own open request, closing it.

        Raises:
            NotFoundError: when no request has that id.
            PolicyDeniedError: when the actor did not make the request.
            InvalidTransitionError: when it is expired, rejected or withdrawn already.
        """
        with self._store.write(self._actor) as uow:
            current = records.lock_request(uow, request_id)
            if current.requester != self._actor:
                raise PolicyDeniedError(
                    f"only the requester {current.requester!r} may withdraw approval request "
                    f"{request_id!r}; an approver can reject it instead")
            self._require_open(current, uow.now(), ApprovalStatus.WITHDRAWN)
            return records.close_request(uow, current)

    def get(self, request_id: str) -> ApprovalRequest:
        """Return the request with its votes, ``expired`` when it is open past its expiry.

        Raises:
            NotFoundError: when no request has that id.
        """
        return self._as_of_now(self.queries.get(request_id))

    def list(self, status: ApprovalStatus | str | None = None, model: str | None = None,
             limit: int = DEFAULT_LIMIT) -> builtins.list[ApprovalRequest]:
        """List at most ``limit`` requests newest first, in ``status`` now, of ``model``.

        Raises:
            InvalidArgumentError: naming ``status``, ``model`` or ``limit`` (1 to
                ``MAX_LIMIT``) when it is invalid.
        """
        wanted = None if status is None else _status(status)
        if model is not None:
            validate_name(model, "model")
        limit = _limit(limit)
        now = self._clock.now()
        return [self._as_of(found, now)
                for found in self.queries.search(now, wanted, model, limit)]

    def for_action(self, model: str, version: int, gate: str,
                   target: str | None) -> builtins.list[ApprovalRequest]:
        """List every request for ``gate`` (to ``target``) on the version, newest first.

        Any status, votes included; a gate reads this to count the approvals it needs.
        """
        now = self._clock.now()
        return [self._as_of(found, now)
                for found in self.queries.for_action(model, version, gate, target)]

    # -- internals ---------------------------------------------------------------------------

    def _vote(self, request_id: str, verdict: Verdict, comment: str) -> ApprovalRequest:
        # The model is fixed at creation, so authorising on an unlocked read is safe.
        role = self._authorizer.authorize(self._actor, Permission.APPROVE,
                                          self.queries.get(request_id).model)
        target = (ApprovalStatus.APPROVED if verdict is Verdict.APPROVE
                  else ApprovalStatus.REJECTED)
        with self._store.write(self._actor) as uow:
            current = records.lock_request(uow, request_id)
            now = uow.now()
            self._check_voter(current, verdict)
            self._require_open(current, now, target)
            vote = ApprovalVote(self._actor, verdict, comment, now, role)
            return records.record_vote(uow, current, vote, self._next_status(current, vote))

    def _check_voter(self, current: ApprovalRequest, verdict: Verdict) -> None:
        if current.requester == self._actor:
            raise PolicyDeniedError(
                f"four-eyes: {current.requester!r} requested approval request {current.id!r} "
                f"and may not {verdict} it; another approver must decide")
        if any(vote.approver == self._actor for vote in current.votes):
            raise ConflictError(f"{self._actor!r} has already voted on approval request "
                                f"{current.id!r}; each approver votes once")

    @staticmethod
    def _require_open(current: ApprovalRequest, now: datetime, target: ApprovalStatus) -> None:
        status = current.status_at(now)
        if status not in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED):
            raise InvalidTransitionError(KIND, current.id, str(status), str(target))

    @staticmethod
    def _next_status(current: ApprovalRequest, vote: ApprovalVote) -> ApprovalStatus:
        if vote.verdict is Verdict.REJECT:
            return ApprovalStatus.REJECTED
        voted = replace(current, votes=(*current.votes, vote))
        if len(voted.approvers()) >= current.required:
            return ApprovalStatus.APPROVED
        return current.status

    def _as_of_now(self, request: ApprovalRequest) -> ApprovalRequest:
        return self._as_of(request, self._clock.now())

    @staticmethod
    def _as_of(request: ApprovalRequest, now: datetime) -> ApprovalRequest:
        status = request.status_at(now)
        return request if status is request.status else replace(request, status=status)
