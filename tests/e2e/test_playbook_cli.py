"""``loopline playbooks actions|show`` end to end, on a workspace where an alert's playbook
rolled a deployment back and one step waits for approval. An unknown action is refused by a
subprocess as a user runs it; the rest runs in this process (``cli.main.run``), which runs the
same code for a fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cli_runner import InProcessCli, Ran, run_console

from loopline.app import Workspace
from loopline.automation import Automation, AutomationOptions, AutomationPorts
from loopline.core.deployments import Route
from loopline.core.events import EventType
from loopline.core.models import NewModelVersion
from loopline.core.monitoring import ActionKind, Playbook, PlaybookStep
from loopline.store.model_registry import create_version

PLAYBOOK = Playbook("respond", (
    PlaybookStep(ActionKind.ROLLBACK),
    PlaybookStep(ActionKind.NOTIFY, {"url": "https://hooks.example.com/T0/secret-path"},
                 requires_approval=True)))


def _run(runner: Callable[..., Ran], cwd: Path, *args: str) -> Ran:
    """Run ``loopline --user ops ARGS`` with no LOOPLINE_USER set."""
    return runner(cwd, "--user", "ops", *args, user=None, env={"COLUMNS": "250"})


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, str]:
    """A workspace whose alert ``a1`` rolled ``web`` back and waits to notify."""
    with Workspace.init(tmp_path) as ws:
        with ws.store.write(ws.actor) as uow:
            for _ in range(2):
                create_version(uow, NewModelVersion("fraud", "ab" * 32, "skops"))
        ws.deployments.create("web", [Route("fraud", 1, 100.0)], "replace")
        ws.deployments.replace("web", "fraud", 2)
        with ws.store.write(ws.actor) as uow:
            event = uow.emit(EventType.ALERT_FIRED, "alert:a1", {
                "alert_id": "a1", "rule": "drift", "scope": "web|*|*|*", "deployment": "web",
                "severity": "critical", "playbook": "respond", "evaluation_id": "e1",
                "value": 0.7, "threshold": 0.5})
        automation = Automation(
            AutomationPorts(ws.store, ws.deployments, ws.models, ws.approvals, ws.gate,
                            ws.pipelines), {"respond": PLAYBOOK}.get,
            options=AutomationOptions(actor=ws.actor, webhook_secret="x" * 16,
                                      transport=httpx.MockTransport(
                                          lambda request: httpx.Response(200))))
        automation.handle(event)
        automation.tick()
        rollback = automation.actions("a1")[0].id
        automation.close()
    return tmp_path, rollback


def test_actions_lists_what_ran_and_show_explains_one(
        workspace: tuple[Path, str], run_cli: InProcessCli) -> None:
    root, rollback = workspace
    listed = _run(run_cli, root, "playbooks", "actions", "--alert", "a1", "--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [(a["step"], a["kind"], a["state"]) for a in found] == [
        (0, "rollback", "done"), (1, "notify", "awaiting_approval")]
    assert found[0]["result"]["revision"] == 3 and found[0]["deployment"] == "web"
    assert found[1]["params"]["url"] == "https://hooks.example.com"  # never the secret path
    assert "secret-path" not in listed.stdout
    table = _run(run_cli, root, "playbooks", "actions", "--state", "awaiting_approval")
    assert table.returncode == 0 and "1 playbook actions" in table.stdout
    assert f"approval={found[1]['approval_id']}" in table.stdout
    shown = _run(run_cli, root, "playbooks", "show", rollback)
    assert shown.returncode == 0, shown.stderr
    assert f"playbook action {rollback}  done" in shown.stdout
    assert "rule drift, severity critical" in shown.stdout and "revision" in shown.stdout


@pytest.mark.e2e
def test_bad_input_exits_with_the_documented_codes(
        workspace: tuple[Path, str], run_cli: InProcessCli) -> None:
    root, _ = workspace
    unknown = _run(run_console, root, "playbooks", "show", "nope")
    assert unknown.returncode == 3 and "playbook action 'nope' not found" in unknown.stderr
    state = _run(run_cli, root, "playbooks", "actions", "--state", "sleeping")
    assert state.returncode == 5 and "invalid state" in state.stderr
    limit = _run(run_cli, root, "playbooks", "actions", "--limit", "0")
    assert limit.returncode == 5 and "invalid limit" in limit.stderr
