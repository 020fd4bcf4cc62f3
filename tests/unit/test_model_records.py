"""Model records: the status lifecycle, registration input checks, and gate decisions."""

from __future__ import annotations

from typing import Any

import pytest

from loopline.core.errors import InvalidArgumentError, InvalidTransitionError, PolicyDeniedError
from loopline.core.gates import AllowAll, GateAction, GateDecision, GateRequest
from loopline.core.models import (
    TRANSITIONS,
    ModelStatus,
    NewModelVersion,
    can_transition,
    check_transition,
    model_node,
    model_version_node,
    parse_status,
)
from loopline.core.ports import Gate

S = ModelStatus
DIGEST = "0f" * 32


def test_every_status_has_its_transitions_listed() -> None:
    assert set(TRANSITIONS) == set(ModelStatus)


@pytest.mark.parametrize(("source", "target"), [
    (S.CANDIDATE, S.STAGING), (S.CANDIDATE, S.PRODUCTION), (S.STAGING, S.PRODUCTION),
    (S.PRODUCTION, S.STAGING), (S.PRODUCTION, S.ARCHIVED), (S.ARCHIVED, S.CANDIDATE),
    (S.QUARANTINED, S.CANDIDATE), (S.QUARANTINED, S.ARCHIVED), (S.STAGING, S.STAGING),
])
def test_allowed_moves(source: ModelStatus, target: ModelStatus) -> None:
    assert can_transition(source, target)
    check_transition("models:/m/1", source, target)


@pytest.mark.parametrize(("source", "target"), [
    (S.PRODUCTION, S.CANDIDATE), (S.ARCHIVED, S.PRODUCTION), (S.ARCHIVED, S.STAGING),
    (S.ARCHIVED, S.QUARANTINED), (S.QUARANTINED, S.PRODUCTION), (S.QUARANTINED, S.STAGING),
])
def test_forbidden_moves_name_the_version_and_both_statuses(
        source: ModelStatus, target: ModelStatus) -> None:
    assert not can_transition(source, target)
    with pytest.raises(InvalidTransitionError, match=f"'models:/m/1'.*'{source}'.*'{target}'"):
        check_transition("models:/m/1", source, target)


@pytest.mark.parametrize("status", [S.CANDIDATE, S.STAGING, S.PRODUCTION])
def test_quarantine_is_reachable_from_every_live_status(status: ModelStatus) -> None:
    assert can_transition(status, S.QUARANTINED)


def test_an_unknown_status_lists_the_ones_there_are() -> None:
    assert parse_status("staging") is S.STAGING
    with pytest.raises(InvalidArgumentError, match="candidate, staging, production"):
        parse_status("retired")


def test_lineage_nodes_of_models_and_versions() -> None:
    assert model_node("churn").id == "model:churn"
    assert model_version_node("churn", 7).id == "model_version:churn@7"


@pytest.mark.parametrize(("fields", "field"), [
    ({"name": "bad name"}, "model"),
    ({"artifact_digest": "abc"}, "artifact_digest"),
    ({"artifact_digest": DIGEST.upper()}, "artifact_digest"),
    ({"flavor": "Sk Learn"}, "flavor"),
    ({"flavor": ""}, "flavor"),
    ({"datasets": ("iris",)}, "datasets"),
    ({"datasets": ("iris@0",)}, "datasets"),
    ({"datasets": ("bad name@1",)}, "datasets"),
    ({"datasets": ["iris@1"]}, "datasets"),
    ({"run_id": " padded"}, "run_id"),
    ({"metrics": {"auc": object()}}, "metrics"),
    ({"params": {1: "x"}}, "params"),
    ({"tags": ["x"]}, "tags"),
    ({"signature": "not a mapping"}, "signature"),
    ({"description": 5}, "description"),
])
def test_registration_input_is_checked_naming_the_field(
        fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"name": "churn", "artifact_digest": DIGEST, "flavor": "skops",
                              **fields}
    with pytest.raises(InvalidArgumentError) as caught:
        NewModelVersion(**values)
    assert caught.value.field == field


def test_non_finite_metrics_are_accepted_for_storing_by_name() -> None:
    NewModelVersion("churn", DIGEST, "skops", metrics={"auc": float("nan")})


def test_allow_all_is_a_gate_that_allows_and_says_why() -> None:
    gate: Gate = AllowAll()
    decision = gate.check(GateRequest(GateAction.ALIAS, "churn", 1, "ann", "champion"))
    assert decision.allowed and "allow-all" in decision.reason
    decision.require("moving an alias")


def test_a_denying_decision_raises_naming_the_action_and_the_reason() -> None:
    decision = GateDecision(False, "two approvals needed", ({"rule": "approvals", "saw": 1},))
    with pytest.raises(PolicyDeniedError, match="moving models:/m@champion.*two approvals"):
        decision.require("moving models:/m@champion")
    assert decision.as_record() == {"allowed": False, "reason": "two approvals needed",
                                    "rules": [{"rule": "approvals", "saw": 1}]}
