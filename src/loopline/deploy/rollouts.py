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

Quarantine: every verdict (pass, fail or inconclusive) for a rollout whose canary is
quarantined or archived meanwhile rolls the rollout back at once, whatever the numbers, with
the reason in its history. A rollback never restores an unservable version
(``rollback_target``): when ``last_good`` holds one, the deployment falls back to its current
primary alone at 100 % (canary, other arms and shadows dropped) if that primary may serve;
otherwise the rollback is refused (by hand: ``ConflictError``; by a verdict: the rollout
pauses with the reason, so the controller keeps running and a person updates the routes).
A step whose routes hold an unservable version other than the canary (the primary or a
shadow quarantined meanwhile) pauses the rollout the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from loopline.core.deployments import (
    WEIGHT_TOTAL,
    Deployment,
    DeploymentState,
    RolloutVerdict,
    Route,
    RouteRole,
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


@dataclass(frozen=True, slots=True)
class RollbackTarget:
    """The routes a rollback goes to, and why they are not ``last_good`` when they are not."""

    routes: tuple[Route, ...]
    fallback: str | None = None  # what was done instead of restoring last_good, and why
    details: Mapping[str, Any] = field(default_factory=dict)


def _listed(bad: Mapping[str, str]) -> str:
    return ", ".join(f"{uri} ({status})" for uri, status in bad.items())


def rollback_target(uow: UnitOfWork, current: Deployment,
                    avoid: Collection[str] = ()) -> RollbackTarget:
    """Return where rolling ``current`` back leads: ``last_good``, or its primary alone.

    When ``last_good`` holds a version that may not serve (quarantined or archived, or a URI
    in ``avoid``), the target is the current primary alone at 100 % (no canary, no other arm,
    no shadow) provided that primary may serve and is not in ``avoid``.

    Raises:
        ConflictError: when it has no last good routes (it never changed); or naming the
            unservable version(s) of ``last_good`` when the current primary may not serve
            either, or when it routes to that primary alone already (nothing to roll back to).
    """
    if not current.last_good:
        raise ConflictError(f"deployment {current.name!r} has no earlier routes to return to")
    bad: dict[str, str] = {uri: str(status)
                           for uri, status in records.unservable(uow, current.last_good).items()}
    bad.update({r.uri: "being evacuated" for r in current.last_good if r.uri in avoid})
    if not bad:
        return RollbackTarget(current.last_good)
    primary = current.primary
    alone = (Route(primary.model, primary.version, WEIGHT_TOTAL, RouteRole.PRIMARY),)
    refused = (f"deployment {current.name!r} cannot roll back: its last good routes hold "
               f"{_listed(bad)}, which may not serve")
    blocked = {uri: str(status) for uri, status in records.unservable(uow, alone).items()}
    blocked.update({primary.uri: "being evacuated"} if primary.uri in avoid else {})
    if blocked:
        raise ConflictError(f"{refused}, and its current primary is {_listed(blocked)} too; "
                            "update it to a servable version")
    if alone == current.routes:
        raise ConflictError(f"{refused}, and it routes to its current primary {primary.uri} "
                            "alone already")
    return RollbackTarget(alone, f"last good routes hold {_listed(bad)}; routed 100% to the "
                                 f"current primary {primary.uri} instead",
                          {"fallback": {"unservable": bad, "primary": primary.uri}})


def rolled_back(uow: UnitOfWork, current: Deployment, actor: str,
                routes: tuple[Route, ...]) -> Deployment:
    """Return ``current`` on ``routes`` (see ``rollback_target``), state ``rolled_back``."""
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
    evacuated = _quarantined(uow, context, current, verdict)
    if evacuated is not None:
        return evacuated
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
        return _roll_back(uow, context, current, verdict, reason)
    return _step(uow, context, current, verdict, outcome)


def _quarantined(uow: UnitOfWork, context: Context, current: Deployment,
                 verdict: RolloutVerdict) -> Deployment | None:
    """Roll back a rollout whose canary may no longer serve; ``None`` when it may."""
    canary = canary_route(current.routes)
    status = records.unservable(uow, (canary,)).get(canary.uri)
    if status is None:
        return None
    reason = (f"automatic rollback: canary {canary.uri} is {status}; it may not serve "
              f"(verdict {verdict.id}: {verdict.verdict})")
    return _roll_back(uow, context, current, verdict, reason)


def _roll_back(uow: UnitOfWork, context: Context, current: Deployment,
               verdict: RolloutVerdict, reason: str) -> Deployment:
    """Roll back on a verdict; pause with the reason when no servable routes are left."""
    try:
        target = rollback_target(uow, current)
    except ConflictError as refused:
        return _pause(uow, context, current, verdict,
                      f"{reason}; rollout paused instead: {refused.message}")
    text = reason if target.fallback is None else f"{reason}; {target.fallback}"
    return records.save(uow, current, rolled_back(uow, current, context.actor, target.routes),
                        records.Note("rolled_back", text, None,
                                     {**_numbers(verdict), **target.details}))


def _pause(uow: UnitOfWork, context: Context, current: Deployment, verdict: RolloutVerdict,
           reason: str, gate: Mapping[str, Any] | None = None) -> Deployment:
    """Pause the rollout at its step, with ``reason`` in its history."""
    paused = next_revision(uow, current, context.actor, state=DeploymentState.PAUSED,
                           passes=0, failures=0)
    action = "paused" if gate is None else "step_denied"
    return records.save(uow, current, paused,
                        records.Note(action, reason, gate, _numbers(verdict)))


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
    routes = promoted(current.routes) if outcome.move is Move.PROMOTE else \
        canary_routes(current.routes, canary.model, canary.version, percent)
    bad = records.unservable(uow, routes)
    if bad:
        return _pause(uow, context, current, verdict,
                      f"rollout step to {percent:g}% refused, rollout paused: "
                      f"{_listed({u: str(s) for u, s in bad.items()})} may not serve")
    decision = _ask_step(uow, context, current, canary, percent)
    if not decision.allowed:
        reason = f"rollout step to {percent:g}% denied, rollout paused: {decision.reason}"
        return _pause(uow, context, current, verdict, reason, decision.as_record())
    details = _numbers(verdict)
    if outcome.move is Move.PROMOTE:
        after = next_revision(uow, current, context.actor, routes=routes,
                              strategy=infer_strategy(routes), state=DeploymentState.ACTIVE,
                              step=0, step_started_at=None, passes=0, failures=0)
        reason = f"canary {canary.uri} passed every step; promoted to 100%"
        return records.save(uow, current, after,
                            records.Note("promoted", reason, decision.as_record(), details))
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
