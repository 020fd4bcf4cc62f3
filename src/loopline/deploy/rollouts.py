"""Acting on canary verdicts: count, step, promote, roll back, or pause on a denied step.

``apply`` runs inside the write transaction that locked the deployment. It is idempotent: a
verdict already stored (by id), one for a window already judged at this revision and step,
one for another revision or step than the deployment's current ones (stale: the deployment
moved since it was judged), and any verdict while the rollout is not ``rolling_out``
(a paused rollout is not analysed) are ignored and nothing is written. So a controller that
crashed after committing and judges again cannot move a rollout twice.

Otherwise the verdict is stored and ``deploy.steps.judge`` says what it does. Counting a
pass or a failure writes only the counters; a step move asks the gate ``rollout_step`` with
``target`` = the new percent as a whole number (``"25"``); the last step (100) is promotion.
A denied step does not raise: the rollout pauses at its step with the denial in its history
(and audit entry), so the controller keeps running and a person decides (resume, promote or
roll back). Enough failures roll back to ``last_good`` on their own; a rollback never asks
the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from loopline.core.deployments import (
    Deployment,
    DeploymentState,
    RolloutVerdict,
    Route,
)
from loopline.core.errors import ConflictError, InvalidArgumentError, PolicyDeniedError
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.core.names import validate_name
from loopline.core.ports import Gate
from loopline.deploy.gating import ask
from loopline.deploy.specs import infer_strategy
from loopline.deploy.steps import VERDICTS, Move, Outcome, canary_route, judge, promoted
from loopline.deploy.steps import with_canary as canary_routes
from loopline.store import UnitOfWork
from loopline.store import deployment_records as records
from loopline.store.deployment_queries import routes_record

MAX_VERDICT_ID = 32


@dataclass(frozen=True, slots=True)
class Context:
    """Who acts on verdicts, and the gate step moves ask."""

    gate: Gate
    actor: str


def next_revision(uow: UnitOfWork, current: Deployment, actor: str,
                  **changes: Any) -> Deployment:
    """Return ``current`` at its next revision, changed by ``actor`` now, with ``changes``."""
    return replace(current, revision=current.revision + 1, updated_at=uow.now(),
                   updated_by=actor, **changes)


def rolled_back(uow: UnitOfWork, current: Deployment, actor: str) -> Deployment:
    """Return ``current`` back on its last good routes, state ``rolled_back``.

    Raises:
        ConflictError: when it has no last good routes (it has never changed).
    """
    if not current.last_good:
        raise ConflictError(f"deployment {current.name!r} has no earlier routes to return to")
    routes = current.last_good
    return next_revision(uow, current, actor, routes=routes, strategy=infer_strategy(routes),
                         state=DeploymentState.ROLLED_BACK, step=0, step_started_at=None,
                         passes=0, failures=0)


def check_verdict(verdict: RolloutVerdict) -> None:
    """Return when ``verdict`` is well formed.

    Raises:
        InvalidArgumentError: naming ``verdict.<field>`` otherwise.
    """
    if not isinstance(verdict.id, str) or not 0 < len(verdict.id) <= MAX_VERDICT_ID:
        raise InvalidArgumentError("verdict.id", f"must be 1-{MAX_VERDICT_ID} characters")
    validate_name(verdict.deployment, "verdict.deployment")
    if verdict.verdict not in VERDICTS:
        raise InvalidArgumentError("verdict.verdict", f"{verdict.verdict!r} is not one of "
                                                      f"{', '.join(VERDICTS)}")
    if verdict.window_end < verdict.window_start:
        raise InvalidArgumentError("verdict.window_end", "must not be before window_start")


def _stale(current: Deployment, verdict: RolloutVerdict) -> bool:
    return (current.state is not DeploymentState.ROLLING_OUT
            or verdict.revision != current.revision or verdict.step != current.step)


def apply(uow: UnitOfWork, context: Context, current: Deployment,
          verdict: RolloutVerdict) -> Deployment:
    """Store ``verdict`` and act on it (see the module docstring); return the deployment now."""
    if _stale(current, verdict) or records.verdict_seen(uow, verdict):
        return current
    records.insert_verdict(uow, verdict)
    outcome = judge(current, verdict.verdict)
    if outcome.move is Move.COUNT:
        if (outcome.passes, outcome.failures) == (current.passes, current.failures):
            return current
        return records.save_counters(uow, replace(current, passes=outcome.passes,
                                                  failures=outcome.failures))
    if outcome.move is Move.ROLLBACK:
        canary = canary_route(current.routes)
        reason = (f"automatic rollback: canary {canary.uri} failed analysis "
                  f"{current.failures + 1} time(s) at {canary.weight:g}% (verdict "
                  f"{verdict.id})")
        return records.save(uow, current, rolled_back(uow, current, context.actor),
                            records.Note("rolled_back", reason, None, _numbers(verdict)))
    return _step(uow, context, current, verdict, outcome)


def _numbers(verdict: RolloutVerdict) -> dict[str, Any]:
    return {"verdict": {"id": verdict.id, "verdict": verdict.verdict,
                        "numbers": dict(verdict.numbers)}}


def _step(uow: UnitOfWork, context: Context, current: Deployment, verdict: RolloutVerdict,
          outcome: Outcome) -> Deployment:
    """Move the canary to ``outcome.step`` (promotion at 100) once the gate allows it."""
    plan = current.canary
    if plan is None:  # judge refuses a rollout without a plan first; this narrows the type
        raise ConflictError(f"deployment {current.name!r} has no canary plan")
    percent = plan.steps[outcome.step]
    canary = canary_route(current.routes)
    decision = _ask_step(uow, context, current, canary, percent)
    details = _numbers(verdict)
    if not decision.allowed:
        paused = next_revision(uow, current, context.actor, state=DeploymentState.PAUSED,
                               passes=0, failures=0)
        reason = f"rollout step to {percent:g}% denied, rollout paused: {decision.reason}"
        return records.save(uow, current, paused,
                            records.Note("step_denied", reason, decision.as_record(), details))
    if outcome.move is Move.PROMOTE:
        routes = promoted(current.routes)
        after = next_revision(uow, current, context.actor, routes=routes,
                              strategy=infer_strategy(routes), state=DeploymentState.ACTIVE,
                              step=0, step_started_at=None, passes=0, failures=0)
        reason = f"canary {canary.uri} passed every step; promoted to 100%"
        return records.save(uow, current, after,
                            records.Note("promoted", reason, decision.as_record(), details))
    routes = canary_routes(current.routes, canary.model, canary.version, percent)
    after = next_revision(uow, current, context.actor, routes=routes, step=outcome.step,
                          step_started_at=uow.now(), passes=0, failures=0)
    reason = (f"canary {canary.uri} passed analysis; step {outcome.step + 1} of "
              f"{len(plan.steps)}: {percent:g}%")
    return records.save(uow, current, after,
                        records.Note("stepped", reason, decision.as_record(), details))


def _ask_step(uow: UnitOfWork, context: Context, current: Deployment, canary: Route,
              percent: float) -> GateDecision:
    """Ask ``rollout_step``; a refusal by role comes back as a denial, not an exception."""
    request = GateRequest(GateAction.ROLLOUT_STEP, canary.model, canary.version,
                          context.actor, str(int(percent)),
                          {"deployment": current.name, "step": current.step + 1,
                           "percent": percent, "routes": routes_record(current.routes)})
    try:
        return ask(uow, context.gate, request)
    except PolicyDeniedError as denied:
        return GateDecision(False, denied.message)
