"""The governance report on every backend: it counts planted violations exactly, names each
failing version with its policy, rule and message, counts completeness per check, samples
reproducibly, refuses a bad sample size, and judges approvals by their stored status."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.errors import InvalidArgumentError
from loopline.core.models import ModelVersion, NewModelVersion
from loopline.data.validation import Suite
from loopline.governance.approvals import ApprovalService
from loopline.governance.engine import approval_requirement
from loopline.governance.policy_files import EMPTY_POLICY_SET
from loopline.governance.report import COMPLETENESS_CHECKS, GovernanceReport
from loopline.store.model_registry import create_version

POLICY = textwrap.dedent("""\
    kind: gate_policy
    name: model-card
    applies_to:
      gates: [register]
    rules:
      - id: owner
        kind: required_metadata
        fields: [owner]
    ---
    kind: gate_policy
    name: production-readiness
    applies_to:
      gates: [alias, status]
      targets: [production]
    rules:
      - id: recall-eu
        kind: metric
        check: "recall >= 0.8 on slice region=EU"
    """)
GOOD = {"recall": 0.9, "slices": {"region=EU": {"recall": 0.85}}}
BAD = {"recall": 0.9, "slices": {"region=EU": {"recall": 0.72}}}
SIGNATURE = {"inputs": [{"name": "amount", "type": "double"}]}
SUITE = Suite.from_yaml("""
name: basic
expectations:
  - {type: column_exists, column: amount}
