"""Asking the gate about a deployment change: which versions gain traffic, and the record kept.

A change that routes traffic asks ``deploy`` once for every version that gains some (an
answering route whose weight grows, or a new shadow), with ``target`` = the deployment's
name; a change that gains no version anything (shrinking an arm, say) asks for the primary.
Every question is asked inside the change's write transaction once it holds the append lock
(``uow.serialise``), as the registry does, so no role, approval or policy can change between
the decision and the write it allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loopline.core.deployments import ANSWERING, Route, RouteRole
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.core.ports import Gate
from loopline.store import UnitOfWork
from loopline.store.deployment_queries import routes_record


def gaining(before: Sequence[Route], after: Sequence[Route]) -> list[Route]:
    """Return the routes of ``after`` that gain traffic over ``before`` (at least the primary)."""
    prior = {r.uri: r.weight for r in before if r.role in ANSWERING}
    mirrored = {r.uri for r in before if r.role is RouteRole.SHADOW}
    found = [r for r in after
             if (r.role in ANSWERING and r.weight > prior.get(r.uri, 0.0))
             or (r.role is RouteRole.SHADOW and r.uri not in mirrored | prior.keys())]
    return found or [next(r for r in after if r.role is RouteRole.PRIMARY)]


def ask(uow: UnitOfWork, gate: Gate, request: GateRequest) -> GateDecision:
    """Ask ``gate`` about ``request`` inside ``uow``, once it holds the append lock."""
    uow.serialise()
    return gate.check(request)


def decisions_record(decisions: Sequence[GateDecision]) -> dict[str, Any] | None:
    """Return what a change's history keeps of the decisions that allowed it."""
    if not decisions:
        return None
    if len(decisions) == 1:
        return decisions[0].as_record()
    return {"allowed": all(d.allowed for d in decisions),
            "reason": f"{len(decisions)} versions gaining traffic were each allowed",
            "decisions": [d.as_record() for d in decisions]}


def allow_deploy(uow: UnitOfWork, gate: Gate, actor: str, name: str,
                 change: Mapping[str, Any]) -> dict[str, Any] | None:
    """Ask ``deploy`` for each version gaining traffic in ``change``; return the record kept.

    ``change`` holds ``before`` and ``after`` (route tuples) and anything else a policy may
    look at (``strategy``, ``action``).

    Raises:
        PolicyDeniedError: naming the version and the deployment when one is denied.
        AccessDeniedError: when ``actor`` may not write the version's model.
    """
    before: Sequence[Route] = change["before"]
    after: Sequence[Route] = change["after"]
    extra = {k: v for k, v in change.items() if k not in ("before", "after")}
    decisions = []
    for route in gaining(before, after):
        decision = ask(uow, gate, GateRequest(
            GateAction.DEPLOY, route.model, route.version, actor, name,
            {"deployment": name, "role": str(route.role), "weight": route.weight,
             "routes": routes_record(after), "from_routes": routes_record(before), **extra}))
        decision.require(f"deploying {route.uri} to {name!r} as {route.role} at "
                         f"{route.weight:g}%")
        decisions.append(decision)
    return decisions_record(decisions)
