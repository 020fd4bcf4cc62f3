"""Governance over the API on each backend: approvals, policies, users and roles, legal holds,
retention and the report; each change audited as the token's user, each listing equal to the
local workspace's, and bad input answered 404, 409 or 422 naming the field."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from api_support import ApiServer

from loopline.app import Workspace
from loopline.client.governance import (
    RemoteGovernanceReport,
    RemoteLegalHolds,
    RemoteRetention,
)
from loopline.core.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.core.governance import ApprovalStatus, IdentityKind, Role
from loopline.core.models import ModelVersion, NewModelVersion
from loopline.store import AuditFilter

UNKNOWN = "0123456789abcdef0123456789abcdef"
GUARD = textwrap.dedent("""\
    kind: gate_policy
    name: prod-guard
    applies_to: {models: ["fraud"], gates: [alias], targets: [production]}
    rules:
      - {id: one-approver, kind: approvals, count: 1, expires_after: 2d}
    """)
OWNER = textwrap.dedent("""\
    kind: gate_policy
    name: needs-owner
    applies_to: {gates: [register]}
    rules:
      - {id: owner, kind: required_metadata, fields: [owner]}
    """)
RETENTION = textwrap.dedent("""\
    kind: retention
    name: default
    classes:
      prediction_log: {max_age: 90d}
      run_logs: {max_age: 30d}
    """)


def _version(ws: Workspace, name: str = "fraud", **fields: Any) -> ModelVersion:
    """Register a version through the registry with a small fresh artifact."""
    digest = ws.artifacts.put_bytes(f"{name} {sorted(fields.items())!r}".encode()).digest
    return ws.models.record_version(
        NewModelVersion(name=name, artifact_digest=digest, flavor="python", **fields), ())


def _remote(api: ApiServer, role: str, name: str, kind: type[Any]) -> Any:
    """Return ``client.<name>``; until ``Client`` wires it, the service over its transport."""
    client = api.client(role)
    found = getattr(client, name, None)
    return found if found is not None else kind(client._http)


def _holds(api: ApiServer, role: str) -> RemoteLegalHolds:
    found: RemoteLegalHolds = _remote(api, role, "legal_holds", RemoteLegalHolds)
    return found


def _retention(api: ApiServer, role: str) -> RemoteRetention:
    found: RemoteRetention = _remote(api, role, "retention", RemoteRetention)
    return found


def _report(api: ApiServer, role: str) -> RemoteGovernanceReport:
    found: RemoteGovernanceReport = _remote(api, role, "governance_report",
                                            RemoteGovernanceReport)
    return found


def _actors(ws: Workspace, action: str) -> list[str]:
    return [e.actor for e in ws.audit.entries(AuditFilter(action=action, newest_first=False))]


def _error(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    found: dict[str, Any] = answer.json()["error"]
    return found


# -- approvals -------------------------------------------------------------------------------


def test_a_developer_requests_and_an_approver_approves_each_audited_as_themselves(
        api: ApiServer) -> None:
    ws = api.workspace
    version = _version(ws)
    made = api.client("developer").approvals.request(
        "fraud", version.version, "alias", "production", "ship it", timedelta(days=2))
    assert (made.requester, made.status, made.target) == ("dev", ApprovalStatus.PENDING,
                                                          "production")
    assert made.expires_at - made.created_at == timedelta(days=2)
    done = api.client("approver").approvals.approve(made.id, "reviewed")
    assert done.status is ApprovalStatus.APPROVED
    assert [(v.approver, v.comment, v.role) for v in done.votes] == [
        ("app", "reviewed", Role.ADMIN)]  # open workspace: the user holds admin, capped
    assert _actors(ws, "governance.approval_requested") == ["dev"]
    assert _actors(ws, "governance.approval_approved") == ["app"]
    remote = api.client("viewer").approvals
    assert remote.get(made.id) == ws.approvals.get(made.id) == done
    assert remote.list() == ws.approvals.list() == [done]
    assert remote.list("approved", "fraud") == ws.approvals.list("approved", "fraud")
    assert remote.list("pending") == [] and remote.list(model="other") == []
    assert remote.for_action("fraud", version.version, "alias", "production") == \
        ws.approvals.for_action("fraud", version.version, "alias", "production") == [done]


def test_deciding_needs_an_approver_token_and_requesting_a_writer_token(
        api: ApiServer) -> None:
    version = _version(api.workspace)
    made = api.client("developer").approvals.request("fraud", version.version, "alias",
                                                     "production", "ship it")
    answer = api.http("developer").post(f"/api/v1/approvals/{made.id}/approve",
                                        json={"comment": "mine"})
    assert _error(answer, 403)["code"] == "access_denied"
    with pytest.raises(AccessDeniedError):
        api.client("approver").approvals.request("fraud", version.version, "status",
                                                 "production", "promote")
    with pytest.raises(AccessDeniedError):
        api.client("viewer").approvals.reject(made.id, "no")
    assert api.workspace.approvals.get(made.id).votes == ()


def test_approving_twice_is_a_conflict_and_an_unknown_request_is_not_found(
        api: ApiServer) -> None:
    version = _version(api.workspace)
    made = api.client("developer").approvals.request("fraud", version.version, "alias",
                                                     "production", "ship it")
    approver = api.http("approver")
    assert approver.post(f"/api/v1/approvals/{made.id}/approve").status_code == 200  # no note
    again = approver.post(f"/api/v1/approvals/{made.id}/approve", json={})
    assert _error(again, 409)["code"] == "conflict"
    missing = approver.post(f"/api/v1/approvals/{UNKNOWN}/approve", json={})
    assert _error(missing, 404)["code"] == "not_found"
    assert _error(api.http("viewer").get(f"/api/v1/approvals/{UNKNOWN}"), 404)
    with pytest.raises(NotFoundError):
        api.client("developer").approvals.withdraw(UNKNOWN)


def test_four_eyes_withdrawal_and_closed_requests_are_refused_with_their_status(
        api: ApiServer) -> None:
    version = _version(api.workspace)
    made = api.client("admin").approvals.request("fraud", version.version, "alias",
                                                 "production", "ship it")
    with pytest.raises(PolicyDeniedError, match="four-eyes"):
        api.client("admin").approvals.approve(made.id)
    with pytest.raises(PolicyDeniedError, match="only the requester"):
        api.client("developer").approvals.withdraw(made.id)
    withdrawn = api.client("admin").approvals.withdraw(made.id)
    assert withdrawn.status is ApprovalStatus.WITHDRAWN
    assert _actors(api.workspace, "governance.approval_withdrawn") == ["ada"]
    with pytest.raises(InvalidTransitionError):
        api.client("approver").approvals.reject(made.id, "too late")
    blank = api.http("approver").post(f"/api/v1/approvals/{made.id}/reject", json={})
    assert _error(blank, 422)["field"] == "comment"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"gate": "register", "target": None}, 422, "gate"),
    ({"gate": "teleport"}, 422, "gate"),
    ({"target": None}, 422, "target"),
    ({"expires_in": "soon"}, 422, "expires_in"),
    ({"expires_in": "400d"}, 422, "expires_in"),
    ({"reason": ""}, 422, "reason"),
    ({"model": "bad name"}, 422, "model"),
    ({"version": 0}, 422, "version"),
    ({"surprise": 1}, 422, "surprise"),
    ({"version": 9}, 404, None),
])
def test_a_bad_approval_request_is_refused_naming_the_field(
        api: ApiServer, body: dict[str, Any], status: int, field: str | None) -> None:
    _version(api.workspace)
    sent = {"model": "fraud", "version": 1, "gate": "alias", "target": "production",
            "reason": "ship it", **body}
    error = _error(api.http("developer").post("/api/v1/approvals", json=sent), status)
    assert error["field"] == field
    assert api.workspace.approvals.list() == []


def test_a_listing_refuses_an_unknown_status_and_a_limit_out_of_range(api: ApiServer) -> None:
    viewer = api.http("viewer")
    assert _error(viewer.get("/api/v1/approvals", params={"status": "maybe"}),
                  422)["field"] == "status"
    with pytest.raises(InvalidArgumentError) as raised:
        api.client("viewer").approvals.list(limit=0)
    assert raised.value.field == "limit"


NUL_TEXT: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("viewer", "GET", "/approvals", {"model": "fr\x00aud"}, "model"),
    ("viewer", "GET", "/approvals/for-action",
     {"model": "fraud\x00", "version": 1, "gate": "alias"}, "model"),
    ("viewer", "GET", "/approvals/for-action",
     {"model": "fraud", "version": 1, "gate": "alias", "target": "\x00"}, "target"),
    ("viewer", "GET", "/approvals/ab%00cd", {}, "request_id"),
    ("viewer", "GET", "/roles", {"subject": "ada\x00"}, "subject"),
    ("viewer", "GET", "/users/ad%00a/roles", {}, "subject"),
    ("viewer", "GET", "/users/ada/roles", {"model": "fraud\x00"}, "model"),
    ("admin", "DELETE", "/users/ada/roles/viewer", {"models": "*\x00"}, "models"),
    ("admin", "POST", "/legal-holds/ab%00cd/release", {}, "hold_id"),
]


def test_text_filters_and_path_names_holding_nul_are_refused_naming_them(
        api: ApiServer) -> None:
    for role, method, path, params, field in NUL_TEXT:
        answer = api.http(role).request(method, "/api/v1" + path, params=params)
        assert _error(answer, 422)["field"] == field, (path, params)


def test_a_listing_refuses_a_cursor_past_what_it_reaches(api: ApiServer) -> None:
    for path in ("/approvals", "/policies/history"):
        answer = api.http("viewer").get("/api/v1" + path, params={"cursor": "1000"})
        refused = _error(answer, 422)
        assert refused["field"] == "cursor" and "1000" in refused["message"], path


# -- policies --------------------------------------------------------------------------------


def test_an_admin_applies_policies_and_readers_see_the_same_set_as_the_workspace(
        api: ApiServer) -> None:
    ws = api.workspace
    remote = api.client("viewer").policies
    assert remote.current() is None and remote.active() == ws.policies.active()
    applied = api.client("admin").policies.apply("ada", {"guard.yaml": GUARD,
                                                         "retention.yml": RETENTION})
    assert applied.changed and applied.applied_by == "ada"
    assert _actors(ws, "governance.policy_applied") == ["ada"]
    assert remote.current() == ws.policies.current()
    assert remote.active() == ws.policies.active() == applied.policy_set
    answer = api.http("viewer").get("/api/v1/policies").json()
    assert answer["active"]["retention"] == "default"
    assert answer["active"]["gate_policies"][0]["rules"] == [
        {"id": "one-approver", "kind": "approvals"}]
    again = api.http("admin").post("/api/v1/policies", json={
        "files": {"guard.yaml": GUARD, "retention.yml": RETENTION}})
    assert again.status_code == 200 and again.json()["changed"] is False
    api.client("admin").policies.apply("ada", {"guard.yaml": GUARD})
    assert remote.history() == ws.policies.history()
    assert [r.files for r in remote.history(1)] == [{"guard.yaml": GUARD}]


def test_applying_policies_needs_an_admin_token(api: ApiServer) -> None:
    for role in ("developer", "approver", "viewer"):
        answer = api.http(role).post("/api/v1/policies", json={"files": {"g.yaml": GUARD}})
        assert _error(answer, 403)["code"] == "access_denied"
    with pytest.raises(AccessDeniedError):
        api.client("developer").policies.apply("dev", {"guard.yaml": GUARD})
    assert api.workspace.policies.current() is None


@pytest.mark.parametrize(("files", "field"), [
    ({"guard.yaml": "kind: gate_policy\nname: x\n"}, "guard.yaml:1: applies_to"),
    ({"guard.yaml": "kind: [unclosed\n"}, "guard.yaml:2"),
    ({}, "files"),
    ({"notes.txt": GUARD}, "files"),
    ({"../guard.yaml": GUARD}, "files"),
])
def test_malformed_policy_files_are_refused_naming_the_file_and_nothing_is_applied(
        api: ApiServer, files: dict[str, str], field: str) -> None:
    error = _error(api.http("admin").post("/api/v1/policies", json={"files": files}), 422)
    assert error["field"].startswith(field), error
    assert api.workspace.policies.current() is None


def test_an_empty_set_is_applied_only_when_asked_on_purpose(api: ApiServer) -> None:
    api.client("admin").policies.apply("ada", {"guard.yaml": GUARD})
    cleared = api.client("admin").policies.apply("ada", {}, allow_empty=True)
    assert cleared.policy_set.empty and api.workspace.policies.active().empty


def test_a_policy_folder_is_read_on_the_client_and_applied_on_the_server(
        api: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "guard.yaml").write_text(GUARD)
    (tmp_path / "README.md").write_text("not a policy")
    applied = api.client("admin").policies.apply_dir("ada", tmp_path)
    assert sorted(applied.policy_set.files) == ["guard.yaml"]
    assert api.workspace.policies.active() == applied.policy_set


# -- users and roles -------------------------------------------------------------------------


def _enforce(api: ApiServer) -> None:
    """Grant each token's user its role (ada admin first), turning enforcement on."""
    admin = api.client("admin").access
    for subject, role in (("ada", "admin"), ("dev", "developer"), ("app", "approver"),
                          ("vic", "viewer")):
        admin.grant("ada", subject, role)


