"""Canary arithmetic: validating a plan, the routes at each step, and what a verdict does.

Pure: no I/O. At step ``i`` the canary answers ``steps[i]`` percent and the primary the rest;
shadow routes are kept through a rollout. Reaching a step of 100 is promotion: the canary
becomes the sole primary. The state machine of a deployment is here too (``require``):

- ``active`` or ``rolled_back`` → ``rolling_out``: start a canary;
- ``active`` or ``rolled_back`` → ``active``: update or replace the routes;
- ``rolling_out`` ⇄ ``paused``: pause, resume (a paused rollout is not analysed);
- ``rolling_out`` or ``paused`` → ``active``: promote (by hand, or the last step);
- ``rolling_out``, ``paused`` or ``active`` → ``rolled_back``: roll back to ``last_good``
  (by hand, or enough failed analyses); ``active`` only when it has earlier routes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loopline.core.deployments import (
    ANSWERING,
    WEIGHT_TOTAL,
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    DeploymentState,
    Route,
    RouteRole,
)
from loopline.core.errors import ConflictError, InvalidArgumentError, InvalidTransitionError
from loopline.core.models import version_uri

VERDICTS = ("pass", "fail", "inconclusive")
_COUNTS = ("min_samples", "passes_to_promote", "failures_to_rollback")
_RATIOS = ("max_error_rate_increase", "max_p99_ratio")


class Move(StrEnum):
    """What a verdict does to a rollout."""

    COUNT = "count"  # counters change (or nothing does); routes and state stay
    STEP = "step"  # the canary moves to the next step
    PROMOTE = "promote"  # the next step is 100: the canary becomes the primary
    ROLLBACK = "rollback"  # too many failures: back to the last good routes


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verdict's effect: the move, the counters after it, and the step it leads to."""

    move: Move
    passes: int
    failures: int
    step: int


def require(deployment: Deployment, allowed: Collection[DeploymentState],
            target: DeploymentState) -> None:
    """Return when ``deployment`` may move to ``target`` from its state.

    Raises:
        InvalidTransitionError: naming the deployment, its state and ``target`` otherwise.
    """
    if deployment.state not in allowed:
        raise InvalidTransitionError("deployment", deployment.name, str(deployment.state),
                                     str(target))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(float(value))


def _check_steps(steps: Any, field: str) -> tuple[float, ...]:
    if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps:
        raise InvalidArgumentError(field, "name the canary's percent at each step, e.g. "
                                          "10,25,50,100")
    if not all(_number(s) and 0 < float(s) <= WEIGHT_TOTAL for s in steps):
        raise InvalidArgumentError(field, f"{list(steps)} must be percents in (0, 100]")
    values = tuple(float(s) for s in steps)
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise InvalidArgumentError(field, f"{list(steps)} must increase strictly")
    if values[-1] != WEIGHT_TOTAL:
        raise InvalidArgumentError(field, f"{list(steps)} must end at 100 (promotion)")
    if len(values) < 2:
        raise InvalidArgumentError(field, "needs a step below 100 before the last one; to "
                                          "switch at once, replace the primary instead")
    return values


def _check_analysis(policy: AnalysisPolicy, field: str) -> AnalysisPolicy:
    if policy.interval.total_seconds() <= 0:
        raise InvalidArgumentError(f"{field}.interval", f"{policy.interval} must be positive")
    for name in _RATIOS:
        value = getattr(policy, name)
        if not _number(value) or float(value) <= 0:
            raise InvalidArgumentError(f"{field}.{name}", f"{value!r} must be a positive "
                                                          "number")
    for name in _COUNTS:
        value = getattr(policy, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"{field}.{name}", f"{value!r} must be a whole "
                                                          "number from 1")
    for key, value in policy.extra.items():
        if not _number(value):
            raise InvalidArgumentError(f"{field}.extra.{key}", f"{value!r} must be a number")
    return policy


def validate_plan(plan: CanaryPlan, field: str = "canary") -> CanaryPlan:
    """Return ``plan`` with its steps as floats when it is a usable canary plan.

    Steps increase strictly, each in (0, 100], the last is 100 and one comes before it;
    the analysis interval and thresholds are positive.

    Raises:
        InvalidArgumentError: naming ``canary.steps`` or ``canary.analysis.<name>``.
    """
    if not isinstance(plan, CanaryPlan):
        raise InvalidArgumentError(field, "must be a CanaryPlan")
    steps = _check_steps(plan.steps, f"{field}.steps")
    return CanaryPlan(steps, _check_analysis(plan.analysis, f"{field}.analysis"))


