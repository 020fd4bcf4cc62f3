"""Approval requests on every backend: four-eyes, roles, thresholds, expiry, rejection,
withdrawal, duplicates, bad input, and the audit entry and event of every change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from loopline.core.clock import ManualClock
from loopline.core.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.core.events import EventType
from loopline.core.governance import (
    ROLE_PERMISSIONS,
    ApprovalRequest,
    ApprovalStatus,
    Permission,
    Role,
    Verdict,
)
from loopline.core.models import NewModelVersion
from loopline.core.names import validate_text
from loopline.governance.access import AccessControl
from loopline.governance.approvals import ApprovalRequirement, ApprovalService
from loopline.store import AuditFilter, MetadataStore
from loopline.store.model_registry import create_version

DIGEST = "cd" * 32


class FakeAuthorizer:
    """Roles by subject, checked against ``ROLE_PERMISSIONS``; no roles at all: open."""

    def __init__(self, roles: dict[str, Role] | None = None) -> None:
        self.roles = roles or {}

    def authorize(self, actor: str, permission: Permission, model: str | None = None) -> Role:
        if not self.roles:
            return Role.ADMIN
        role = self.roles.get(actor)
        if role is None or permission not in ROLE_PERMISSIONS[role]:
            raise AccessDeniedError(actor, str(permission), model,
                                    (str(role),) if role else ())
        return role


ROLES = FakeAuthorizer({"dev": Role.DEVELOPER, "ann": Role.APPROVER, "bob": Role.APPROVER,
                        "root": Role.ADMIN})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timed_store(db_url: str, clock: ManualClock) -> Iterator[MetadataStore]:
    """A migrated store on each backend whose clock the test moves by hand."""
    opened = MetadataStore.open(db_url, clock=clock, check_schema=False)
    opened.upgrade()
    with opened.write("trainer") as uow:
        create_version(uow, NewModelVersion("fraud", DIGEST, "skops"))
        create_version(uow, NewModelVersion("fraud", DIGEST, "skops"))
    try:
        yield opened
    finally:
        opened.close()


def _as(store: MetadataStore, actor: str, authorizer: FakeAuthorizer = ROLES,
        requirement: ApprovalRequirement | None = None) -> ApprovalService:
    return ApprovalService(store, authorizer, actor, requirement)


def _ask(store: MetadataStore, actor: str = "dev", target: str | None = "production",
         version: int = 1, gate: str = "alias", expires_in: timedelta | None = None,
         ) -> ApprovalRequest:
    return _as(store, actor).request("fraud", version, gate, target, "ready for production",
                                     expires_in)


def _ask_needing(store: MetadataStore, requirement: ApprovalRequirement,
                 target: str | None = "production", expires_in: timedelta | None = None,
                 ) -> ApprovalRequest:
    return _as(store, "dev", requirement=requirement).request(
        "fraud", 1, "alias", target, "ready for production", expires_in)


def _needs(count: int, expiry: timedelta | None = None) -> ApprovalRequirement:
    return lambda model, gate, target: (count, expiry)


def test_request_is_pending_with_one_approval_and_seven_days_by_default(
        timed_store: MetadataStore, clock: ManualClock) -> None:
    made = _ask(timed_store)
    assert (made.status, made.required, made.requester) == (ApprovalStatus.PENDING, 1, "dev")
    assert made.expires_at == clock.now() + timedelta(days=7)
    assert len(made.id) == 32 and made.votes == ()
    assert _as(timed_store, "ann").get(made.id) == made


def test_requirement_sets_count_and_expiry_and_a_zero_count_still_needs_one(
        timed_store: MetadataStore, clock: ManualClock) -> None:
    made = _ask_needing(timed_store, _needs(3, timedelta(days=2)))
    assert (made.required, made.expires_at) == (3, clock.now() + timedelta(days=2))
    other = _ask_needing(timed_store, _needs(0, timedelta(days=2)), "staging",
                         timedelta(hours=5))
    assert (other.required, other.expires_at) == (1, clock.now() + timedelta(hours=5))
    capped = _ask_needing(timed_store, _needs(1, timedelta(days=900)), "archived")
    assert capped.expires_at == clock.now() + timedelta(days=365)


def test_requester_cannot_approve_or_reject_their_own_request_four_eyes(
        timed_store: MetadataStore) -> None:
    made = _ask(timed_store, actor="root")
    own = _as(timed_store, "root")
    with pytest.raises(PolicyDeniedError, match="four-eyes.*'root'"):
        own.approve(made.id)
    with pytest.raises(PolicyDeniedError, match="four-eyes.*'root'"):
        own.reject(made.id, "no")
    assert own.get(made.id).votes == ()


def test_approving_needs_the_approve_permission_once_roles_are_enforced(
        timed_store: MetadataStore) -> None:
    made = _ask(timed_store)
    with pytest.raises(AccessDeniedError, match="'root2' may not approve"):
        _as(timed_store, "root2", FakeAuthorizer({"dev2": Role.DEVELOPER,
                                                  "root": Role.ADMIN})).approve(made.id)
    with pytest.raises(AccessDeniedError):
        _as(timed_store, "dev2", FakeAuthorizer({"dev2": Role.DEVELOPER})).approve(made.id)
    with pytest.raises(AccessDeniedError, match="'ann' may not write"):
        _as(timed_store, "ann").request("fraud", 1, "deploy", "prod", "ship it")
    approved = _as(timed_store, "ann").approve(made.id, "looks good")
    assert approved.status is ApprovalStatus.APPROVED
    [vote] = approved.votes
    assert (vote.approver, vote.verdict, vote.role, vote.comment) == (
        "ann", Verdict.APPROVE, Role.APPROVER, "looks good")


def test_open_workspace_lets_anyone_but_the_requester_approve_as_admin(
        timed_store: MetadataStore) -> None:
    made = _as(timed_store, "a", FakeAuthorizer()).request("fraud", 2, "deploy", "prod", "go")
    with pytest.raises(InvalidArgumentError) as caught:
        _as(timed_store, "b", FakeAuthorizer()).approve(made.id, "x" * 2001)
    assert caught.value.field == "comment"
    approved = _as(timed_store, "b", FakeAuthorizer()).approve(made.id, "   ")
    assert approved.status is ApprovalStatus.APPROVED and approved.votes[0].role is Role.ADMIN
    assert approved.votes[0].comment == ""


def test_two_required_approvals_need_two_distinct_approvers(
        timed_store: MetadataStore) -> None:
    made = _ask_needing(timed_store, _needs(2))
    first = _as(timed_store, "ann").approve(made.id)
    assert first.status is ApprovalStatus.PENDING and first.approvers() == ("ann",)
    with pytest.raises(ConflictError, match="'ann' has already voted"):
        _as(timed_store, "ann").approve(made.id)
    second = _as(timed_store, "bob").approve(made.id)
    assert second.status is ApprovalStatus.APPROVED and second.approvers() == ("ann", "bob")
    assert _as(timed_store, "dev").get(made.id) == second


def test_racing_approvers_on_the_last_vote_both_count(timed_store: MetadataStore) -> None:
    made = _ask_needing(timed_store, _needs(2))
    start = threading.Barrier(2)

    def vote(actor: str) -> ApprovalRequest:
        start.wait()
        return _as(timed_store, actor).approve(made.id)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(vote, ["ann", "bob"]))
    assert sorted(r.status for r in results) == [ApprovalStatus.APPROVED, ApprovalStatus.PENDING]
    final = _as(timed_store, "dev").get(made.id)
    assert final.status is ApprovalStatus.APPROVED and len(final.votes) == 2


def test_expired_requests_are_listed_as_expired_and_refuse_votes(
        timed_store: MetadataStore, clock: ManualClock) -> None:
    pending = _ask(timed_store, expires_in=timedelta(hours=1))
    approved = _ask(timed_store, target="staging", expires_in=timedelta(hours=1))
    _as(timed_store, "ann").approve(approved.id)
    fresh = _ask(timed_store, gate="deploy", target="prod")
    clock.advance(timedelta(hours=1))
    reader = _as(timed_store, "dev")
    assert {r.id for r in reader.list(status="expired")} == {pending.id, approved.id}
    assert [r.id for r in reader.list(status=ApprovalStatus.PENDING)] == [fresh.id]
    assert reader.list(status="approved") == []
    assert reader.get(approved.id).status is ApprovalStatus.EXPIRED
    with pytest.raises(InvalidTransitionError, match="from 'expired' to 'approved'"):
        _as(timed_store, "bob").approve(pending.id)
    with pytest.raises(InvalidTransitionError, match="from 'expired' to 'withdrawn'"):
        reader.withdraw(pending.id)
    again = _ask(timed_store)  # an expired request no longer blocks a new one
    assert again.status is ApprovalStatus.PENDING


def test_reject_closes_the_request_and_needs_a_comment(timed_store: MetadataStore) -> None:
    made = _ask_needing(timed_store, _needs(2))
    with pytest.raises(InvalidArgumentError, match="invalid comment") as caught:
        _as(timed_store, "ann").reject(made.id, "  ")
    assert caught.value.field == "comment"
    rejected = _as(timed_store, "ann").reject(made.id, "recall on EU is too low")
    assert rejected.status is ApprovalStatus.REJECTED
    assert rejected.votes[0].verdict is Verdict.REJECT
    with pytest.raises(InvalidTransitionError, match="from 'rejected' to 'approved'"):
        _as(timed_store, "bob").approve(made.id)
    assert _ask(timed_store).status is ApprovalStatus.PENDING  # closed: a new one may be made


def test_duplicate_open_request_is_refused_naming_the_open_one(
        timed_store: MetadataStore) -> None:
    made = _ask(timed_store)
    with pytest.raises(AlreadyExistsError, match=made.id):
        _ask(timed_store, actor="root")
    approved_id = _as(timed_store, "ann").approve(made.id).id
    with pytest.raises(AlreadyExistsError, match=approved_id):
        _ask(timed_store)
    assert _ask(timed_store, target="staging").target == "staging"
    assert _ask(timed_store, gate="trust", target=None).target is None
    with pytest.raises(AlreadyExistsError):
        _ask(timed_store, gate="trust", target=None)
    assert _ask(timed_store, version=2).version == 2


def test_only_the_requester_withdraws(timed_store: MetadataStore) -> None:
    made = _ask(timed_store)
    with pytest.raises(PolicyDeniedError, match="only the requester 'dev'"):
        _as(timed_store, "root").withdraw(made.id)
    withdrawn = _as(timed_store, "dev").withdraw(made.id)
    assert withdrawn.status is ApprovalStatus.WITHDRAWN
    with pytest.raises(InvalidTransitionError, match="from 'withdrawn' to 'withdrawn'"):
        _as(timed_store, "dev").withdraw(made.id)
    with pytest.raises(InvalidTransitionError):
        _as(timed_store, "ann").approve(made.id)
    assert _as(timed_store, "dev").list(status="withdrawn")[0].id == made.id


@pytest.mark.parametrize(("change", "field"), [
    ({"gate": "promote"}, "gate"),
    ({"reason": "   "}, "reason"),
    ({"reason": "x" * 2001}, "reason"),
    ({"expires_in": timedelta(days=366)}, "expires_in"),
    ({"expires_in": timedelta(0)}, "expires_in"),
    ({"target": ""}, "target"),
    ({"version": 0}, "version"),
    ({"model": "no such/name"}, "model"),
])
def test_bad_request_input_names_its_field(timed_store: MetadataStore, change: dict[str, Any],
                                           field: str) -> None:
    arguments: dict[str, Any] = {"model": "fraud", "version": 1, "gate": "alias",
                                    "target": "production", "reason": "ready", **change}
    with pytest.raises(InvalidArgumentError) as caught:
        _as(timed_store, "dev").request(**arguments)
    assert caught.value.field == field
    assert _as(timed_store, "dev").list() == []


def test_bad_gate_lists_the_gates_and_bad_status_lists_the_statuses(
        timed_store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="register, alias, delete_alias, status"):
        _ask(timed_store, gate="promote")
    with pytest.raises(InvalidArgumentError, match="pending, approved") as caught:
        _as(timed_store, "dev").list(status="open")
    assert caught.value.field == "status"


def test_unknown_version_and_unknown_request_are_not_found(timed_store: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match="models:/fraud/9"):
        _ask(timed_store, version=9)
    with pytest.raises(NotFoundError, match="approval request 'nope'"):
        _as(timed_store, "ann").approve("nope")
    with pytest.raises(NotFoundError, match="approval request 'nope'"):
        _as(timed_store, "dev").withdraw("nope")
    with pytest.raises(NotFoundError):
        _as(timed_store, "dev").get("nope")


def test_every_change_is_audited_and_announced(timed_store: MetadataStore) -> None:
    made = _ask_needing(timed_store, _needs(2))
    _as(timed_store, "ann").approve(made.id, "fine")
    _as(timed_store, "bob").reject(made.id, "not yet")
    other = _ask(timed_store, gate="deploy", target="prod")
    _as(timed_store, "dev").withdraw(other.id)
    entries = timed_store.audit.entries(AuditFilter(subject=f"approval:{made.id}",
                                                    newest_first=False))
    assert [(e.action, e.actor) for e in entries] == [
        ("governance.approval_requested", "dev"), ("governance.approval_approved", "ann"),
        ("governance.approval_rejected", "bob")]
    requested, approved, rejected = entries
    assert requested.before is None and requested.after is not None
    assert (requested.after["status"], requested.after["votes"]) == ("pending", 0)
    assert requested.after["reason"] == "ready for production"
    assert approved.before == {"status": "pending", "votes": 0, "approvals": 0, "required": 2}
    assert approved.after is not None and approved.after["votes"] == 1
    assert approved.after["vote"]["role"] == "approver"
    assert rejected.after is not None and rejected.after["status"] == "rejected"
    withdrawn = timed_store.audit.entries(AuditFilter(subject=f"approval:{other.id}"))[0]
    assert withdrawn.action == "governance.approval_withdrawn"
    events = timed_store.events.read_after(0, 100, [EventType.APPROVAL_CHANGED])
    assert [(e.subject, e.payload["status"]) for e in events] == [
        (f"approval:{made.id}", "pending"), (f"approval:{made.id}", "pending"),
        (f"approval:{made.id}", "rejected"), (f"approval:{other.id}", "pending"),
        (f"approval:{other.id}", "withdrawn")]
    assert {k: events[0].payload[k] for k in ("id", "model", "version", "gate", "target")} == {
        "id": made.id, "model": "fraud", "version": 1, "gate": "alias", "target": "production"}


def test_for_action_returns_every_request_of_that_action_newest_first_with_votes(
        timed_store: MetadataStore, clock: ManualClock) -> None:
    first = _ask(timed_store)
    _as(timed_store, "ann").reject(first.id, "no")
    clock.advance(timedelta(minutes=1))
    second = _ask(timed_store)
    _as(timed_store, "ann").approve(second.id)
    _ask(timed_store, target="staging")
    _ask(timed_store, version=2)
    found = _as(timed_store, "dev").for_action("fraud", 1, "alias", "production")
    assert [(r.id, r.status) for r in found] == [
        (second.id, ApprovalStatus.APPROVED), (first.id, ApprovalStatus.REJECTED)]
    assert [v.approver for v in found[0].votes] == ["ann"]
    assert _as(timed_store, "dev").for_action("fraud", 1, "deploy", None) == []
    assert {r.model for r in _as(timed_store, "dev").list(model="fraud")} == {"fraud"}
    assert _as(timed_store, "dev").list(model="other") == []


def test_real_access_control_lets_an_approver_decide_and_refuses_a_developer(
        timed_store: MetadataStore) -> None:
    access = AccessControl(timed_store)
    access.grant("root", "root", Role.ADMIN)
    access.grant("root", "dev", Role.DEVELOPER, "fraud*")
    access.grant("root", "dev2", Role.DEVELOPER)
    access.grant("root", "ann", Role.APPROVER, "fraud")
    made = ApprovalService(timed_store, access, "dev").request(
        "fraud", 1, "deploy", "production", "ship it")
    with pytest.raises(AccessDeniedError, match="'dev2' may not approve on model 'fraud'"):
        ApprovalService(timed_store, access, "dev2").approve(made.id)
    approved = ApprovalService(timed_store, access, "ann").approve(made.id)
    assert approved.status is ApprovalStatus.APPROVED and approved.votes[0].role is Role.APPROVER


# -- the policy's expiry bounds the requester's, targets match the gate, listing is bounded ---


def test_a_requested_lifetime_beyond_the_policys_expires_after_is_cut_to_it_and_recorded(
        timed_store: MetadataStore, clock: ManualClock) -> None:
    week = _needs(2, timedelta(days=7))
    clamped = _ask_needing(timed_store, week, expires_in=timedelta(days=365))
    assert clamped.expires_at == clock.now() + timedelta(days=7)
    assert clamped.details == {"policy_expires_after": "1w", "expires_in_asked": "365d",
                               "expiry_clamped": True}
    assert _as(timed_store, "ann").get(clamped.id).details == clamped.details
    shorter = _ask_needing(timed_store, week, "staging", timedelta(days=1))
    assert shorter.expires_at == clock.now() + timedelta(days=1)
    assert "expiry_clamped" not in shorter.details
    unbounded = _ask_needing(timed_store, _needs(1), "archived", timedelta(days=30))
    assert unbounded.expires_at == clock.now() + timedelta(days=30)
    assert unbounded.details == {"expires_in_asked": "30d"}


@pytest.mark.parametrize("gate", ["alias", "delete_alias", "status", "deploy", "rollout_step"])
def test_a_request_without_a_target_is_refused_for_a_gate_that_moves_something(
        timed_store: MetadataStore, gate: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"required for gate '{gate}'") as caught:
        _ask(timed_store, gate=gate, target=None)
    assert caught.value.field == "target"
    assert _as(timed_store, "dev").list() == []


def test_trust_takes_no_target_and_register_cannot_be_approved_at_all(
        timed_store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="'trust' has no target") as caught:
        _ask(timed_store, gate="trust", target="production")
    assert caught.value.field == "target"
    for target in (None, "production"):
        with pytest.raises(InvalidArgumentError, match="'register' cannot be approved") as raised:
            _ask(timed_store, gate="register", target=target)
        assert raised.value.field == "gate"
    assert _as(timed_store, "dev").list() == []
    assert _ask(timed_store, gate="trust", target=None).target is None


def test_list_returns_at_most_limit_newest_requests_and_refuses_a_bad_limit(
        timed_store: MetadataStore, clock: ManualClock) -> None:
    made = []
    for target in ("a", "b", "c"):
        made.append(_ask(timed_store, target=target))
        clock.advance(timedelta(seconds=1))
    reader = _as(timed_store, "dev")
    assert [r.target for r in reader.list(limit=2)] == ["c", "b"]
    assert len(reader.list()) == 3 and len(reader.list(limit=1000)) == 3
    for bad in (0, -1, 1001, True, "5"):
        with pytest.raises(InvalidArgumentError, match="1 to 1000") as caught:
            reader.list(limit=bad)  # type: ignore[arg-type]
        assert caught.value.field == "limit"


@pytest.mark.parametrize(("value", "problem"), [
    ("   ", "must not be blank"), (None, "must not be blank"), ("x" * 11, "at most 10"),
])
def test_validate_text_refuses_blank_missing_and_long_text_naming_the_field(
        value: Any, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem) as caught:
        validate_text(value, "reason", 10)
    assert caught.value.field == "reason"


def test_validate_text_returns_the_text_stripped() -> None:
    assert validate_text("  ok \n", "reason", 10) == "ok"
