"""``quarantine``: mark a version QUARANTINED and take it out of every deployment, once.

Two effects, each exactly once:

1. The status change (``ModelRegistry.set_status``) commits in one transaction with the
   action's note ``quarantined: URI`` (its ``within`` hook); a worker taking the action
   over finds the note and does not change the status again (and a version quarantined
   already is not changed at all: the registry writes nothing for a move to the status it
   has).
2. The evacuation (``DeploymentService.evacuate``) changes each deployment still routing to
   the version in its own transaction; a deployment evacuated already routes to it no
   longer and is not touched again, so a repeat after a crash rolls each deployment back
   once. The action is ``done`` after it, with each deployment's outcome (a repeat lists
   only the deployments it still found; their history holds the rest) — or ``failed`` when
   a deployment refused (rolled back already, or nothing servable to return to): the version
   is quarantined but still answers there, which the action's log must not call handled;
   ``refused`` names those deployments and ``reason`` says what to do.

A quarantined version is released only by an approver: moving it back into service needs an
approved approval request made after the quarantine (``ModelRegistry.set_status``).

Params: ``target`` (``alert`` by default, ``canary`` or ``primary``: see
``governing.quarantine_target``) and ``reason``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from loopline.automation.governing import parse_version, quarantine_target
from loopline.automation.held import Held
from loopline.automation.ports import Tools
from loopline.automation.rollback import reason_of
from loopline.core.models import ModelStatus, ModelVersion, version_uri
from loopline.core.monitoring import ActionState

__all__ = ["perform"]


def perform(held: Held, tools: Tools) -> None:
    """Quarantine the target version (once), evacuate it, and mark the action done.

    The action fails instead when a deployment refused to stop answering with the version.

    Raises:
        NotFoundError, ConflictError, InvalidTransitionError, PolicyDeniedError: as
            ``quarantine_target``, ``ModelRegistry.set_status`` and
            ``DeploymentService.evacuate`` (the action fails with the message).
    """
    ports = tools.ports
    noted = held.action.result.get("quarantined")
    if isinstance(noted, str):
        model, version = parse_version(noted)
        uri = noted
    else:
        model, version = quarantine_target(ports, held.action, held.alert)
        uri = version_uri(model, version)
        before = str(ports.models.resolve(uri).status)

        def note(changed: ModelVersion) -> dict[str, str]:
            return {"quarantined": uri, "status_before": before, "status": str(changed.status)}

        ports.models.set_status(uri, ModelStatus.QUARANTINED,
                                within=held.progress_within(note))
    moved = ports.deployments.evacuate(model, version, reason_of(held, f"{uri} quarantined"))
    outcome: dict[str, Any] = {"evacuations": [dataclasses.asdict(e) for e in moved]}
    refused = [e for e in moved if e.action == "refused"]
    if not refused:
        held.move(ActionState.DONE, outcome)
        return
    said = "; ".join(f"{e.deployment}: {e.detail}" for e in refused)
    held.move(ActionState.FAILED, {**outcome, "refused": [e.deployment for e in refused],
                                   "reason": f"{uri} is quarantined but still answers in "
                                             f"{len(refused)} deployment(s) that refused to "
                                             f"let it go ({said})"})