def test_an_admin_grants_and_revokes_roles_and_listings_equal_the_workspaces(
        api: ApiServer) -> None:
    ws = api.workspace
    reader = api.client("viewer").access
    assert reader.enforced() is False and reader.roles_of("vic") == frozenset({Role.ADMIN})
    _enforce(api)
    assert reader.enforced() is True
    admin = api.client("admin").access
    scoped = admin.grant("ada", "ci-bot", Role.DEVELOPER, "fraud-*", IdentityKind.SERVICE)
    assert (scoped.subject, scoped.role, scoped.models, scoped.created_by) == (
        "ci-bot", Role.DEVELOPER, "fraud-*", "ada")
    assert reader.bindings() == ws.access.bindings()
    assert reader.bindings("ci-bot") == ws.access.bindings("ci-bot") == [scoped]
    assert reader.identities() == ws.access.identities()
    assert reader.roles_of("ci-bot", "fraud-eu") == frozenset({Role.DEVELOPER})
    assert reader.roles_of("ci-bot") == frozenset()
    users = api.http("viewer").get("/api/v1/users").json()["items"]
    assert {u["name"]: [b["role"] for b in u["bindings"]] for u in users}["ci-bot"] == [
        "developer"]
    admin.revoke("ada", "ci-bot", "developer", "fraud-*")
    assert ws.access.bindings("ci-bot") == []
    assert _actors(ws, "governance.role_granted") == ["ada"] * 5
    assert _actors(ws, "governance.role_revoked") == ["ada"]


