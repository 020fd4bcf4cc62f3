"""Taking a version out of service: what ``DeploymentService.evacuate`` does to one deployment.

Quarantining a version is always possible and does not touch a deployment by itself: a
running model server keeps the version it has loaded until the deployment changes (a new
revision). ``evacuate`` makes that change for every deployment routing to the version, each
in its own write transaction, never asking the gate (like a rollback) but authorised and
audited:

- a shadow route to it (and nothing else) is removed; the rollout or state goes on;
- an answering route to it (primary, canary or A/B arm) rolls the deployment back
  (``rollouts.rollback_target`` with the version avoided: ``last_good``, or the current
  primary alone at 100 % when ``last_good`` holds it or another unservable version);
- when neither is possible (rolled back already, or nothing servable to return to) the
  deployment is left as it is and reported ``refused`` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loopline.core.deployments import Deployment, DeploymentState, Route, RouteRole
from loopline.core.errors import AccessDeniedError, ConflictError, InvalidTransitionError
from loopline.deploy.rollouts import next_revision, rollback_target, rolled_back
from loopline.deploy.specs import infer_strategy
from loopline.store import MetadataStore, UnitOfWork
from loopline.store import deployment_records as records

IN_ROLLOUT = (DeploymentState.ROLLING_OUT, DeploymentState.PAUSED)


@dataclass(frozen=True, slots=True)
class Evacuation:
    """What evacuating a version did to one deployment.

    ``action`` is ``rolled_back``, ``route_removed``, ``unchanged`` (it stopped routing to
    the version meanwhile) or ``refused`` (``detail`` says why); ``revision`` is the
    deployment's revision afterwards.
    """

    deployment: str
    action: str
    detail: str
    revision: int


def plan(uow: UnitOfWork, current: Deployment, uri: str, actor: str,
         reason: str) -> tuple[Deployment, records.Note] | None:
    """Return ``current`` without routes to ``uri`` and the note kept; ``None`` if it has none.

    Raises:
        ConflictError: naming the deployment when it cannot stop answering with ``uri``.
    """
    routed = [r for r in current.routes if r.uri == uri]
    if not routed:
        return None
    if all(r.role is RouteRole.SHADOW for r in routed):
        routes = tuple(r for r in current.routes if r.uri != uri)
        strategy = current.strategy if current.state in IN_ROLLOUT else infer_strategy(routes)
        after = next_revision(uow, current, actor, routes=routes, strategy=strategy)
        return after, records.Note("route_removed", f"{reason}; shadow route to {uri} removed",
                                   None, {"evacuated": uri})
    if current.state is DeploymentState.ROLLED_BACK:
        raise ConflictError(f"deployment {current.name!r} is rolled back already and answers "
                            f"with {uri}; update it to a servable version")
    target = rollback_target(uow, current, avoid={uri})
    text = f"{reason}; rolled back off {uri}"
    if target.fallback is not None:
        text = f"{text}; {target.fallback}"
    return (rolled_back(uow, current, actor, target.routes),
            records.Note("rolled_back", text, None, {"evacuated": uri, **target.details}))


Authorize = Callable[[Deployment, Sequence[Route]], None]


def evacuate_one(store: MetadataStore, actor: str, authorize: Authorize, found: Deployment,
                 uri: str, reason: str) -> Evacuation:
    """Take ``uri`` out of deployment ``found`` in one write transaction; report what happened.

    A refusal (nothing servable to return to, a rolled-back deployment answering with it, a
    state or revision that moved, or an actor without ``write``) writes nothing and comes
    back as ``refused`` rather than raising, so the other deployments are still evacuated.
    """
    try:
        with store.write(actor) as uow:
            current = records.lock(uow, found.name)
            authorize(current, current.last_good)
            change = plan(uow, current, uri, actor, reason)
            if change is None:
                return Evacuation(found.name, "unchanged", f"no route to {uri}",
                                  current.revision)
            saved = records.save(uow, current, *change)
    except (ConflictError, InvalidTransitionError, AccessDeniedError) as refused:
        return Evacuation(found.name, "refused", refused.message, found.revision)
    return Evacuation(found.name, change[1].action, change[1].reason, saved.revision)
