"""Policy rules and the engine: each kind passes and fails for the right reason, all recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.core.governance import (
    ApprovalRequest,
    ApprovalStatus,
    ApprovalVote,
    Role,
    Verdict,
)
from loopline.governance.engine import applicable, approval_requirement, evaluate
from loopline.governance.facts import NOW_KEY, DatasetFact, Facts
from loopline.governance.policy_files import EMPTY_POLICY_SET, PolicySet, load_policy_set
from loopline.governance.policy_model import GatePolicy, SliceGapRule
from loopline.governance.rules import RuleResult, check_approvals, check_rule

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def facts(**changes: Any) -> Facts:
    """Return the facts of fraud-detector v3 moving to alias production, meeting every rule."""
    base = Facts(
        model="fraud-detector", version=3, gate="alias", target="production", actor="carol",
        metrics={"recall": 0.83, "auc": 0.91,
                 "slices": {"region=EU": {"recall": 0.82}, "region=US": {"recall": 0.85},
                            "device=ios": {"recall": 0.5}}},
        tags={"owner": "risk-team", "intended_use": "card fraud", "limitations": "EU only"},
        description="gradient boosting on card transactions",
        datasets=(DatasetFact("orders@3", True, True),),
        code_version={"commit": "abc123", "dirty": False},
        environment_recorded=True, artifact_encrypted=True,
        approvals=(request("r1", "dave", ("alice", "bob")),),
        details={NOW_KEY: T0.isoformat()},
    )
    return replace(base, **changes)


def request(id_: str, requester: str, approvers: tuple[str, ...],
            status: ApprovalStatus = ApprovalStatus.APPROVED,
            expires_at: datetime = T0 + timedelta(days=1)) -> ApprovalRequest:
    votes = tuple(ApprovalVote(name, Verdict.APPROVE, "ok", T0, Role.APPROVER)
                  for name in approvers)
    return ApprovalRequest(id_, "fraud-detector", 3, "alias", "production", requester, "ship",
                           status, 2, T0 - timedelta(hours=1), expires_at, votes)


def rule_set(rules: str, *, models: str = '["fraud-*"]', gates: str = "[alias, deploy]",
             targets: str = "[production]", name: str = "prod") -> str:
    return (f"kind: gate_policy\nname: {name}\napplies_to:\n  models: {models}\n"
            f"  gates: {gates}\n  targets: {targets}\nrules:\n{rules}")


def one_rule(rule: str) -> GatePolicy:
    (policy,) = load_policy_set({"p.yaml": rule_set(f"  - {rule}\n")}).gate_policies
    return policy


def check(rule: str, given_facts: Facts) -> RuleResult:
    return check_rule(one_rule(rule).rules[0], given_facts)


FULL_RULES = """\
  - {id: card, kind: required_metadata, fields: [owner, intended_use, limitations, description]}
  - {id: lineage, kind: lineage_complete, clean_code: true}
  - {id: recall-eu, kind: metric, check: "recall >= 0.8 on slice region=EU"}
  - {id: auc, kind: metric, metric: auc, op: ">", value: 0.9}
  - {id: fairness, kind: slice_gap, metric: recall, slices: "region=*", max_gap: 0.05}
  - {id: encrypted, kind: encryption}
  - {id: four-eyes, kind: approvals, count: 2, expires_after: 7d}
