"""The governance gate on every backend: applied policy sets decide alias moves, registrations
and status changes, name the failing policy and rule, record rules, facts and the set's digest
in the audit entry, and re-evaluate from the record to the same answer."""

from __future__ import annotations

import base64
import os
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from model_payloads import MeanModel

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.errors import (
    AccessDeniedError,
    InvalidArgumentError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.core.events import EventType
from loopline.core.gates import GateAction, GateRequest
from loopline.core.governance import ApprovalRequest, Permission, Role
from loopline.core.models import ModelVersion, NewModelVersion
from loopline.data.validation import Suite
from loopline.governance import engine
from loopline.governance.access import AccessControl
from loopline.governance.approvals import ApprovalService
from loopline.governance.fact_gathering import FactGatherer
from loopline.governance.fact_records import facts_from_record
from loopline.governance.facts import Facts
from loopline.governance.gate import GovernanceGate, decide, permission_for
from loopline.governance.policy_files import EMPTY_POLICY_SET, load_policy_set
from loopline.governance.policy_sets import PolicySets
from loopline.registry.service import ModelRegistry
from loopline.store import AuditFilter, MetadataStore
from loopline.store.governance_queries import GovernanceQueries
from loopline.store.policy_records import PolicyRecords

PRODUCTION = textwrap.dedent("""\
    kind: gate_policy
    name: production-readiness
    applies_to:
      models: ["fraud-*"]
      gates: [alias]
      targets: [production]
    rules:
      - id: recall-eu
        kind: metric
        check: "recall >= 0.8 on slice region=EU"
    """)
GOOD_METRICS = {"recall": 0.9, "slices": {"region=EU": {"recall": 0.85}}}
BAD_METRICS = {"recall": 0.9, "slices": {"region=EU": {"recall": 0.72}}}
CARD = {"owner": "ann", "intended_use": "fraud screening"}


class Governed:
    """A workspace with the real governance pieces wired around its own registry."""

    def __init__(self, ws: Workspace, actor: str = "tester") -> None:
        self.ws = ws
        self.access = AccessControl(ws.store)
        self.policies = PolicySets(ws.store, self.access)
        self.gatherer = FactGatherer(ws.store, ws._blobs, self.approvals("tester"))
        self.gate = GovernanceGate(self.access, self.policies, self.gatherer, ws.store.clock)
        self.registry = ModelRegistry(ws.store, ws._blobs, actor, gate=self.gate)

    def approvals(self, actor: str) -> ApprovalService:
        """Approvals acted on by ``actor``, asking the policies in force how many are needed."""
        def requirement(model: str, gate: str, target: str | None) -> Any:
            return engine.approval_requirement(self.policies.active(), model, gate, target)
        return ApprovalService(self.ws.store, self.access, actor, requirement=requirement)

    def apply(self, *texts: str) -> str:
        applied = self.policies.apply("tester", {f"p{i}.yaml": t for i, t in enumerate(texts)})
        return applied.digest

    def version(self, name: str = "fraud-a", **fields: Any) -> ModelVersion:
        """Register a version with a fresh artifact (through the gate)."""
        digest = self.ws._blobs.put_bytes(os.urandom(16)).digest
        fields.setdefault("tags", CARD)
        return self.registry.record_version(
            NewModelVersion(name=name, artifact_digest=digest, flavor="python", **fields), ())


@pytest.fixture
def gov(ws: Workspace) -> Governed:
    return Governed(ws)


def _audit(store: MetadataStore, action: str) -> list[Any]:
    return store.audit.entries(AuditFilter(action=action, newest_first=False, limit=100))


def _facts_from_record(record: dict[str, Any]) -> Facts:
    """Rebuild the facts a decision recorded (what re-evaluation starts from)."""
    return facts_from_record(record)


# -- applying policy sets ----------------------------------------------------------------------


def test_apply_stores_the_set_audits_and_emits_once_and_the_same_set_again_writes_nothing(
        gov: Governed) -> None:
    first = gov.policies.apply("tester", {"prod.yaml": PRODUCTION})
    assert first.changed and first.digest == load_policy_set({"prod.yaml": PRODUCTION}).digest
    again = gov.policies.apply("tester", {"prod.yaml": PRODUCTION})
    assert not again.changed and again.id == first.id
    [entry] = _audit(gov.ws.store, "governance.policy_applied")
    assert entry.before is None
    assert entry.after["digest"] == first.digest and entry.after["files"] == ["prod.yaml"]
    events = gov.ws.store.events.read_after(0, 100, [EventType.POLICY_APPLIED])
    assert [e.payload["digest"] for e in events] == [first.digest]
    assert gov.policies.active().digest == first.digest


def test_a_changed_set_replaces_the_active_one_and_its_audit_names_the_previous_digest(
        gov: Governed) -> None:
    first = gov.apply(PRODUCTION)
    second = gov.apply(PRODUCTION.replace("0.8", "0.7"))
    assert second != first and gov.policies.active().digest == second
    entries = _audit(gov.ws.store, "governance.policy_applied")
    assert [e.before and e.before["digest"] for e in entries] == [None, first]
    assert [r.digest for r in gov.policies.history()] == [second, first]


def test_a_malformed_file_is_refused_naming_file_and_line_and_nothing_is_written(
        gov: Governed) -> None:
    broken = PRODUCTION.replace("check: \"recall >= 0.8 on slice region=EU\"",
                                "check: \"recall is high\"")
    with pytest.raises(InvalidArgumentError) as raised:
        gov.policies.apply("tester", {"ok.yaml": PRODUCTION.replace("production-readiness",
                                                                    "other"),
                                      "prod.yaml": broken})
    assert raised.value.field.startswith("prod.yaml:10")
    assert gov.policies.active() is EMPTY_POLICY_SET
    assert PolicyRecords(gov.ws.store.engine).history() == []
    assert _audit(gov.ws.store, "governance.policy_applied") == []


@pytest.mark.parametrize("files", [{}, {"notes.yaml": "# nothing yet\n---\n"}])
def test_an_empty_set_is_refused_unless_allowed_and_then_clears_every_gate(
        gov: Governed, files: dict[str, str]) -> None:
    applied = gov.apply(PRODUCTION)
    with pytest.raises(InvalidArgumentError) as raised:
        gov.policies.apply("tester", files, source="policies/")
    assert raised.value.field == "policies/"
    assert "no gate policy and no retention policy" in raised.value.problem
    assert "--allow-empty" in raised.value.problem and "allow_empty=True" in raised.value.problem
    assert gov.policies.active().digest == applied
    assert len(_audit(gov.ws.store, "governance.policy_applied")) == 1

    cleared = gov.policies.apply("tester", files, allow_empty=True)
    assert cleared.changed and gov.policies.active().gate_policies == ()
    version = gov.version(metrics=BAD_METRICS)
    gov.registry.set_alias(version.name, "production", version.version)  # no gate any more


def test_a_set_holding_only_a_retention_policy_is_not_empty(gov: Governed) -> None:
    retention = "kind: retention\nname: r\nclasses: {run_logs: {max_age: 30d}}\n"
    assert gov.policies.apply("tester", {"keep.yaml": retention}).changed


def test_only_an_admin_may_apply_policies_once_roles_are_enforced(gov: Governed) -> None:
    gov.access.grant("tester", "boss", Role.ADMIN)
    gov.access.grant("boss", "dev", Role.DEVELOPER)
    with pytest.raises(AccessDeniedError) as raised:
        gov.policies.apply("dev", {"prod.yaml": PRODUCTION})
    assert raised.value.permission == "admin"
    assert PolicyRecords(gov.ws.store.engine).history() == []
    assert gov.policies.apply("boss", {"prod.yaml": PRODUCTION}).applied_by == "boss"


def test_the_active_set_is_parsed_once_per_applied_row(gov: Governed) -> None:
    gov.apply(PRODUCTION)
    other = PolicySets(gov.ws.store, gov.access)  # a second process's view
    assert other.active() is other.active()
    gov.apply(PRODUCTION.replace("0.8", "0.9"))
    assert other.active().digest == gov.policies.active().digest


# -- the gate deciding alias moves -------------------------------------------------------------


def test_an_alias_move_to_production_is_refused_naming_the_policy_and_rule_when_eu_recall_is_low(
        gov: Governed) -> None:
    gov.apply(PRODUCTION)
    version = gov.version(metrics=BAD_METRICS)
    with pytest.raises(PolicyDeniedError) as raised:
        gov.registry.set_alias(version.name, "production", version.version)
    assert "production-readiness" in raised.value.message
    assert "recall-eu" in raised.value.message
    assert gov.registry.aliases(version.name) == []
    assert _audit(gov.ws.store, "model.alias_moved") == []
    # The policy names only production: another alias and another model are not governed.
    gov.registry.set_alias(version.name, "staging", version.version)
    other = gov.version(name="churn", metrics=BAD_METRICS)
    gov.registry.set_alias(other.name, "production", other.version)


def test_an_allowed_move_records_rules_facts_and_digest_and_re_evaluates_to_the_same_decision(
        gov: Governed) -> None:
    digest = gov.apply(PRODUCTION)
    version = gov.version(metrics=GOOD_METRICS)
    gov.registry.set_alias(version.name, "production", version.version)
    [entry] = _audit(gov.ws.store, "model.alias_moved")
    recorded = entry.after["gate"]
    assert recorded["allowed"] is True and recorded["policy_set"] == digest
    [rule] = recorded["rules"]
    assert (rule["policy"], rule["rule"], rule["kind"], rule["passed"]) == (
        "production-readiness", "recall-eu", "metric", True)
    assert rule["observed"] == 0.85
    facts = recorded["facts"]
    assert (facts["model"], facts["version"], facts["gate"], facts["target"]) == (
        "fraud-a", 1, "alias", "production")
    assert "now" in facts["details"]
    again = decide(gov.policies.active(), _facts_from_record(facts))
    assert again.as_record() == recorded


def test_a_denied_decision_re_evaluates_from_its_facts_to_the_same_denial(
        gov: Governed) -> None:
    gov.apply(PRODUCTION)
    version = gov.version(metrics=BAD_METRICS)
    decision = gov.gate.check(GateRequest(GateAction.ALIAS, version.name, version.version,
                                          "tester", "production"))
    assert not decision.allowed and decision.facts is not None
    again = decide(gov.policies.active(), _facts_from_record(dict(decision.facts)))
    assert again.as_record() == decision.as_record()


def test_without_any_policy_the_gate_allows_and_names_the_empty_set(gov: Governed) -> None:
    version = gov.version(metrics=BAD_METRICS)
    gov.registry.set_alias(version.name, "production", version.version)
    [entry] = _audit(gov.ws.store, "model.alias_moved")
    assert entry.after["gate"]["allowed"] is True
    assert entry.after["gate"]["policy_set"] == EMPTY_POLICY_SET.digest


# -- registration, status ----------------------------------------------------------------------


REGISTRATION = textwrap.dedent("""\
    kind: gate_policy
    name: model-card
    applies_to:
      gates: [register]
    rules:
      - id: card
        kind: required_metadata
        fields: [owner, description]
    """)


def test_a_registration_missing_owner_is_refused_and_nothing_is_written(
        gov: Governed) -> None:
    gov.apply(REGISTRATION)
    with pytest.raises(PolicyDeniedError) as raised:
        gov.version(tags={"intended_use": "x"}, description="screens card payments")
    assert "policy 'model-card' rule 'card' failed: missing owner" in raised.value.message
    with pytest.raises(NotFoundError):
        gov.registry.model("fraud-a")
    version = gov.version(tags={"owner": "ann"}, description="screens card payments")
    [entry] = _audit(gov.ws.store, "model.version_registered")
    assert entry.subject == version.uri and entry.after["gate"]["allowed"] is True
    assert entry.after["gate"]["facts"]["version"] == 0


def test_a_real_registration_passes_the_gate_with_its_description_and_tags(
        gov: Governed) -> None:
    gov.apply(REGISTRATION)
    version = gov.registry.register(MeanModel(1.0), "fraud-b", flavor="python",
                                    tags={"owner": "ann"}, description="a constant")
    assert version.version == 1


def test_a_status_change_is_gated_by_status_policies(gov: Governed) -> None:
    gov.apply(PRODUCTION.replace("gates: [alias]", "gates: [status]"))
    version = gov.version(metrics=BAD_METRICS)
    gov.registry.set_status(version.uri, "staging")
    with pytest.raises(PolicyDeniedError, match="recall-eu"):
        gov.registry.set_status(version.uri, "production")
    assert gov.registry.resolve(version.uri).status == "staging"


# -- encryption --------------------------------------------------------------------------------


ENCRYPTED = textwrap.dedent("""\
    kind: gate_policy
    name: at-rest
    applies_to:
      gates: [alias]
      targets: [production]
    rules:
      - id: encrypted
        kind: encryption
    """)


def test_the_encryption_rule_fails_when_the_artifact_is_stored_plain(gov: Governed) -> None:
    gov.apply(ENCRYPTED)
    version = gov.version()
    with pytest.raises(PolicyDeniedError, match="encrypted"):
        gov.registry.set_alias(version.name, "production", version.version)


@pytest.fixture
def keyed(db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
    workspace = Workspace.init(tmp_path / "keyed", overrides={"db_url": db_url,
                                                              "encryption_key": key})
    try:
        yield workspace
    finally:
        workspace.close()


def test_the_encryption_rule_passes_when_the_workspace_encrypts_artifacts(
        keyed: Workspace) -> None:
    gov = Governed(keyed)
    gov.apply(ENCRYPTED)
    version = gov.version()
    gov.registry.set_alias(version.name, "production", version.version)
    [entry] = _audit(keyed.store, "model.alias_moved")
    assert entry.after["gate"]["facts"]["artifact_encrypted"] is True


# -- lineage -----------------------------------------------------------------------------------


LINEAGE = textwrap.dedent("""\
    kind: gate_policy
    name: traceable
    applies_to:
      gates: [alias]
    rules:
      - id: lineage
        kind: lineage_complete
        validated_datasets: true
        code_version: false
        environment: false
    """)
SUITE = Suite.from_yaml("""
name: basic
expectations:
  - {type: column_exists, column: amount}
""")


def test_lineage_complete_names_the_unvalidated_snapshot_and_passes_once_it_is_validated(
        gov: Governed) -> None:
    gov.apply(LINEAGE)
    snapshot = gov.ws.datasets.snapshot(pd.DataFrame({"amount": [1.0, 2.0]}), "train").version
    version = gov.version(datasets=(snapshot.ref,))
    with pytest.raises(PolicyDeniedError, match="lineage") as raised:
        gov.registry.set_alias(version.name, "champion", version.version)
    decision = gov.gate.check(GateRequest(GateAction.ALIAS, version.name, version.version,
                                          "tester", "champion"))
    [rule] = decision.rules
    assert snapshot.ref in rule["message"], raised.value.message
    gov.ws.validate_dataset(snapshot.ref, SUITE)
    gov.registry.set_alias(version.name, "champion", version.version)


# -- approvals ---------------------------------------------------------------------------------


FOUR_EYES = textwrap.dedent("""\
    kind: gate_policy
    name: four-eyes
    applies_to:
      gates: [alias]
      targets: [production]
    rules:
      - id: two-approvers
        kind: approvals
        count: 2
        expires_after: 7d
    """)


def test_approvals_deny_with_one_of_two_and_allow_with_two_distinct_other_approvers(
        gov: Governed) -> None:
    gov.apply(FOUR_EYES)
    version = gov.version()
    request = gov.approvals("requester").request(version.name, version.version, "alias",
                                                 "production", "ship it")
    assert request.required == 2
    gov.approvals("alice").approve(request.id, "looks good")
    with pytest.raises(PolicyDeniedError, match="two-approvers"):
        gov.registry.set_alias(version.name, "production", version.version)
    gov.approvals("bob").approve(request.id, "agreed")
    gov.registry.set_alias(version.name, "production", version.version)
    [entry] = _audit(gov.ws.store, "model.alias_moved")
    recorded = entry.after["gate"]
    [approval] = recorded["facts"]["approvals"]
    assert sorted(approval["approvers"]) == ["alice", "bob"]
    again = decide(gov.policies.active(), facts_from_record(recorded["facts"]))
    assert again.as_record() == recorded


def test_a_facts_record_that_is_not_one_is_refused_naming_facts() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        facts_from_record({"model": "m", "version": "one"})
    assert raised.value.field == "facts"


class FakeApprovals:
    def __init__(self, found: list[ApprovalRequest]) -> None:
        self.found = found
        self.asked: list[tuple[str, int, str, str | None]] = []

    def for_action(self, model: str, version: int, gate: str,
                   target: str | None) -> list[ApprovalRequest]:
        self.asked.append((model, version, gate, target))
        return self.found


def test_the_gatherer_asks_the_approval_reader_for_exactly_this_action(gov: Governed) -> None:
    version = gov.version()
    reader = FakeApprovals([])
    facts = FactGatherer(gov.ws.store, gov.ws._blobs, reader).gather(
        GateRequest(GateAction.DEPLOY, version.name, version.version, "tester", "prod"),
        gov.ws.store.clock.now())
    assert reader.asked == [("fraud-a", 1, "deploy", "prod")] and facts.approvals == ()
    assert facts.tags == CARD and facts.status == "candidate"


# -- authorisation -----------------------------------------------------------------------------


def test_the_gate_asks_write_for_moves_and_trust_for_trust() -> None:
    assert permission_for(GateAction.TRUST) is Permission.TRUST
    assert {permission_for(a) for a in GateAction if a is not GateAction.TRUST} == {
        Permission.WRITE}


def test_a_viewer_is_refused_an_alias_move_before_any_policy_is_read(gov: Governed) -> None:
    version = gov.version()
    gov.access.grant("tester", "boss", Role.ADMIN)
    gov.access.grant("boss", "viewer", Role.VIEWER)
    registry = ModelRegistry(gov.ws.store, gov.ws._blobs, "viewer", gate=gov.gate)
    with pytest.raises(AccessDeniedError) as raised:
        registry.set_alias(version.name, "production", version.version)
    assert raised.value.permission == "write" and "fraud-a" in str(raised.value.resource)
    assert gov.registry.aliases("fraud-a") == []


# -- store queries -----------------------------------------------------------------------------


def test_the_newest_set_wins_even_when_the_clock_stands_still(db_url: str) -> None:
    store = MetadataStore.open(db_url, clock=ManualClock(), check_schema=False)
    try:
        store.upgrade()
        access = AccessControl(store)
        policies = PolicySets(store, access)
        sets = [PRODUCTION, PRODUCTION.replace("0.8", "0.9"), PRODUCTION]
        digests = [policies.apply("tester", {"p.yaml": text}).digest for text in sets]
        assert PolicySets(store, access).active().digest == digests[-1]
        history = policies.history(limit=2)
        assert [r.digest for r in history] == digests[:0:-1]
        assert history[0].applied_at > history[1].applied_at
        with pytest.raises(InvalidArgumentError, match="limit"):
            policies.history(limit=0)
    finally:
        store.close()


def test_snapshot_states_report_missing_unvalidated_and_validated_snapshots(
        gov: Governed) -> None:
    frame = pd.DataFrame({"amount": [1.0, 2.0]})
    snapshot = gov.ws.datasets.snapshot(frame, "train").version
    queries = GovernanceQueries(gov.ws.store.engine)
    refs = [snapshot.ref, "train@9", "not a ref"]
    states = queries.snapshot_states(refs)
    assert [(s.ref, s.exists, s.validated) for s in states] == [
        (snapshot.ref, True, None), ("train@9", False, None), ("not a ref", False, None)]
    gov.ws.validate_dataset(snapshot.ref, SUITE)
    [state] = queries.snapshot_states([snapshot.ref])
    assert (state.validated, state.suites) == (True, ("basic",))
    failing = Suite.from_yaml("name: strict\nexpectations:\n"
                              "  - {type: row_count_between, min: 5, max: 10}\n")
    gov.ws.validate_dataset(snapshot.ref, failing)
    [state] = queries.snapshot_states([snapshot.ref])
    assert (state.validated, state.suites) == (False, ("basic", "strict"))


def test_registration_facts_come_from_the_request_and_the_keyring(gov: Governed) -> None:
    request = GateRequest(GateAction.REGISTER, "fraud-c", 0, "tester", None, {
        "metrics": GOOD_METRICS, "tags": CARD, "datasets": ["nope@1"], "run_id": None,
        "code_version": {"commit": "abc", "dirty": False}, "environment_recorded": True,
        "signature_recorded": False, "description": "d"})
    facts = gov.gatherer.gather(request, gov.ws.store.clock.now())
    assert facts.metrics == GOOD_METRICS and facts.tags == CARD and facts.description == "d"
    assert [(d.ref, d.exists) for d in facts.datasets] == [("nope@1", False)]
    assert facts.code_version == {"commit": "abc", "dirty": False}
    assert facts.environment_recorded and not facts.signature_recorded
    assert facts.artifact_encrypted is False
    assert replace(facts, details={}).version == 0 and "now" in facts.details


# -- review fixes: every suite's newest run counts; approvers who lost the right do not -------


STRICT = Suite.from_yaml("name: strict\nexpectations:\n"
                         "  - {type: row_count_between, min: 5, max: 10}\n")


def test_a_lenient_suite_passing_later_does_not_hide_a_strict_suite_that_still_fails(
        gov: Governed) -> None:
    gov.apply(LINEAGE)
    snapshot = gov.ws.datasets.snapshot(pd.DataFrame({"amount": [1.0, 2.0]}), "train").version
    version = gov.version(datasets=(snapshot.ref,))
    gov.ws.validate_dataset(snapshot.ref, STRICT)
    gov.ws.validate_dataset(snapshot.ref, Suite(name="nothing"))  # passes, checks nothing
    with pytest.raises(PolicyDeniedError, match="lineage"):
        gov.registry.set_alias(version.name, "champion", version.version)
    [state] = GovernanceQueries(gov.ws.store.engine).snapshot_states([snapshot.ref])
    assert (state.validated, state.suites, state.failing) == (
        False, ("nothing", "strict"), ("strict",))
    request = GateRequest(GateAction.ALIAS, version.name, version.version, "tester", "champion")
    facts = gov.gatherer.gather(request, gov.ws.store.clock.now())
    assert [(d.validated, d.suites) for d in facts.datasets] == [(False, ("nothing", "strict"))]
    assert facts.details["failing_suites"] == {snapshot.ref: ["strict"]}
    # The strict suite, run again on data it accepts (a relaxed bound), passes: allowed.
    relaxed = Suite.from_yaml("name: strict\nexpectations:\n"
                              "  - {type: row_count_between, min: 1, max: 10}\n")
    gov.ws.validate_dataset(snapshot.ref, relaxed)
    gov.registry.set_alias(version.name, "champion", version.version)
    assert "failing_suites" not in gov.gatherer.gather(request, gov.ws.store.clock.now()).details


def _enforced_gate(gov: Governed) -> tuple[GovernanceGate, ModelRegistry]:
    """Roles on (tester admin, requester developer, two approvers); the gatherer checks them."""
    gov.access.grant("tester", "tester", Role.ADMIN)
    gov.access.grant("tester", "requester", Role.DEVELOPER)
    for approver in ("alice", "bob"):
        gov.access.grant("tester", approver, Role.APPROVER)
    gatherer = FactGatherer(gov.ws.store, gov.ws._blobs, gov.approvals("tester"), gov.access)
    gate = GovernanceGate(gov.access, gov.policies, gatherer, gov.ws.store.clock)
    return gate, ModelRegistry(gov.ws.store, gov.ws._blobs, "tester", gate=gate)


@pytest.mark.parametrize("lose_right", ["disable", "revoke"])
def test_an_approver_who_is_disabled_or_loses_the_role_no_longer_counts(
        gov: Governed, lose_right: str) -> None:
    gate, registry = _enforced_gate(gov)
    gov.apply(FOUR_EYES)
    version = gov.version()
    request = gov.approvals("requester").request(version.name, version.version, "alias",
                                                 "production", "ship it")
    gov.approvals("alice").approve(request.id, "ok")
    gov.approvals("bob").approve(request.id, "ok")
    if lose_right == "disable":
        gov.access.disable("tester", "bob")
    else:
        gov.access.revoke("tester", "bob", Role.APPROVER)
    with pytest.raises(PolicyDeniedError, match="two-approvers"):
        registry.set_alias(version.name, "production", version.version)
    decision = gate.check(GateRequest(GateAction.ALIAS, version.name, version.version,
                                      "tester", "production"))
    assert not decision.allowed and decision.facts is not None
    assert decision.facts["details"]["discounted_approvers"] == ["bob"]
    assert decision.facts["approvals"][0]["approvers"] == ["alice"]
    again = decide(gov.policies.active(), facts_from_record(decision.facts))
    assert again.as_record() == decision.as_record()
    gov.access.grant("tester", "carol", Role.APPROVER)
    gov.approvals("carol").approve(request.id, "ok")
    registry.set_alias(version.name, "production", version.version)