""")


def _register(ws: Workspace, name: str, **fields: Any) -> ModelVersion:
    """Register a version through the registry (and its gate) with a small fresh artifact."""
    digest = ws._blobs.put_bytes(f"{name} {sorted(fields.items())!r}".encode()).digest
    return ws.models.record_version(
        NewModelVersion(name=name, artifact_digest=digest, flavor="python", **fields), ())


def _plant(ws: Workspace) -> None:
    """Four versions, two violations (one missing owner, one in production below threshold).

    The policy is applied after the registrations and alias moves, which it would have
    refused: the report must find what got in before the policy did.
    """
    frame = pd.DataFrame({"amount": [1.0, 2.0]})
    validated = ws.datasets.snapshot(frame, "train").version.ref
    ws.validate_dataset(validated, SUITE)
    unvalidated = ws.datasets.snapshot(frame.assign(amount=[3.0, 4.0]), "train").version.ref
    # fraud/1: complete but for a producing run; in production by alias.
    _register(ws, "fraud", metrics=GOOD, tags={"owner": "ann", "intended_use": "screening"},
              description="screens card payments", datasets=(validated,),
              code_version={"commit": "abc123", "dirty": False},
              environment={"python": "3.11"}, signature=SIGNATURE)
    # fraud/2: no owner (the register policy's violation), hardly anything recorded.
    _register(ws, "fraud", metrics=GOOD, tags={"intended_use": "screening"})
    # churn/1: production alias with EU recall 0.72 (the alias policy's violation).
    _register(ws, "churn", metrics=BAD, tags={"owner": "bob", "purpose": "retention"},
              datasets=(unvalidated,), code_version={"commit": "def456"})
    # churn/2: aliased staging, which no policy governs.
    _register(ws, "churn", metrics=BAD, tags={"owner": "bob", "intended_use": "retention"},
              description="churn risk", code_version={"dirty": True},
              environment={"python": "3.11"}, signature=SIGNATURE)
    ws.models.set_alias("fraud", "production", 1)
    ws.models.set_alias("churn", "production", 1)
    ws.models.set_alias("churn", "staging", 2)
    ws.policies.apply("tester", {"p.yaml": POLICY})


@pytest.fixture
def planted(ws: Workspace) -> Workspace:
    _plant(ws)
    return ws


def _failing(report: GovernanceReport) -> dict[str, dict[str, Any]]:
    return {item["uri"]: item for item in report.as_record()["failing"]}


# -- counting ----------------------------------------------------------------------------------


def test_the_report_counts_each_planted_violation_exactly_and_names_policy_rule_and_message(
        planted: Workspace) -> None:
    report = planted.governance_report.build()
    assert (report.population, report.examined) == (4, 4)
    assert report.policy_set == planted.policies.active().digest
    assert report.violation_rate == 0.5
    violations = {item.uri: [(v.gate, v.target, v.policy, v.rule, v.message)
                             for v in item.violations] for item in report.items}
    assert violations == {
        "models:/churn/1": [("alias", "production", "production-readiness", "recall-eu",
                             "recall on slice region=EU is 0.72, needs >= 0.8")],
        "models:/churn/2": [],
        "models:/fraud/1": [],
        "models:/fraud/2": [("register", None, "model-card", "owner", "missing owner")],
    }


def test_in_use_counts_production_and_aliased_versions_and_their_violation_rate(
        planted: Workspace) -> None:
    record = planted.governance_report.build().as_record()
    assert record["in_use"] == 3  # fraud/1, churn/1 (production), churn/2 (staging)
    assert record["violation_rate"] == 0.5
    assert record["in_use_violation_rate"] == round(1 / 3, 4)
    failing = _failing(planted.governance_report.build())
    assert failing["models:/churn/1"]["in_use"] is True
    assert failing["models:/churn/1"]["aliases"] == ["production"]
    assert failing["models:/fraud/2"]["in_use"] is False
    assert failing["models:/fraud/2"]["violations"] == [{
        "gate": "register", "target": None, "policy": "model-card", "rule": "owner",
        "message": "missing owner"}]


def test_completeness_is_counted_per_check_and_names_what_each_version_misses(
        planted: Workspace) -> None:
    report = planted.governance_report.build()
    missing = {item.uri: item.missing for item in report.items}
    assert missing == {
        "models:/fraud/1": ("run",),
        "models:/fraud/2": ("owner", "description", "training_data", "data_validated",
                            "code_version", "environment", "signature", "run"),
        "models:/churn/1": ("intended_use", "data_validated", "environment", "signature",
                            "run"),
        "models:/churn/2": ("training_data", "data_validated", "code_version", "run"),
    }
    assert report.missing_counts == {
        "owner": 1, "intended_use": 1, "description": 1, "training_data": 2,
        "data_validated": 3, "code_version": 2, "environment": 2, "signature": 2, "run": 4}
    assert list(report.missing_counts) == list(COMPLETENESS_CHECKS)
    assert report.completeness == (36 - 18) / 36 and report.complete_share == 0.0
    assert report.as_record()["completeness"] == 0.5


def test_a_version_in_production_status_is_judged_by_the_status_gate(ws: Workspace) -> None:
    version = _register(ws, "fraud", metrics=BAD, tags={"owner": "ann"})
    ws.models.set_status(version.uri, "staging")
    ws.models.set_status(version.uri, "production")
    ws.policies.apply("tester", {"p.yaml": POLICY})
    [item] = ws.governance_report.build().items
    assert item.in_use and item.aliases == ()
    assert [(v.gate, v.target, v.rule) for v in item.violations] == [
        ("status", "production", "recall-eu")]


def test_without_a_policy_or_versions_the_report_is_empty_and_finds_no_violation(
        ws: Workspace) -> None:
    empty = ws.governance_report.build()
    assert (empty.population, empty.examined, empty.violation_rate) == (0, 0, 0.0)
    assert empty.completeness == 1.0 and empty.as_record()["failing"] == []
    _register(ws, "fraud", metrics=BAD)
    ws.models.set_alias("fraud", "production", 1)
    report = ws.governance_report.build()
    assert report.policy_set == EMPTY_POLICY_SET.digest
    assert report.violation_rate == 0.0 and report.missing_counts["owner"] == 1


def test_building_the_report_writes_nothing(planted: Workspace) -> None:
    before = (len(planted.store.audit.entries()), len(planted.store.events.read_after(0, 1000)))
    planted.governance_report.build()
    after = (len(planted.store.audit.entries()), len(planted.store.events.read_after(0, 1000)))
    assert after == before


# -- sampling ----------------------------------------------------------------------------------


def test_a_seeded_sample_examines_that_many_versions_and_is_reproducible(
        planted: Workspace) -> None:
    builder = planted.governance_report
    first = builder.build(sample=2, seed=7)
    again = builder.build(sample=2, seed=7)
    assert (first.population, first.examined) == (4, 2)
    assert [i.uri for i in first.items] == [i.uri for i in again.items]
    assert first.as_record()["failing"] == again.as_record()["failing"]
    assert sum(first.missing_counts.values()) == sum(len(i.missing) for i in first.items)
    # Different seeds pick different versions: the sample is drawn, not the first N.
    picks = {tuple(i.uri for i in builder.build(sample=2, seed=seed).items)
             for seed in range(12)}
    assert len(picks) > 1
    assert builder.build(sample=10, seed=1).examined == 4  # more than exist: all of them


@pytest.mark.parametrize("sample", [0, -1, 10_000_000, 2.5, True])
def test_a_sample_that_is_not_a_positive_count_is_refused_naming_sample(
        ws: Workspace, sample: int) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        ws.governance_report.build(sample=sample)
    assert raised.value.field == "sample" and str(sample) in raised.value.message


# -- approvals ---------------------------------------------------------------------------------

APPROVALS = textwrap.dedent("""\
    kind: gate_policy
    name: four-eyes
    applies_to:
      gates: [alias]
      targets: [champion, challenger]
    rules:
      - id: one-approver
        kind: approvals
        count: 1
        expires_after: 1d
    """)


@pytest.fixture
def clocked(db_url: str, tmp_path: Path) -> Iterator[tuple[Workspace, ManualClock]]:
    clock = ManualClock()
    workspace = Workspace.init(tmp_path / "clocked", overrides={"db_url": db_url}, clock=clock)
    try:
        yield workspace, clock
    finally:
        workspace.close()


def _approvals(ws: Workspace, actor: str) -> ApprovalService:
    return ApprovalService(ws.store, ws.access, actor, requirement=lambda m, g, t: (
        approval_requirement(ws.policies.active(), m, g, t)))


def test_an_approval_that_expired_after_the_move_it_justified_still_counts(
        clocked: tuple[Workspace, ManualClock]) -> None:
    ws, clock = clocked
    approved = _register(ws, "fraud", tags={"owner": "ann"})
    unapproved = _register(ws, "fraud", tags={"owner": "ann"})
    ws.models.set_alias("fraud", "challenger", unapproved.version)  # before the policy
    ws.policies.apply("tester", {"p.yaml": APPROVALS})
    request = ws.approvals.request("fraud", approved.version, "alias", "champion", "ship it")
    _approvals(ws, "alice").approve(request.id, "looks good")
    ws.models.set_alias("fraud", "champion", approved.version)  # the gate counted alice
    ws.approvals.request("fraud", unapproved.version, "alias", "challenger", "try it")
    clock.advance(timedelta(days=3))
    assert ws.approvals.get(request.id).status == "expired"

    report = ws.governance_report.build()
    violations = {item.uri: [(v.policy, v.rule) for v in item.violations]
                  for item in report.items}
    assert violations == {"models:/fraud/1": [],
                          "models:/fraud/2": [("four-eyes", "one-approver")]}
    [unapproved_item] = [i for i in report.items if i.uri == "models:/fraud/2"]
    assert unapproved_item.violations[0].message.startswith("0 of 1 approvals")
    assert report.violation_rate == 0.5
    clock.advance(timedelta(days=30))  # the report does not change as time passes
    later = ws.governance_report.build().as_record()
    assert {**later, "generated_at": None} == {**report.as_record(), "generated_at": None}


def test_an_alias_is_judged_with_whoever_moved_it_as_the_actor(ws: Workspace) -> None:
    # alice registered the version and approved bob's request; tester moved the alias. The
    # gate excluded only bob and tester, so alice's approval counted, and must in the report.
    digest = ws._blobs.put_bytes(b"alice's model").digest
    with ws.store.write("alice") as uow:
        create_version(uow, NewModelVersion(name="fraud", artifact_digest=digest,
                                            flavor="python", tags={"owner": "alice"}))
    ws.policies.apply("tester", {"p.yaml": APPROVALS})
    request = _approvals(ws, "bob").request("fraud", 1, "alias", "champion", "ship it")
    _approvals(ws, "alice").approve(request.id)
    ws.models.set_alias("fraud", "champion", 1)
    [item] = ws.governance_report.build().items
    assert item.aliases == ("champion",) and item.violations == ()