"""


# required_metadata

def test_required_metadata_passes_when_every_field_is_present() -> None:
    result = check("{id: card, kind: required_metadata, fields: [owner, description]}", facts())

    assert result == RuleResult(True, ["description", "owner"], ["owner", "description"],
                                "has owner, description")


def test_required_metadata_fails_naming_absent_and_blank_fields() -> None:
    given_facts = facts(tags={"owner": "  ", "intended_use": "x"}, description="")

    result = check("{id: card, kind: required_metadata, "
                   "fields: [owner, intended_use, limitations, description]}", given_facts)

    assert not result.passed
    assert result.observed == ["intended_use"]
    assert result.message == "missing owner, limitations, description"


# lineage_complete

def test_lineage_complete_passes_with_validated_snapshots_commit_and_environment() -> None:
    result = check("{id: l, kind: lineage_complete, clean_code: true}", facts())

    assert result.passed, result.message
    assert result.observed["datasets"] == [{"ref": "orders@3", "exists": True,
                                            "validated": True}]
    assert result.observed["code_commit"] == "abc123"


@pytest.mark.parametrize(("changes", "message"), [
    ({"datasets": ()}, "no training dataset snapshot is recorded"),
    ({"datasets": (DatasetFact("orders@3", True, None),)},
     "snapshot orders@3 was never validated"),
    ({"datasets": (DatasetFact("orders@3", True, True), DatasetFact("users@1", True, False))},
     "snapshot users@1 failed its newest validation"),
    ({"datasets": (DatasetFact("orders@9", False, None),)}, "snapshot orders@9 does not exist"),
    ({"code_version": None}, "no code commit is recorded"),
    ({"code_version": {"commit": "abc123", "dirty": True}}, "the code had uncommitted changes"),
    ({"environment_recorded": False}, "no environment is recorded"),
])
def test_lineage_complete_fails_naming_the_missing_part(changes: dict[str, Any],
                                                        message: str) -> None:
    result = check("{id: l, kind: lineage_complete, clean_code: true}", facts(**changes))

    assert not result.passed
    assert result.message.startswith(message)


def test_lineage_complete_checks_only_the_parts_switched_on() -> None:
    given_facts = facts(datasets=(), code_version={"commit": "abc", "dirty": True},
                        environment_recorded=False)

    result = check("{id: l, kind: lineage_complete, validated_datasets: false, "
                   "environment: false}", given_facts)

    assert result.passed, result.message


def test_lineage_complete_counts_every_gap_in_its_message() -> None:
    result = check("{id: l, kind: lineage_complete}",
                   facts(datasets=(DatasetFact("orders@3", True, None),), code_version=None,
                         environment_recorded=False))

    assert result.message == "snapshot orders@3 was never validated (and 2 more gaps)"
    assert len(result.observed["missing"]) == 3


# metric

@pytest.mark.parametrize(("rule", "passed", "message"), [
    ('{id: m, kind: metric, check: "recall >= 0.8"}', True, "recall is 0.83, needs >= 0.8"),
    ('{id: m, kind: metric, check: "recall >= 0.9"}', False, "recall is 0.83, needs >= 0.9"),
    ('{id: m, kind: metric, check: "recall >= 0.83"}', True, "recall is 0.83, needs >= 0.83"),
    ('{id: m, kind: metric, check: "recall > 0.83"}', False, "recall is 0.83, needs > 0.83"),
    ('{id: m, kind: metric, check: "recall < 0.9"}', True, "recall is 0.83, needs < 0.9"),
    ('{id: m, kind: metric, check: "recall <= 0.8"}', False, "recall is 0.83, needs <= 0.8"),
    ('{id: m, kind: metric, check: "recall == 0.83"}', True, "recall is 0.83, needs == 0.83"),
    ('{id: m, kind: metric, check: "recall >= 0.84 on slice region=EU"}', False,
     "recall on slice region=EU is 0.82, needs >= 0.84"),
    ("{id: m, kind: metric, metric: recall, op: '>=', value: 0.8, slice: region=US}", True,
     "recall on slice region=US is 0.85, needs >= 0.8"),
])
def test_metric_rule_compares_the_value_with_its_operator(rule: str, passed: bool,
                                                          message: str) -> None:
    result = check(rule, facts())

    assert (result.passed, result.message) == (passed, message)


@pytest.mark.parametrize(("rule", "message"), [
    ('{id: m, kind: metric, check: "precision >= 0.1"}', "metric precision is missing"),
    ('{id: m, kind: metric, check: "recall >= 0.1 on slice region=APAC"}',
     "slice region=APAC is missing"),
    ('{id: m, kind: metric, check: "auc >= 0.1 on slice region=EU"}',
     "metric auc is missing on slice region=EU"),
])
def test_metric_rule_fails_when_the_metric_or_slice_is_missing(rule: str, message: str) -> None:
    result = check(rule, facts())

    assert not result.passed
    assert result.observed is None
    assert result.message.startswith(message)


@pytest.mark.parametrize("value", ["high", None, True, "nan", float("nan"), float("inf")])
def test_metric_rule_fails_on_a_value_that_is_not_a_finite_number(value: Any) -> None:
    result = check('{id: m, kind: metric, check: "recall < 1e9"}',
                   facts(metrics={"recall": value}))

    assert not result.passed
    assert "not a finite number" in result.message


def test_metric_rule_fails_when_metrics_hold_no_slices() -> None:
    result = check('{id: m, kind: metric, check: "recall >= 0 on slice region=EU"}',
                   facts(metrics={"recall": 1.0, "slices": "oops"}))

    assert not result.passed


# slice_gap

def test_slice_gap_passes_within_the_bound_and_reports_each_slice() -> None:
    result = check("{id: g, kind: slice_gap, metric: recall, slices: 'region=*', max_gap: 0.05}",
                   facts())

    assert result.passed, result.message
    assert result.observed == {"slices": {"region=EU": 0.82, "region=US": 0.85}, "gap": 0.03}


def test_slice_gap_fails_beyond_the_bound_naming_lowest_and_highest() -> None:
    result = check("{id: g, kind: slice_gap, metric: recall, slices: 'region=*', max_gap: 0.02}",
                   facts())

    assert not result.passed
    assert result.message == ("recall gap over slices 'region=*' is 0.03 (region=EU 0.82, "
                              "region=US 0.85), needs gap <= 0.02")


def test_slice_gap_equal_to_the_bound_passes_despite_float_noise() -> None:
    metrics = {"slices": {"a": {"recall": 0.9}, "b": {"recall": 0.85}}}

    result = check("{id: g, kind: slice_gap, metric: recall, slices: '*', max_gap: 0.05}",
                   facts(metrics=metrics))

    assert result.passed, result.message


@pytest.mark.parametrize("metrics", [
    {"slices": {"region=EU": {"recall": 0.8}, "device=ios": {"recall": 0.1}}},
    {"slices": {"region=EU": {"recall": 0.8}}},
    {},
])
def test_slice_gap_fails_with_fewer_than_two_matching_slices(metrics: dict[str, Any]) -> None:
    result = check("{id: g, kind: slice_gap, metric: recall, slices: 'region=*', max_gap: 1}",
                   facts(metrics=metrics))

    assert not result.passed
    assert "needs at least 2 slices matching 'region=*' with recall" in result.message


@pytest.mark.parametrize("us", [{"auc": 0.1}, {}, "not metrics"])
def test_slice_gap_fails_naming_a_matching_slice_that_lacks_the_metric(us: Any) -> None:
    metrics = {"slices": {"region=EU": {"recall": 0.90}, "region=APAC": {"recall": 0.88},
                          "region=US": us, "device=ios": {"auc": 0.5}}}

    result = check("{id: g, kind: slice_gap, metric: recall, slices: 'region=*', "
                   "max_gap: 0.05}", facts(metrics=metrics))

    assert not result.passed
    assert result.message == ("metric recall is missing on slice region=US, which matches "
                              "'region=*'")


def test_slice_gap_fails_on_a_matching_slice_whose_value_is_not_a_number() -> None:
    metrics = {"slices": {"region=EU": {"recall": 0.8}, "region=US": {"recall": "nan"},
                          "region=UK": {"recall": 0.8}}}

    result = check("{id: g, kind: slice_gap, metric: recall, slices: 'region=*', max_gap: 1}",
                   facts(metrics=metrics))

    assert not result.passed
    assert "region=US is 'nan', not a finite number" in result.message


@given(st.dictionaries(st.sampled_from(["region=EU", "region=US", "region=UK", "region=JP",
                                        "device=ios"]),
                       st.floats(0, 1), min_size=2),
       st.floats(0, 1))
@settings(max_examples=200)
def test_slice_gap_passes_exactly_when_matching_slices_are_within_the_bound(
        values: dict[str, float], max_gap: float) -> None:
    rule = SliceGapRule(id="g", kind="slice_gap", metric="recall", slices="region=*",
                        max_gap=max_gap)
    metrics = {"slices": {key: {"recall": value} for key, value in values.items()}}

    result = check_rule(rule, facts(metrics=metrics))

    matching = [value for key, value in values.items() if key.startswith("region=")]
    if len(matching) < 2:
        assert not result.passed
    else:
        gap = max(matching) - min(matching)
        assert result.passed == (round(gap, 12) <= max_gap)
        assert abs(result.observed["gap"] - gap) < 1e-9


# encryption

def test_encryption_passes_only_for_an_encrypted_artifact() -> None:
    rule = "{id: e, kind: encryption}"

    assert check(rule, facts()).passed
    failed = check(rule, facts(artifact_encrypted=False))
    assert (failed.passed, failed.message) == (False, "the artifact is not encrypted at rest")


# approvals

def test_approvals_pass_with_enough_distinct_approvers() -> None:
    result = check("{id: a, kind: approvals, count: 2}", facts())

    assert result.passed, result.message
    assert (result.observed, result.expected) == (["alice", "bob"], 2)


def test_approvals_count_distinct_people_across_requests() -> None:
    approvals = (request("r1", "dave", ("alice",)), request("r2", "erin", ("alice",)))

    result = check("{id: a, kind: approvals, count: 2}", facts(approvals=approvals))

    assert not result.passed
    assert result.observed == ["alice"]
    assert result.message.startswith("1 of 2 approvals")


def test_approvals_of_the_requester_or_the_actor_do_not_count() -> None:
    approvals = (request("r1", "dave", ("dave", "carol", "alice")),)

    result = check("{id: a, kind: approvals, count: 2}", facts(approvals=approvals))

    assert not result.passed
    assert result.observed == ["alice"]


def test_expired_approvals_do_not_count_at_the_decision_time() -> None:
    late = request("r1", "dave", ("alice", "bob"), expires_at=T0 - timedelta(seconds=1))

    result = check("{id: a, kind: approvals, count: 2}", facts(approvals=(late,)))

    assert not result.passed
    assert "1 request expired, rejected or withdrawn" in result.message


def test_without_a_decision_time_approvals_are_judged_by_stored_status() -> None:
    late = request("r1", "dave", ("alice", "bob"), expires_at=T0 - timedelta(seconds=1))
    given_facts = facts(approvals=(late,), details={})

    assert check("{id: a, kind: approvals, count: 2}", given_facts).passed
    # The documented behaviour, not the opposite (a missing time used to be said to fail).
    doc = " ".join((check_approvals.__doc__ or "").split())
    assert "without it, each request counts by its stored status" in doc


@pytest.mark.parametrize("status", [ApprovalStatus.REJECTED, ApprovalStatus.WITHDRAWN,
                                    ApprovalStatus.EXPIRED])
def test_closed_requests_do_not_count(status: ApprovalStatus) -> None:
    closed = request("r1", "dave", ("alice", "bob"), status=status)

    assert not check("{id: a, kind: approvals, count: 1}", facts(approvals=(closed,))).passed


def test_approvals_fail_on_an_unreadable_decision_time() -> None:
    result = check("{id: a, kind: approvals, count: 1}", facts(details={NOW_KEY: "tomorrow"}))

    assert not result.passed
    assert "'tomorrow' is not an ISO time" in result.message


# the engine

def test_policy_for_another_model_gate_or_target_does_not_apply() -> None:
    policy_set = load_policy_set({"p.yaml": rule_set("  - {id: e, kind: encryption}\n")})
    bare = facts(artifact_encrypted=False)

    for other in (replace(bare, model="churn"), replace(bare, gate="status"),
                  replace(bare, target="staging"), replace(bare, target=None)):
        decision = evaluate(policy_set, other)
        assert decision.allowed
        assert decision.reason == f"no policy governs {other.gate!r} of model {other.model!r}"
        assert decision.rules == ()
    assert not evaluate(policy_set, bare).allowed


def test_policy_without_targets_applies_to_any_target() -> None:
    policy_set = load_policy_set({"p.yaml": rule_set("  - {id: e, kind: encryption}\n",
                                                     targets="[]")})

    assert applicable(policy_set, "fraud-x", "alias", None)
    assert applicable(policy_set, "fraud-x", "alias", "staging")
    assert not applicable(policy_set, "fraud-x", "register", None)


def test_every_rule_passing_allows_and_records_each_rule() -> None:
    policy_set = load_policy_set({"p.yaml": rule_set(FULL_RULES)})

    decision = evaluate(policy_set, facts())

    assert decision.allowed
    assert decision.reason == f"7 rules of 1 policy passed (policy set {policy_set.digest[:12]})"
    assert [r["rule"] for r in decision.rules] == ["card", "lineage", "recall-eu", "auc",
                                                    "fairness", "encrypted", "four-eyes"]
    assert set(decision.rules[0]) == {"policy", "rule", "kind", "passed", "observed",
                                      "expected", "message"}
    json.dumps(decision.as_record(), allow_nan=False)


def test_all_failures_are_recorded_and_the_reason_names_the_first() -> None:
    policy_set = load_policy_set({"p.yaml": rule_set(FULL_RULES)})
    given_facts = facts(artifact_encrypted=False, tags={}, approvals=())

    decision = evaluate(policy_set, given_facts)

    assert not decision.allowed
    failing = [(r["rule"], r["kind"]) for r in decision.rules if not r["passed"]]
    assert failing == [("card", "required_metadata"), ("encrypted", "encryption"),
                       ("four-eyes", "approvals")]
    assert decision.reason == ("policy 'prod' rule 'card' failed: missing owner, intended_use, "
                               "limitations (and 2 more failing rules)")


def test_rules_of_every_applicable_policy_are_evaluated() -> None:
    policy_set = load_policy_set({
        "a.yaml": rule_set("  - {id: e, kind: encryption}\n", name="first"),
        "b.yaml": rule_set('  - {id: m, kind: metric, check: "recall >= 0.99"}\n',
                           name="second", models='["*"]', targets="[]"),
        "c.yaml": rule_set("  - {id: e, kind: encryption}\n", name="other", gates="[deploy]"),
    })

    decision = evaluate(policy_set, facts())

    assert [(r["policy"], r["rule"], r["passed"]) for r in decision.rules] == [
        ("first", "e", True), ("second", "m", False)]
    assert decision.reason == "policy 'second' rule 'm' failed: recall is 0.83, needs >= 0.99"


def test_evaluation_is_the_same_when_repeated() -> None:
    policy_set = load_policy_set({"p.yaml": rule_set(FULL_RULES)})
    given_facts = facts(metrics={"recall": 0.2})

    assert evaluate(policy_set, given_facts) == evaluate(policy_set, given_facts)


def test_empty_policy_set_allows_everything_saying_no_policy_governs() -> None:
    decision = evaluate(EMPTY_POLICY_SET, facts())

    assert decision.allowed
    assert decision.reason == "no policy governs 'alias' of model 'fraud-detector'"


def test_approval_requirement_takes_the_largest_count_and_shortest_expiry() -> None:
    policy_set = load_policy_set({
        "a.yaml": rule_set("  - {id: a, kind: approvals, count: 1, expires_after: 2d}\n",
                           name="a"),
        "b.yaml": rule_set("  - {id: a, kind: approvals, count: 3}\n"
                           "  - {id: b, kind: approvals, count: 2, expires_after: 12h}\n",
                           name="b"),
    })

    assert approval_requirement(policy_set, "fraud-x", "alias", "production") == (
        3, timedelta(hours=12))
    assert approval_requirement(policy_set, "churn", "alias", "production") == (0, None)
    assert approval_requirement(PolicySet("d", {}, ()), "fraud-x", "alias", "production") == (
        0, None)
