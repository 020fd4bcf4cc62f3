"""``rollback``: return the alert's deployment to its last good routes, exactly once.

The rollback (``DeploymentService.rollback``) and the action's ``done`` commit in one write
transaction (its ``within`` hook), so a worker killed at any point leaves either both or
neither: a worker taking the action over after that rolls back once, or finds it done. A
deployment rolled back already (by a person, or another playbook) is ``skipped`` saying so.

Params: ``reason`` (optional text for the deployment's history).
"""

from __future__ import annotations

from typing import Any

from loopline.automation.held import Held
from loopline.automation.ports import Tools
from loopline.core.deployments import Deployment, DeploymentState
from loopline.core.errors import InvalidTransitionError
from loopline.core.monitoring import ActionState

__all__ = ["perform"]


def reason_of(held: Held, verb: str) -> str:
    """Return the history reason for an effect of ``held``: the step's, else a default."""
    given = held.params.get("reason")
    if isinstance(given, str) and given.strip():
        return given
    alert = held.alert
    return (f"{verb} by playbook {held.action.playbook!r} (action {held.action.id}) on alert "
            f"{alert.alert_id}, rule {alert.rule!r}")


def _done(after: Deployment) -> dict[str, Any]:
    return {"revision": after.revision, "routes": [r.as_record() for r in after.routes],
            "state": str(after.state)}


def perform(held: Held, tools: Tools) -> None:
    """Roll the deployment back and mark the action done in the same transaction.

    Raises:
        NotFoundError, ConflictError, AccessDeniedError: as ``DeploymentService.rollback``
            (the action fails with the message).
    """
    deployments = tools.ports.deployments
    name = held.alert.deployment
    try:
        deployments.rollback(name, reason_of(held, "rolled back"),
                             within=held.done_within(_done))
    except InvalidTransitionError:
        current = deployments.get(name)
        if current.state is not DeploymentState.ROLLED_BACK:
            raise
        held.move(ActionState.SKIPPED, {
            "reason": f"deployment {name!r} is rolled back already (revision "
                      f"{current.revision})", "revision": current.revision})
