"""Shared set-up for the playbook tests: a workspace with deployments, alerts, a webhook
receiver, a retrain pipeline that registers a version, and the automation over them.

The crash test imports this module in a child process too, so everything here is importable
without pytest fixtures; the retrain task finds the database through ``PLAYBOOK_DB_URL``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.automation import (
    Automation,
    AutomationOptions,
    AutomationPorts,
    inline_executor,
    pipelines_by_name,
)
from loopline.core.clock import Clock
from loopline.core.deployments import Route, RouteRole
from loopline.core.events import Event, EventType
from loopline.core.ids import new_id
from loopline.core.models import NewModelVersion
from loopline.core.monitoring import ActionKind, Playbook, PlaybookStep
from loopline.pipelines import current_task
from loopline.store import MetadataStore
from loopline.store import model_registry as model_records
from loopline.store.models import MONITOR_EVALUATIONS

SECRET = "s3cret-webhook-key-for-tests"
DIGEST = "a" * 64
HOOK_URL = "https://hooks.example.com/T0/B1/abcdef"
WINDOW = (datetime(2025, 12, 31, 23, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, tzinfo=UTC))


# -- the retrain pipeline: registers the next version of "fraud" from inside its run ---------


@task(cache=False)
def train(deployment: str, window_start: str | None, window_end: str | None) -> int:
    """Register a new version of ``fraud`` tagged with the window, as the run's own."""
    store = MetadataStore.open(os.environ["PLAYBOOK_DB_URL"])
    try:
        with store.write("trainer") as uow:
            made = model_records.create_version(uow, NewModelVersion(
                "fraud", DIGEST, "python", run_id=current_task().run_id,
                tags={"deployment": deployment, "window_start": window_start,
                      "window_end": window_end}))
    finally:
        store.close()
    return made.version


@pipeline
def retrain_fraud(deployment: str, window_start: str | None = None,
                  window_end: str | None = None) -> int:
    """Retrain on the alert's window."""
    return train(deployment, window_start, window_end)


# -- the playbooks ----------------------------------------------------------------------------


def step(kind: ActionKind, approval: bool = False, **params: Any) -> PlaybookStep:
    """Return a playbook step."""
    return PlaybookStep(kind, params, approval)


PLAYBOOKS: dict[str, Playbook] = {
    "respond": Playbook("respond", (step(ActionKind.ROLLBACK),
                                    step(ActionKind.NOTIFY, url=HOOK_URL, message="rolled back"))),
    "retrain": Playbook("retrain", (step(ActionKind.RETRAIN, pipeline="retrain_fraud",
                                         canary=True),)),
    "storm": Playbook("storm", (step(ActionKind.RETRAIN, pipeline="retrain_fraud"),),
                      cooldown=timedelta(hours=2)),
    "careful": Playbook("careful", (step(ActionKind.ROLLBACK, approval=True),)),
    "rollback": Playbook("rollback", (step(ActionKind.ROLLBACK),)),
    "quarantine": Playbook("quarantine", (step(ActionKind.QUARANTINE),)),
    "notify": Playbook("notify", (step(ActionKind.NOTIFY, url=HOOK_URL),)),
    "log": Playbook("log", (step(ActionKind.NOTIFY, message="look at fraud"),)),
    "each": Playbook("each", (step(ActionKind.NOTIFY, url=HOOK_URL, cooldown=False),)),
    "everything": Playbook("everything", (
        step(ActionKind.ROLLBACK), step(ActionKind.QUARANTINE),
        step(ActionKind.RETRAIN, pipeline="retrain_fraud"),
        step(ActionKind.NOTIFY, url=HOOK_URL))),
}


# -- the workspace ----------------------------------------------------------------------------


def prepare(ws: Workspace) -> None:
    """Register fraud v1-v3 and deploy: web (v1 then v2, last good v1), side (v1 + v3 shadow)."""
    with ws.store.write(ws.actor) as uow:
        for _ in range(3):
            model_records.create_version(uow, NewModelVersion("fraud", DIGEST, "python"))
    ws.deployments.create("web", [Route("fraud", 1, 100.0)], "replace")
    ws.deployments.replace("web", "fraud", 2)
    ws.deployments.create("side", [Route("fraud", 1, 100.0),
                                   Route("fraud", 3, 50.0, RouteRole.SHADOW)], "shadow")


def fire(ws: Workspace, playbook: str, *, alert_id: str | None = None,
         model_version: str | None = None, deployment: str = "web",
         window: tuple[datetime, datetime] | None = None) -> Event:
    """Emit an ``alert_fired`` event as the evaluator does (with its evaluation row)."""
    alert_id = alert_id or new_id()
    evaluation_id = new_id()
    scope = f"{deployment}|{model_version or '*'}|*|*"
    with ws.store.write(ws.actor) as uow:
        if window is not None:
            uow.session.connection().execute(sa.insert(MONITOR_EVALUATIONS), {
                "id": evaluation_id, "rule": f"drift-{evaluation_id}", "scope_key": scope,
                "deployment": deployment, "signal": "dataset_drift",
                "window_start": window[0], "window_end": window[1], "value": 0.8,
                "samples": 500, "status": "breached", "streak": 1, "alert_id": alert_id,
                "rule_record": {}, "numbers": {}, "config_digest": "d" * 64,
                "evaluated_at": window[1]})
        event = uow.emit(EventType.ALERT_FIRED, f"alert:{alert_id}", {
            "alert_id": alert_id, "rule": "drift", "scope": scope, "deployment": deployment,
            "severity": "critical", "playbook": playbook, "evaluation_id": evaluation_id,
            "value": 0.8, "threshold": 0.5})
    return event


# -- the webhook receiver ---------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook receiver behind ``httpx.MockTransport``: records requests, answers statuses.

    ``statuses`` are answered in turn (the last one repeats); ``on_request`` runs after a
    request is recorded (the crash test stops its process there).
    """

    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[httpx.Request] = field(default_factory=list)
    on_request: Callable[[httpx.Request], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        if self.on_request is not None:
            self.on_request(request)
        return httpx.Response(status, json={"ok": status < 300})

    def transport(self) -> httpx.MockTransport:
        """Return the transport to give the automation."""
        return httpx.MockTransport(self)


def automation_for(ws: Workspace, receiver: Receiver | None = None, *, execute: bool = True,
                   **options: Any) -> Automation:
    """Return the automation over ``ws`` as a workspace would wire it."""
    options.setdefault("webhook_secret", SECRET)
    return Automation(
        AutomationPorts(ws.store, ws.deployments, ws.models, ws.approvals, ws.gate,
                        ws.pipelines),
        PLAYBOOKS.get, pipelines_by_name([retrain_fraud]),
        inline_executor(ws.pipelines) if execute else None,
        AutomationOptions(actor=ws.actor,
                          transport=(receiver or Receiver()).transport(), **options))


def open_at(root: Path, db_url: str, clock: Clock | None = None) -> Workspace:
    """Open the workspace at ``root`` on ``db_url``."""
    return Workspace.open(root, overrides={"db_url": db_url}, clock=clock)


def wait_for(path: Path, child_alive: Callable[[], bool], seconds: float = 60) -> None:
    """Wait until ``path`` exists (the child reached its stop point)."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if not child_alive():
            raise AssertionError("the child stopped before reaching its stop point")
        if time.monotonic() > deadline:
            raise AssertionError(f"the child never reached {path.name}")
        time.sleep(0.05)


def body_of(request: httpx.Request) -> dict[str, Any]:
    """Return a recorded request's JSON body."""
    found: dict[str, Any] = json.loads(request.content)
    return found