def test_roles_are_managed_only_with_an_admin_token(api: ApiServer) -> None:
    _enforce(api)
    for role in ("developer", "approver", "viewer"):
        http = api.http(role)
        grant = http.post("/api/v1/users/eve/roles", json={"role": "admin"})
        assert _error(grant, 403)["code"] == "access_denied"
        revoke = http.delete("/api/v1/users/ada/roles/admin")
        assert _error(revoke, 403)["code"] == "access_denied"
    with pytest.raises(AccessDeniedError):
        api.client("developer").access.disable("dev", "ada")
    assert {b.subject for b in api.workspace.access.bindings()} == {"ada", "dev", "app", "vic"}


def test_role_changes_refuse_bad_input_unknown_bindings_and_losing_the_last_admin(
        api: ApiServer) -> None:
    admin = api.http("admin")
    bad_role = admin.post("/api/v1/users/dev/roles", json={"role": "boss"})
    assert _error(bad_role, 422)["field"] == "role"
    assert _error(admin.delete("/api/v1/users/dev/roles/boss"), 422)["field"] == "role"
    first = admin.post("/api/v1/users/dev/roles", json={"role": "developer"})
    assert _error(first, 422)["field"] == "role"  # the first grant must be admin on '*'
    bad_subject = admin.post("/api/v1/users/-x/roles", json={"role": "admin"})
    assert _error(bad_subject, 422)["field"] == "subject"
    bad_models = admin.post("/api/v1/users/ada/roles", json={"role": "admin", "models": "a b"})
    assert _error(bad_models, 422)["field"] == "models"
    _enforce(api)
    missing = admin.delete("/api/v1/users/dev/roles/admin")
    assert _error(missing, 404)["code"] == "not_found"
    with pytest.raises(ConflictError, match="no other enabled admin"):
        api.client("admin").access.revoke("ada", "ada", "admin")
    assert admin.delete("/api/v1/users/dev/roles/developer").status_code == 204


