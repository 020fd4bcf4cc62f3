"""Canary arithmetic: every step's routes are a servable split, passes walk the plan to
promotion, failures roll back, plans and verdicts are validated naming their fields, and the
text forms people type parse or are refused naming the option."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline.core.deployments import (
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    DeploymentState,
    Route,
    RouteRole,
    Strategy,
    check_routes,
)
from loopline.core.errors import InvalidArgumentError, InvalidTransitionError
from loopline.deploy.gating import gaining
from loopline.deploy.specs import (
    infer_strategy,
    parse_arm,
    parse_interval,
    parse_steps,
    validate_sticky_key,
)
from loopline.deploy.steps import Move, judge, promoted, require, validate_plan, with_canary

P, C, S = RouteRole.PRIMARY, RouteRole.CANARY, RouteRole.SHADOW
WHEN = datetime(2026, 1, 1, tzinfo=UTC)
BASE = (Route("m", 1, 100.0, P), Route("m", 3, 50.0, S))


def _rollout(plan: CanaryPlan, step: int = 0, passes: int = 0, failures: int = 0) -> Deployment:
    routes = with_canary(BASE, "m", 2, plan.steps[step])
    return Deployment("web", Strategy.CANARY, routes, DeploymentState.ROLLING_OUT, 2, WHEN,
                      "t", WHEN, "t", canary=plan, step=step, step_started_at=WHEN,
                      passes=passes, failures=failures, last_good=BASE)


@given(st.floats(min_value=0.001, max_value=99.999, allow_nan=False))
def test_every_canary_percent_gives_a_servable_split_keeping_shadows(percent: float) -> None:
    routes = with_canary(BASE, "m", 2, percent)
    assert check_routes(routes) == routes
    assert routes[1] == Route("m", 2, percent, C) and routes[2] == BASE[1]
    assert promoted(routes) == (Route("m", 2, 100.0, P), BASE[1])


@given(st.lists(st.floats(min_value=0.5, max_value=99.5), min_size=1, max_size=6, unique=True),
       st.integers(min_value=1, max_value=3))
def test_passes_walk_every_step_in_order_then_promote(below: list[float], needed: int) -> None:
    plan = validate_plan(CanaryPlan((*sorted(below), 100.0),
                                    AnalysisPolicy(passes_to_promote=needed)))
    step, passes, moves = 0, 0, []
    while True:
        outcome = judge(_rollout(plan, step, passes), "pass")
        if outcome.move is Move.COUNT:
            passes = outcome.passes
            continue
        moves.append(outcome.move)
        if outcome.move is Move.PROMOTE:
            break
        assert outcome.step == step + 1 and outcome.passes == 0
        step, passes = outcome.step, 0
    assert moves == [Move.STEP] * (len(plan.steps) - 2) + [Move.PROMOTE]


def test_failures_count_then_roll_back_and_inconclusive_changes_nothing() -> None:
    plan = CanaryPlan(analysis=AnalysisPolicy(failures_to_rollback=2))
    first = judge(_rollout(plan, 1, passes=0), "fail")
    assert (first.move, first.failures) == (Move.COUNT, 1)
    assert judge(_rollout(plan, 1, failures=1), "fail").move is Move.ROLLBACK
    same = judge(_rollout(plan, 1, passes=1, failures=1), "inconclusive")
    assert (same.move, same.passes, same.failures, same.step) == (Move.COUNT, 1, 1, 1)
    with pytest.raises(InvalidArgumentError) as caught:
        judge(_rollout(plan), "maybe")
    assert caught.value.field == "verdict.verdict"


@pytest.mark.parametrize(("plan", "field"), [
    (CanaryPlan(()), "canary.steps"),
    (CanaryPlan((10.0, 10.0, 100.0)), "canary.steps"),
    (CanaryPlan((10.0, 150.0)), "canary.steps"),
    (CanaryPlan((10.0, 90.0)), "canary.steps"),
    (CanaryPlan((100.0,)), "canary.steps"),
    (CanaryPlan((-5.0, 100.0)), "canary.steps"),
    (CanaryPlan(analysis=AnalysisPolicy(interval=timedelta(seconds=-1))),
     "canary.analysis.interval"),
    (CanaryPlan(analysis=AnalysisPolicy(max_error_rate_increase=0.0)),
     "canary.analysis.max_error_rate_increase"),
    (CanaryPlan(analysis=AnalysisPolicy(passes_to_promote=0)),
     "canary.analysis.passes_to_promote"),
    (CanaryPlan(analysis=AnalysisPolicy(failures_to_rollback=True)),
     "canary.analysis.failures_to_rollback"),
    (CanaryPlan(analysis=AnalysisPolicy(extra={"drift": float("nan")})),
     "canary.analysis.extra.drift"),
])
def test_a_bad_plan_is_refused_naming_its_field(plan: CanaryPlan, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_plan(plan)
    assert caught.value.field == field


def test_require_names_the_deployment_its_state_and_the_target() -> None:
    rollout = _rollout(CanaryPlan())
    require(rollout, (DeploymentState.ROLLING_OUT,), DeploymentState.PAUSED)
    with pytest.raises(InvalidTransitionError, match="'web' cannot move from 'rolling_out' "
                                                     "to 'rolled_back'"):
        require(rollout, (DeploymentState.ACTIVE,), DeploymentState.ROLLED_BACK)


def test_the_versions_gaining_traffic_are_asked_about() -> None:
    split = (Route("m", 1, 60.0, P), Route("m", 2, 40.0, C))
    assert gaining((), BASE) == list(BASE)
    assert gaining(BASE, split) == [split[1]]
    assert gaining(split, (Route("m", 1, 80.0, P), Route("m", 2, 20.0, C))) == [
        Route("m", 1, 80.0, P)]
    assert gaining(split, (Route("m", 1, 50.0, P), Route("m", 2, 50.0, C))) == [
        Route("m", 2, 50.0, C)]
    assert gaining(BASE, BASE) == [BASE[0]]  # nothing gains: the primary is asked


def test_strategies_follow_the_routes() -> None:
    assert infer_strategy(BASE) is Strategy.SHADOW
    assert infer_strategy(BASE[:1]) is Strategy.REPLACE
    assert infer_strategy((Route("m", 1, 50.0, P), Route("m", 2, 50.0, C))) is Strategy.AB


def test_text_forms_parse_or_are_refused_naming_the_option() -> None:
    assert parse_arm("models:/fraud/3=25") == ("models:/fraud/3", 25.0)
    assert parse_steps("5, 20,50%,100") == (5.0, 20.0, 50.0, 100.0)
    assert parse_interval("90") == timedelta(seconds=90)
    assert parse_interval("5m") == timedelta(minutes=5)
    assert parse_interval("250ms") == timedelta(milliseconds=250)
    assert validate_sticky_key("header:X-User") == "header:x-user"
    for call, field in ((lambda: parse_arm("models:/fraud/3"), "--arm"),
                        (lambda: parse_arm("models:/fraud/3=150"), "--arm"),
                        (lambda: parse_steps("10,x,100"), "--steps"),
                        (lambda: parse_interval("soon"), "--interval"),
                        (lambda: parse_interval("0s"), "--interval"),
                        (lambda: parse_interval("2d"), "--interval"),
                        (lambda: validate_sticky_key("query:user"), "sticky_key"),
                        (lambda: validate_sticky_key("header:"), "sticky_key")):
        with pytest.raises(InvalidArgumentError) as caught:
            call()
        assert caught.value.field == field
