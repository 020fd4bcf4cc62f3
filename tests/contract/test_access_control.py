"""Identities, roles and the one authorisation function, on every backend.

An open workspace lets everyone act as admin; the first grant (admin on ``*``) turns
enforcement on; roles permit what ``ROLE_PERMISSIONS`` says, within their model pattern; a
disabled identity holds nothing; a workspace keeps an admin; every change is audited once.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from loopline.app import Workspace
from loopline.core.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.events import EventType
from loopline.core.governance import IdentityKind, Permission, Role
from loopline.governance.access import AccessControl
from loopline.store import AuditFilter, MetadataStore


@pytest.fixture
def access(store: MetadataStore) -> AccessControl:
    return AccessControl(store)


@pytest.fixture
def enforced(access: AccessControl) -> AccessControl:
    """A workspace where ``root`` is admin, ``vic`` viewer, ``dev`` developer on fraud-*,
    ``ada`` approver."""
    access.grant("root", "root", Role.ADMIN)
    access.grant("root", "vic", Role.VIEWER)
    access.grant("root", "dev", Role.DEVELOPER, "fraud-*")
    access.grant("root", "ada", Role.APPROVER)
    return access


def _actions(store: MetadataStore, action: str) -> list[Any]:
    return store.audit.entries(AuditFilter(action=action))


def test_open_workspace_allows_everything_as_admin(access: AccessControl) -> None:
    assert not access.enforced()
    for permission in Permission:
        assert access.authorize("anyone", permission, "churn") is Role.ADMIN
        assert access.authorize("anyone", permission) is Role.ADMIN
    assert access.roles_of("anyone") == frozenset({Role.ADMIN})


@pytest.mark.parametrize(("role", "models"), [(Role.DEVELOPER, "*"), (Role.ADMIN, "fraud-*")])
def test_first_grant_is_refused_unless_admin_on_every_model(
        access: AccessControl, store: MetadataStore, role: Role, models: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        access.grant("root", "root", role, models)
    assert caught.value.field == "role" and "admin" in caught.value.problem
    assert not access.enforced() and access.identities() == []
    assert _actions(store, "governance.role_granted") == []


def test_first_grant_enforces_roles_and_refuses_a_stranger(enforced: AccessControl) -> None:
    assert enforced.enforced()
    with pytest.raises(AccessDeniedError) as caught:
        enforced.authorize("mallory", Permission.WRITE, "churn")
    error = caught.value
    assert (error.actor, error.permission, error.resource, error.roles) == (
        "mallory", "write", "model 'churn'", ())
    assert "'mallory' may not write on model 'churn'" in error.message


def test_viewer_reads_but_cannot_write(enforced: AccessControl) -> None:
    assert enforced.authorize("vic", Permission.READ, "churn") is Role.VIEWER
    assert enforced.authorize("vic", Permission.READ) is Role.VIEWER
    with pytest.raises(AccessDeniedError) as caught:
        enforced.authorize("vic", Permission.WRITE, "churn")
    assert caught.value.roles == ("viewer",)


def test_developer_scoped_to_a_pattern_writes_only_matching_models(
        enforced: AccessControl) -> None:
    assert enforced.authorize("dev", Permission.WRITE, "fraud-v2") is Role.DEVELOPER
    assert enforced.roles_of("dev", "fraud-v2") == frozenset({Role.DEVELOPER})
    with pytest.raises(AccessDeniedError) as caught:
        enforced.authorize("dev", Permission.WRITE, "churn")
    assert caught.value.roles == ("developer on fraud-*",)
    with pytest.raises(AccessDeniedError):  # workspace-wide actions need a binding on '*'
        enforced.authorize("dev", Permission.WRITE)


def test_approver_approves_but_cannot_write(enforced: AccessControl) -> None:
    assert enforced.authorize("ada", Permission.APPROVE, "churn") is Role.APPROVER
    with pytest.raises(AccessDeniedError):
        enforced.authorize("ada", Permission.WRITE, "churn")


def test_strongest_permitting_role_is_reported_when_several_are_held(
        enforced: AccessControl) -> None:
    enforced.grant("root", "ada", Role.DEVELOPER)
    assert enforced.authorize("ada", Permission.READ) is Role.DEVELOPER
    assert enforced.authorize("ada", Permission.APPROVE) is Role.APPROVER
    assert enforced.authorize("root", Permission.READ) is Role.ADMIN


def test_non_admin_cannot_manage_roles(enforced: AccessControl) -> None:
    with pytest.raises(AccessDeniedError) as caught:
        enforced.grant("dev", "dev", Role.ADMIN)
    assert caught.value.permission == "admin"
    with pytest.raises(AccessDeniedError):
        enforced.revoke("vic", "dev", Role.DEVELOPER, "fraud-*")
    with pytest.raises(AccessDeniedError):
        enforced.add_identity("ada", "ci-bot", IdentityKind.SERVICE)


def test_disabled_identity_is_refused_what_its_roles_permit(enforced: AccessControl,
                                                           store: MetadataStore) -> None:
    enforced.grant("root", "ann", Role.ADMIN)
    disabled = enforced.disable("ann", "vic")
    assert disabled.disabled
    with pytest.raises(AccessDeniedError) as caught:
        enforced.authorize("vic", Permission.READ)
    assert caught.value.roles == ("viewer (identity disabled)",)
    assert enforced.roles_of("vic") == frozenset()
    assert enforced.disable("root", "vic") == disabled  # already disabled: nothing recorded
    entries = _actions(store, "governance.identity_disabled")
    assert [(e.actor, e.subject, e.before, e.after) for e in entries] == [
        ("ann", "identity:vic", {"disabled": False}, {"disabled": True})]


def test_an_enabled_identity_holds_its_roles_again(enforced: AccessControl,
                                                   store: MetadataStore) -> None:
    enforced.disable("root", "vic")
    with pytest.raises(AccessDeniedError):
        enforced.enable("vic", "vic")  # a viewer cannot re-enable anyone, itself included
    assert not enforced.enable("root", "vic").disabled
    assert enforced.authorize("vic", Permission.READ) is Role.VIEWER
    assert enforced.enable("root", "vic").disabled is False  # already enabled: no entry
    assert len(_actions(store, "governance.identity_enabled")) == 1
    with pytest.raises(NotFoundError):
        enforced.enable("root", "nobody")


def test_last_admin_cannot_disable_themselves(enforced: AccessControl) -> None:
    with pytest.raises(ConflictError, match="last enabled admin"):
        enforced.disable("root", "root")
    enforced.grant("root", "ann", Role.ADMIN)
    assert enforced.disable("root", "root").disabled
    with pytest.raises(AccessDeniedError):
        enforced.authorize("root", Permission.ADMIN)


def test_revoking_the_last_admin_is_refused_while_other_bindings_remain(
        enforced: AccessControl, store: MetadataStore) -> None:
    with pytest.raises(ConflictError, match="must keep one"):
        enforced.revoke("root", "root", Role.ADMIN)
    assert enforced.authorize("root", Permission.ADMIN) is Role.ADMIN
    for subject, role, models in (("vic", "viewer", "*"), ("dev", "developer", "fraud-*"),
                                  ("ada", "approver", "*")):
        enforced.revoke("root", subject, role, models)
    enforced.revoke("root", "root", Role.ADMIN)  # the very last binding: open again
    assert not enforced.enforced()
    assert len(_actions(store, "governance.role_revoked")) == 4


def test_revoking_a_binding_that_does_not_exist_is_not_found(enforced: AccessControl) -> None:
    with pytest.raises(NotFoundError) as caught:
        enforced.revoke("root", "dev", Role.DEVELOPER)  # it is bound on fraud-*, not '*'
    assert caught.value.kind == "role binding"
    assert "dev holds developer on fraud-*" in caught.value.message


def test_granting_an_existing_binding_is_idempotent_and_audited_once(
        access: AccessControl, store: MetadataStore) -> None:
    first = access.grant("root", "root", Role.ADMIN)
    again = access.grant("root", "root", "admin", "*")
    assert again == first and access.bindings() == [first]
    granted = _actions(store, "governance.role_granted")
    assert [(e.actor, e.subject, e.after) for e in granted] == [
        ("root", "identity:root", {"subject": "root", "role": "admin", "models": "*"})]
    assert len(_actions(store, "governance.identity_added")) == 1
    events = store.events.read_after(0, 100, [EventType.ROLES_CHANGED])
    assert [e.payload["change"] for e in events] == ["identity_added", "role_granted"]


def test_grant_creates_a_missing_identity_of_the_kind_given(enforced: AccessControl) -> None:
    enforced.grant("root", "ci-bot", Role.DEVELOPER, kind=IdentityKind.SERVICE)
    kinds = {i.name: i.kind for i in enforced.identities()}
    assert kinds["ci-bot"] is IdentityKind.SERVICE and kinds["vic"] is IdentityKind.USER
    assert [b.role for b in enforced.bindings("ci-bot")] == [Role.DEVELOPER]


def test_added_identity_holds_nothing_and_cannot_be_added_twice(
        enforced: AccessControl) -> None:
    added = enforced.add_identity("root", "sched", "service", "the nightly scheduler")
    assert (added.kind, added.description, added.created_by) == (
        IdentityKind.SERVICE, "the nightly scheduler", "root")
    assert enforced.bindings("sched") == []
    with pytest.raises(AlreadyExistsError):
        enforced.add_identity("root", "sched", "service")
    with pytest.raises(NotFoundError):
        enforced.disable("root", "nobody")


@pytest.mark.parametrize(("call", "field"), [
    (lambda a: a.grant("root", "", "admin"), "subject"),
    (lambda a: a.grant("root", "-x", "admin"), "subject"),
    (lambda a: a.grant("root", "ann smith", "admin"), "subject"),
    (lambda a: a.grant("root", "x" * 257, "admin"), "subject"),
    (lambda a: a.grant("root", "ann", "owner"), "role"),
    (lambda a: a.grant("root", "ann", "admin", ""), "models"),
    (lambda a: a.grant("root", "ann", "admin", "a/b"), "models"),
    (lambda a: a.grant("root", "ann", "admin", "x" * 257), "models"),
    (lambda a: a.grant("root", "ann", "admin", kind="robot"), "kind"),
    (lambda a: a.revoke("root", "ann", "king"), "role"),
    (lambda a: a.add_identity("root", "ann", description="x" * 3000), "description"),
    (lambda a: a.authorize("ann", "fly"), "permission"),
])
def test_bad_inputs_are_refused_naming_their_field(access: AccessControl, call: Any,
                                                  field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        call(access)
    assert caught.value.field == field
    assert access.identities() == []


def test_valid_names_and_patterns_are_accepted(access: AccessControl) -> None:
    access.grant("root", "ann.smith+ml@example.com", "admin")
    access.grant("ann.smith+ml@example.com", "ci_bot-1", "developer", "fraud-[ab]?.*")
    assert access.authorize("ci_bot-1", Permission.WRITE, "fraud-a1.x") is Role.DEVELOPER


def test_concurrent_first_grants_leave_one_consistent_admin(access: AccessControl) -> None:
    start = threading.Barrier(2)
    outcomes: dict[str, BaseException | None] = {}

    def first_grant(name: str) -> None:
        start.wait()
        try:
            access.grant(name, name, Role.ADMIN)
            outcomes[name] = None
        except AccessDeniedError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=first_grant, args=(n,)) for n in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, outcome in outcomes.items() if outcome is None]
    assert len(winners) == 1 and len(outcomes) == 2
    assert [(b.subject, b.role, b.models) for b in access.bindings()] == [
        (winners[0], Role.ADMIN, "*")]


def test_workspace_wires_access_control_to_its_store(ws: Workspace) -> None:
    assert ws.access.authorize(ws.actor, Permission.ADMIN) is Role.ADMIN
    ws.access.grant(ws.actor, ws.actor, Role.ADMIN)
    assert ws.access.enforced()
    assert ws.access.roles_of(ws.actor, "any-model") == frozenset({Role.ADMIN})