def test_identities_are_added_disabled_and_enabled_by_an_admin(api: ApiServer) -> None:
    ws = api.workspace
    access = api.client("admin").access
    added = access.add_identity("ada", "scheduler", "service", "runs nightly")
    assert (added.kind, added.created_by, added.description) == (
        IdentityKind.SERVICE, "ada", "runs nightly")
    with pytest.raises(AlreadyExistsError):
        access.add_identity("ada", "scheduler")
    assert access.disable("ada", "scheduler").disabled is True
    assert access.enable("ada", "scheduler").disabled is False
    with pytest.raises(NotFoundError):
        access.disable("ada", "nobody")
    assert _error(api.http("admin").post("/api/v1/users", json={"name": "x", "kind": "robot"}),
                  422)["field"] == "kind"
    assert _actors(ws, "governance.identity_added") == ["ada"]
    assert _actors(ws, "governance.identity_disabled") == ["ada"]
    assert _actors(ws, "governance.identity_enabled") == ["ada"]
    assert api.client("viewer").access.identities() == ws.access.identities()


def test_with_roles_enforced_a_token_acts_only_within_its_users_bindings(
        api: ApiServer) -> None:
    version = _version(api.workspace)
    admin = api.client("admin").access
    admin.grant("ada", "ada", "admin")
    admin.grant("ada", "dev", "developer", "churn-*")
    admin.grant("ada", "vic", "viewer", "fraud")
    with pytest.raises(AccessDeniedError, match="'dev' may not write"):
        api.client("developer").approvals.request("fraud", version.version, "alias",
                                                  "production", "ship it")
    made = api.client("admin").approvals.request("fraud", version.version, "alias",
                                                 "production", "ship it")
    assert api.client("viewer").approvals.list() == [made]  # vic may read model fraud
    assert api.client("developer").approvals.list() == []  # dev may not
    with pytest.raises(AccessDeniedError):
        api.client("developer").approvals.get(made.id)
    with pytest.raises(AccessDeniedError):
        api.client("approver").approvals.approve(made.id)  # app holds no binding
    with pytest.raises(AccessDeniedError):
        api.client("viewer").policies.current()  # reading policies needs read on '*'


