"""A playbook whose worker is killed with SIGKILL mid-way finishes after a restart with every
effect exactly once: one rollback revision, one status change and one evacuation, one run;
the webhook is delivered at least once, every delivery with the same idempotency key.

A child process runs the dispatcher (with the automation subscribed) and a tick over the
playbook rollback → quarantine → retrain → notify, and stops for good at one point: after
storing the alert's actions but before its cursor moved; inside the rollback's transaction
before it commits; after the status change committed but before the evacuation; after the
run was recorded but before the action noted it; after the webhook received the POST but
before the answer came back. The parent kills it there, then restarts the dispatcher and the
automation on a clock past the dead worker's lease, on every backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playbook_support import (
    Receiver,
    automation_for,
    fire,
    open_at,
    prepare,
    wait_for,
)

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import DeploymentState
from loopline.core.events import EventType
from loopline.core.monitoring import ActionKind, ActionState
from loopline.core.runs import RunState
from loopline.store.playbook_records import ActionQueries

CHILD = '''
import json, pathlib, sys, time
from datetime import timedelta
sys.path.insert(0, sys.argv[1])
import playbook_support as support
from loopline.automation import (Automation, AutomationOptions, AutomationPorts,
                                 inline_executor, pipelines_by_name)
from loopline.core.events import EventType
from loopline.deploy.service import DeploymentService
from loopline.pipelines import Runner

root, db_url, point, marker, deliveries = sys.argv[2:7]


def stop():
    pathlib.Path(marker).touch()
    while True:
        time.sleep(1)


class Deployments(DeploymentService):
    def rollback(self, name, reason, *, within=None):
        def hooked(uow, after):
            within(uow, after)
            if point == "rollback":
                stop()  # inside the transaction: the rollback never commits
        return super().rollback(name, reason, within=hooked)

    def evacuate(self, model, version, reason):
        if point == "quarantine":
            stop()  # the status change committed; the evacuation never starts
        return super().evacuate(model, version, reason)


class HookedRunner(Runner):
    def create(self, pipeline, parameters=None, trigger=None):
        run = super().create(pipeline, parameters, trigger)
        if point == "retrain":
            stop()  # the run is recorded; the action never notes it
        return run


def delivered(request):
    with open(deliveries, "a") as handle:
        handle.write(json.dumps({"key": request.headers["Idempotency-Key"],
                                 "body": request.content.decode()}) + "\\n")
    if point == "notify":
        stop()  # the receiver has it; the answer never comes back


def handle(event):
    automation.handle(event)
    if point == "handle":
        stop()  # the actions are stored; the cursor never moves past the event


ws = support.open_at(pathlib.Path(root), db_url)
runner = HookedRunner(ws.store, ws.pipelines.blobs, ws.pipelines.options)
automation = Automation(
    AutomationPorts(ws.store, Deployments(ws.store, ws.gate, ws.actor, ws.access), ws.models,
                    ws.approvals, ws.gate, runner),
    support.PLAYBOOKS.get, pipelines_by_name([support.retrain_fraud]), inline_executor(runner),
    AutomationOptions(actor=ws.actor, lease=timedelta(seconds=30),
                      webhook_secret=support.SECRET,
                      transport=support.Receiver(on_request=delivered).transport()))
dispatcher = ws.dispatcher()
dispatcher.subscribe("automation", handle, {EventType.ALERT_FIRED})
dispatcher.run_once()
automation.tick()
print("the child ran to the end without stopping", file=sys.stderr)
'''

POINTS = ["handle", "rollback", "quarantine", "retrain", "notify"]


def _run_child(root: Path, db_url: str, point: str, tmp_path: Path) -> Path:
    """Run the child until it stops at ``point``, kill it with SIGKILL; return its deliveries."""
    marker, deliveries = tmp_path / "stopped", tmp_path / "deliveries.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(Path(__file__).parent), str(root),
         db_url, point, str(marker), str(deliveries)],
        env={**os.environ}, stderr=subprocess.PIPE)
    try:
        wait_for(marker, lambda: child.poll() is None)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr is not None:
            child.stderr.close()
    return deliveries


def _restart(root: Path, db_url: str, receiver: Receiver) -> Workspace:
    """Open the workspace again past the dead worker's lease; dispatch and tick there."""
    later = ManualClock(datetime.now(UTC) + timedelta(minutes=2))
    ws = open_at(root, db_url, later)
    automation = automation_for(ws, receiver)
    try:
        with ws.dispatcher() as dispatcher:
            dispatcher.subscribe("automation", automation.handle, {EventType.ALERT_FIRED})
            dispatcher.run_once()
        automation.tick()
    finally:
        automation.close()
    return ws


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_playbook_killed_mid_way_finishes_after_restart_with_each_effect_once(
        db_url: str, tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYBOOK_DB_URL", db_url)
    root = tmp_path / "ws"
    with Workspace.init(root, overrides={"db_url": db_url}) as ws:
        prepare(ws)
        fire(ws, "everything", model_version="models:/fraud/3")
    deliveries = _run_child(root, db_url, point, tmp_path)
    receiver = Receiver()
    ws = _restart(root, db_url, receiver)
    try:
        actions = {a.kind: a for a in sorted(ActionQueries(ws.store.engine).list(),
                                             key=lambda a: a.step)}
        assert [a.state for a in actions.values()] == [ActionState.DONE] * 4, \
            {k: (a.state, a.result) for k, a in actions.items()}
        events = ws.store.events.read_after(0, 10_000)
        created = [e for e in events if e.type == EventType.PLAYBOOK_ACTION
                   and e.payload["state"] == "pending"]
        assert len(created) == 4  # the redelivered alert made nothing new
        # one rollback revision of web
        rolled = [c for c in ws.deployments.history("web")
                  if c.state is DeploymentState.ROLLED_BACK]
        assert len(rolled) == 1 and actions[ActionKind.ROLLBACK].result["revision"] == \
            rolled[0].revision
        # one status change of fraud/3, one evacuation of side
        status = [e for e in events if e.type == EventType.MODEL_STATUS_CHANGED]
        assert [(e.subject, e.payload["to"]) for e in status] == [
            ("models:/fraud/3", "quarantined")]
        assert [r.version for r in ws.deployments.get("side").routes] == [1]
        assert len(ws.deployments.history("side")) == 2  # created, evacuated
        # one run
        (run,) = ws.pipelines.runs.runs("retrain_fraud")
        assert run.state is RunState.SUCCEEDED
        assert actions[ActionKind.RETRAIN].result["run_id"] == run.id
        # the webhook: at least once, always the same key and body
        sent = [json.loads(line) for line in deliveries.read_text().splitlines()] \
            if deliveries.exists() else []
        sent += [{"key": r.headers["Idempotency-Key"], "body": r.content.decode()}
                 for r in receiver.requests]
        assert len(sent) == (2 if point == "notify" else 1)
        assert {s["key"] for s in sent} == {actions[ActionKind.NOTIFY].id}
        assert len({s["body"] for s in sent}) == 1
    finally:
        ws.close()