def canary_route(routes: Sequence[Route]) -> Route:
    """Return the canary route of a rollout's routes.

    Raises:
        ConflictError: when there is none (the routes are not a rollout's).
    """
    for route in routes:
        if route.role is RouteRole.CANARY:
            return route
    raise ConflictError("the deployment has no canary route")


def _shadows(routes: Sequence[Route], answering: Route) -> list[Route]:
    """Return the shadow routes, less any that mirrors the version now answering."""
    return [r for r in routes if r.role is RouteRole.SHADOW and r.uri != answering.uri]


def require_single_primary(current: Deployment, model: str, version: int) -> None:
    """Return when a canary of ``model``/``version`` may start on ``current``.

    Raises:
        ConflictError: when ``current`` splits traffic between arms (A/B).
        InvalidArgumentError: naming ``model`` when the version is the primary already.
    """
    answering = [r for r in current.routes if r.role in ANSWERING]
    if len(answering) > 1:
        raise ConflictError(f"deployment {current.name!r} splits traffic between "
                            f"{len(answering)} arms; update it to one primary before starting "
                            "a canary")
    if (current.primary.model, current.primary.version) == (model, version):
        raise InvalidArgumentError("model", f"{version_uri(model, version)} is the primary of "
                                            f"deployment {current.name!r} already")


def with_canary(routes: Sequence[Route], model: str, version: int,
                percent: float) -> tuple[Route, ...]:
    """Return ``routes`` with the canary ``model``/``version`` at ``percent`` (below 100).

    The primary takes the rest; shadow routes are kept; an earlier canary route is replaced.
    """
    primary = next(r for r in routes if r.role is RouteRole.PRIMARY)
    canary = Route(model, version, percent, RouteRole.CANARY)
    return (Route(primary.model, primary.version, WEIGHT_TOTAL - percent, RouteRole.PRIMARY),
            canary, *_shadows(routes, canary))


def promoted(routes: Sequence[Route]) -> tuple[Route, ...]:
    """Return the routes once the canary answers everything: it is the sole primary.

    Raises:
        ConflictError: when ``routes`` have no canary route.
    """
    canary = canary_route(routes)
    primary = Route(canary.model, canary.version, WEIGHT_TOTAL, RouteRole.PRIMARY)
    return (primary, *_shadows(routes, primary))


def step_percent(plan: CanaryPlan, step: int) -> float:
    """Return the canary's percent at ``step`` (0-based)."""
    return plan.steps[step]


def judge(deployment: Deployment, verdict: str) -> Outcome:
    """Return what ``verdict`` (pass, fail, inconclusive) does to a rollout.

    Enough passes move to the next step (to promotion when it is 100); enough failures roll
    back; an inconclusive verdict changes nothing.

    Raises:
        InvalidArgumentError: naming ``verdict.verdict`` when it is not one of the three.
        ConflictError: when the deployment has no canary plan.
    """
    plan = deployment.canary
    if plan is None:
        raise ConflictError(f"deployment {deployment.name!r} has no canary plan")
    policy, step = plan.analysis, deployment.step
    if verdict == "pass":
        passes = deployment.passes + 1
        if passes < policy.passes_to_promote:
            return Outcome(Move.COUNT, passes, deployment.failures, step)
        following = step + 1
        last = following >= len(plan.steps) - 1
        return Outcome(Move.PROMOTE if last else Move.STEP, 0, 0, following)
    if verdict == "fail":
        failures = deployment.failures + 1
        if failures < policy.failures_to_rollback:
            return Outcome(Move.COUNT, deployment.passes, failures, step)
        return Outcome(Move.ROLLBACK, 0, 0, step)
    if verdict == "inconclusive":
        return Outcome(Move.COUNT, deployment.passes, deployment.failures, step)
    raise InvalidArgumentError("verdict.verdict", f"{verdict!r} is not one of "
                                                  f"{', '.join(VERDICTS)}")
