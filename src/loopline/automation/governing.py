"""Whether a playbook action may run: the gate, the step's own approval, and approval requests.

Every action is put to the gate (``GateAction.PLAYBOOK_ACTION``, target = the action's kind,
on the model version it concerns: see ``subject_version``) before it runs, so a policy can
govern it like any registry change: deny it (the action is ``skipped`` with the reason), or
require approvals (an ``approvals`` rule; the action waits). A step with
``requires_approval: true`` waits for an approval whatever the policies say.

Waiting means an approval request (``governance.approvals``) for that gate, target and
version, made by the automation's actor, so four-eyes keeps the automation from approving
itself. One open request exists per version, gate and target (the approvals service's
rule), so actions of one kind on one version share it while it is open: an approval covers
that kind of action on that version until it expires, as approvals do for every gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loopline.automation.alerts import AlertContext
from loopline.automation.ports import AutomationPorts
from loopline.core.deployments import Deployment, RouteRole
from loopline.core.errors import AlreadyExistsError, ConflictError, InvalidArgumentError
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.core.governance import ApprovalRequest, ApprovalStatus
from loopline.core.models import ModelURI, version_uri
from loopline.core.monitoring import ActionKind, PlaybookAction

__all__ = ["Outcome", "Verdict", "approval_request", "govern", "quarantine_target",
           "subject_version"]

OPEN = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
TARGETS = ("alert", "canary", "primary")


class Outcome(StrEnum):
    """What governance says of an action now."""

    ALLOWED = "allowed"
    NEEDS_APPROVAL = "needs_approval"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outcome, why, and the gate's decision record (kept in the action's result)."""

    outcome: Outcome
    reason: str
    gate: dict[str, Any]


def _route_version(deployment: Deployment, role: RouteRole) -> tuple[str, int] | None:
    for route in deployment.routes:
        if route.role is role:
            return route.model, route.version
    return None


def quarantine_target(ports: AutomationPorts, action: PlaybookAction,
                      alert: AlertContext) -> tuple[str, int]:
    """Return the version a ``quarantine`` step takes out of service.

    ``params.target``: ``alert`` (the default: the version the alert's scope names, else the
    deployment's canary), ``canary`` or ``primary`` (the deployment's, now).

    Raises:
        InvalidArgumentError: naming ``params.target`` when it is unknown.
        NotFoundError: when the deployment does not exist.
        ConflictError: when there is no such version to quarantine.
    """
    target = action.params.get("target", "alert")
    if target not in TARGETS:
        raise InvalidArgumentError("params.target", f"{target!r} must be one of "
                                                    f"{', '.join(TARGETS)}")
    if target == "alert" and alert.version() is not None:
        found = alert.version()
    else:
        role = RouteRole.PRIMARY if target == "primary" else RouteRole.CANARY
        found = _route_version(ports.deployments.get(alert.deployment), role)
    if found is None:
        raise ConflictError(f"deployment {alert.deployment!r} has no {target} version to "
                            "quarantine and the alert names none; set the step's target to "
                            "canary or primary")
    return found


def subject_version(ports: AutomationPorts, action: PlaybookAction,
                    alert: AlertContext) -> tuple[str, int]:
    """Return the model version an action concerns, for the gate and approval requests.

    The quarantined version for ``quarantine``; otherwise the version the alert's scope
    names, else the deployment's primary (or first answering route).

    Raises:
        NotFoundError: when the deployment does not exist.
        ConflictError: when the deployment routes to no version.
    """
    if action.kind is ActionKind.QUARANTINE:
        return quarantine_target(ports, action, alert)
    named = alert.version()
    if named is not None:
        return named
    deployment = ports.deployments.get(alert.deployment)
    found = _route_version(deployment, RouteRole.PRIMARY) or _route_version(
        deployment, RouteRole.CANARY)
    if found is None:
        raise ConflictError(f"deployment {alert.deployment!r} routes to no version to "
                            "govern the playbook action by")
    return found


def _ask(ports: AutomationPorts, actor: str, action: PlaybookAction, alert: AlertContext,
         version: tuple[str, int]) -> GateDecision:
    return ports.gate.check(GateRequest(
        GateAction.PLAYBOOK_ACTION, version[0], version[1], actor, str(action.kind), {
            "playbook": action.playbook, "step": action.step, "alert_id": alert.alert_id,
            "rule": alert.rule, "deployment": alert.deployment, "severity": alert.severity,
            "params": dict(action.params)}))


def govern(ports: AutomationPorts, actor: str, action: PlaybookAction,
           alert: AlertContext, approved: bool = False) -> Verdict:
    """Ask the gate about ``action``; ``approved`` when its own approval request is approved.

    Denied when a rule other than an ``approvals`` rule fails; needing approval when only
    ``approvals`` rules fail, or the step requires approval and ``approved`` is False.

    Raises:
        AccessDeniedError: when the actor may not write to the model.
        NotFoundError, ConflictError: as ``subject_version``.
    """
    version = subject_version(ports, action, alert)
    decision = _ask(ports, actor, action, alert, version)
    record = decision.as_record()
    if decision.allowed:
        if action.requires_approval and not approved:
            return Verdict(Outcome.NEEDS_APPROVAL, "the step requires approval", record)
        return Verdict(Outcome.ALLOWED, decision.reason, record)
    failing = [rule for rule in decision.rules if not rule.get("passed")]
    if failing and all(rule.get("kind") == "approvals" for rule in failing):
        return Verdict(Outcome.NEEDS_APPROVAL, decision.reason, record)
    return Verdict(Outcome.DENIED, decision.reason, record)


def approval_request(ports: AutomationPorts, action: PlaybookAction, alert: AlertContext,
                     why: str) -> ApprovalRequest:
    """Ask for approval of ``action`` (or join the open request for the same action).

    Raises:
        AccessDeniedError: when the actor may not write to the model.
        NotFoundError, ConflictError: as ``subject_version``.
    """
    model, version = subject_version(ports, action, alert)
    kind = str(action.kind)
    reason = (f"playbook {action.playbook!r} step {action.step} ({kind}) for alert "
              f"{alert.alert_id} (rule {alert.rule!r} on deployment {alert.deployment!r}) on "
              f"{version_uri(model, version)}: {why}")
    try:
        return ports.approvals.request(model, version, str(GateAction.PLAYBOOK_ACTION), kind,
                                       reason[:2000])
    except AlreadyExistsError:
        for found in ports.approvals.for_action(model, version,
                                                str(GateAction.PLAYBOOK_ACTION), kind):
            if found.status in OPEN:
                return found
        raise


def parse_version(uri: str) -> tuple[str, int]:
    """Return (model, version) of ``models:/NAME/VERSION``.

    Raises:
        InvalidArgumentError: naming ``model`` when it is not a version URI.
    """
    parsed = ModelURI.parse(uri)
    if parsed.version is None:
        raise InvalidArgumentError("model", f"{uri!r} must name a version number")
    return parsed.name, parsed.version
