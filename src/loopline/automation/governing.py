"""Whether a playbook action may run: the gate, the step's own approval, and approval requests.

Every action is put to the gate (``GateAction.PLAYBOOK_ACTION``, target = the action's kind,
on the model version it concerns: see ``subject_version``) before it runs, so a policy can
govern it like any registry change: deny it (the action is ``skipped`` with the reason), or
require approvals (an ``approvals`` rule; the action waits). A step with
``requires_approval: true`` waits for an approval of its own whatever the policies say.

Waiting means an approval request (``governance.approvals``) on the subject version, made by
the automation's actor (the identity running the scheduler), so four-eyes keeps that
identity from approving what the automation asked. Its reason names the action
(``(action <id>)``). Two kinds of request, as the approvals service allows one open request
per version, gate and target:

- a policy's ``approvals`` rule counts requests with target = the kind, so the automation
  asks with that target and joins the open one (pending, or approved with too few votes):
  as for every gate, a policy's approval covers that kind of action on that version until
  it expires;
- a step's own approval is for that action alone: target ``<kind>:<action id>``, never
  shared, so an earlier alert's approved request never satisfies a later alert's step. A
  request with the kind target that this action made (its reason names it) counts as its
  own too, so a step also held by a policy needs one vote, not two.

Either approval holds only for the version it was asked on: when the subject changes while
the action waits (a canary promoted a new primary), the action asks again for the new one.
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
from loopline.store.playbook_records import shown_params

__all__ = ["Outcome", "Verdict", "approval_request", "govern", "own_approval", "own_target",
           "quarantine_target", "subject_version"]

OPEN = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
TARGETS = ("alert", "canary", "primary")
GATE = str(GateAction.PLAYBOOK_ACTION)


class Outcome(StrEnum):
    """What governance says of an action now."""

    ALLOWED = "allowed"
    NEEDS_APPROVAL = "needs_approval"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outcome, why, and the gate's decision record (kept in the action's result).

    ``by_policy``: the approval needed is a policy's (an ``approvals`` rule), not the step's.
    """

    outcome: Outcome
    reason: str
    gate: dict[str, Any]
    by_policy: bool = False


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
            "params": shown_params(action.params)}))


def own_target(action: PlaybookAction) -> str:
    """Return the target of ``action``'s own approval request: ``<kind>:<action id>``."""
    return f"{action.kind}:{action.id}"


def _marker(action: PlaybookAction) -> str:
    return f"(action {action.id})"


def own_approval(action: PlaybookAction, request: ApprovalRequest | None,
                 version: tuple[str, int]) -> bool:
    """Tell whether ``request`` is an approval of ``action`` itself, for ``version``, approved.

    Its own: asked with ``own_target``, or with the kind as target by this very action (its
    reason names the action). An approval of another action, or of another version of the
    model, is not.
    """
    if request is None or request.status is not ApprovalStatus.APPROVED:
        return False
    if (request.model, request.version) != version or request.gate != GATE:
        return False
    return request.target == own_target(action) or (
        request.target == str(action.kind) and _marker(action) in request.reason)


def govern(ports: AutomationPorts, actor: str, action: PlaybookAction,
           alert: AlertContext, approval: ApprovalRequest | None = None) -> Verdict:
    """Ask the gate about ``action``; ``approval`` is the request it waited on, if any.

    Denied when a rule other than an ``approvals`` rule fails; needing approval when only
    ``approvals`` rules fail (``by_policy``), or the step requires approval and ``approval``
    is not its own approved request for the version it concerns now (``own_approval``).

    Raises:
        AccessDeniedError: when the actor may not write to the model.
        NotFoundError, ConflictError: as ``subject_version``.
    """
    version = subject_version(ports, action, alert)
    decision = _ask(ports, actor, action, alert, version)
    record = decision.as_record()
    if decision.allowed:
        if action.requires_approval and not own_approval(action, approval, version):
            why = "the step requires approval"
            if approval is not None and (approval.model, approval.version) != version:
                why += (f" (approval request {approval.id} was for "
                        f"{version_uri(approval.model, approval.version)}, and the action "
                        f"concerns {version_uri(*version)} now)")
            return Verdict(Outcome.NEEDS_APPROVAL, why, record)
        return Verdict(Outcome.ALLOWED, decision.reason, record)
    failing = [rule for rule in decision.rules if not rule.get("passed")]
    if failing and all(rule.get("kind") == "approvals" for rule in failing):
        return Verdict(Outcome.NEEDS_APPROVAL, decision.reason, record, by_policy=True)
    return Verdict(Outcome.DENIED, decision.reason, record)


def approval_request(ports: AutomationPorts, action: PlaybookAction, alert: AlertContext,
                     verdict: Verdict) -> ApprovalRequest:
    """Ask for the approval ``verdict`` needs on the version ``action`` concerns now.

    A policy's (``verdict.by_policy``): target = the kind, joining the open request for it
    (pending, or approved with too few votes: more votes may still be cast on it). The
    step's own: target ``own_target(action)``, which no other action shares.

    Raises:
        AccessDeniedError: when the actor may not write to the model.
        NotFoundError, ConflictError: as ``subject_version``.
    """
    model, version = subject_version(ports, action, alert)
    kind = str(action.kind)
    target = kind if verdict.by_policy else own_target(action)
    reason = (f"playbook {action.playbook!r} step {action.step} ({kind}) {_marker(action)} "
              f"for alert {alert.alert_id} (rule {alert.rule!r} on deployment "
              f"{alert.deployment!r}) on {version_uri(model, version)}: {verdict.reason}")
    try:
        return ports.approvals.request(model, version, GATE, target, reason[:2000])
    except AlreadyExistsError:
        for found in ports.approvals.for_action(model, version, GATE, target):
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