# -- legal holds and retention ---------------------------------------------------------------


def test_an_admin_adds_and_releases_legal_holds_and_readers_list_them(api: ApiServer) -> None:
    ws = api.workspace
    holds = _holds(api, "admin")
    hold = holds.add("dataset_snapshots", "claims@*", "litigation 2031-17")
    assert hold.created_by == "ada" and hold.released_at is None
    assert _holds(api, "viewer").list() == ws.legal_holds.list() == [hold]
    released = holds.release(hold.id)
    assert released.released_by == "ada"
    assert _holds(api, "viewer").list() == []
    assert _holds(api, "viewer").list(active_only=False) == \
        ws.legal_holds.list(active_only=False) == [released]
    with pytest.raises(ConflictError, match="already released"):
        holds.release(hold.id)
    assert _actors(ws, "governance.legal_hold_added") == ["ada"]
    assert _actors(ws, "governance.legal_hold_released") == ["ada"]


def test_legal_holds_refuse_bad_input_unknown_ids_and_non_admin_tokens(
        api: ApiServer) -> None:
    admin = api.http("admin")
    bad_class = admin.post("/api/v1/legal-holds", json={
        "data_class": "emails", "ref": "*", "reason": "why"})
    assert _error(bad_class, 422)["field"] == "data_class"
    assert _error(admin.post("/api/v1/legal-holds", json={
        "data_class": "*", "ref": "*", "reason": " "}), 422)["field"] == "reason"
    assert _error(admin.post(f"/api/v1/legal-holds/{UNKNOWN}/release"), 404)
    assert _error(admin.post("/api/v1/legal-holds/nope/release"), 422)["field"] == "hold_id"
    refused = api.http("developer").post("/api/v1/legal-holds", json={
        "data_class": "*", "ref": "*", "reason": "why"})
    assert _error(refused, 403)["code"] == "access_denied"
    assert api.workspace.legal_holds.list(active_only=False) == []


def test_retention_runs_the_applied_policy_dry_or_for_real_for_admins_only(
        api: ApiServer) -> None:
    ws = api.workspace
    assert _error(api.http("admin").get("/api/v1/retention"), 404)["code"] == "not_found"
    api.client("admin").policies.apply("ada", {"retention.yml": RETENTION})
    policy = ws.policies.active().retention
    assert policy is not None
    later = datetime(2040, 1, 1, tzinfo=UTC)
    dry = _retention(api, "admin").run(dry_run=True, now=later)
    assert dry == ws.retention.run(policy, dry_run=True, now=later)
    assert dry.dry_run and [str(c.data_class) for c in dry.classes] == [
        "prediction_log", "run_logs"]
    for role in ("viewer", "developer", "approver"):  # a plan names every stored object
        assert _error(api.http(role).get("/api/v1/retention"), 403)["code"] == "access_denied"
        assert _error(api.http(role).post("/api/v1/retention/apply"), 403)
    done = _retention(api, "admin").run(policy)
    assert not done.dry_run and done.policy == "default"
    assert _actors(ws, "governance.retention_applied") == ["ada"]
    admin = api.http("admin")
    naive = admin.get("/api/v1/retention", params={"now": "2040-01-01T00:00:00"}).json()
    assert naive["now"] == later.isoformat().replace("+00:00", "Z")
    for moment in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59", "soon"):
        answer = admin.get("/api/v1/retention", params={"now": moment})
        assert _error(answer, 422)["field"] == "now", moment
    other = policy.model_copy(update={"name": "other"})
    with pytest.raises(ConflictError):
        _retention(api, "admin").run(other)


# -- the governance report -------------------------------------------------------------------


def test_the_report_over_the_api_equals_the_workspaces_and_names_what_fails(
        api: ApiServer) -> None:
    ws = api.workspace
    _version(ws, tags={"owner": "risk"})
    _version(ws, "churn")
    api.client("admin").policies.apply("ada", {"owner.yaml": OWNER})
    remote = _report(api, "viewer").build()
    local = ws.governance_report.build()
    assert dataclasses.replace(remote, generated_at=local.generated_at) == local
    assert remote.violation_rate == 0.5 and remote.examined == 2
    answer = api.http("viewer").get("/api/v1/governance/report", params={"sample": 1}).json()
    assert (answer["examined"], answer["population"]) == (1, 2)
    assert _error(api.http("viewer").get("/api/v1/governance/report",
                                         params={"sample": 0}), 422)["field"] == "sample"


def test_the_report_answers_its_items_a_page_at_a_time_and_sums_up_them_all(
        api: ApiServer) -> None:
    ws = api.workspace
    for name in ("alpha", "beta", "gamma"):
        _version(ws, name)
    http = api.http("viewer")
    first = http.get("/api/v1/governance/report", params={"limit": 2}).json()
    assert (first["examined"], len(first["items"]), first["next_cursor"]) == (3, 2, "2")
    rest = http.get("/api/v1/governance/report",
                    params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert (rest["examined"], len(rest["items"]), rest["next_cursor"]) == (3, 1, None)
    local = ws.governance_report.build()
    assert [i["uri"] for i in first["items"] + rest["items"]] == [i.uri for i in local.items]
    assert rest["missing_counts"] == first["missing_counts"] == dict(local.missing_counts)
