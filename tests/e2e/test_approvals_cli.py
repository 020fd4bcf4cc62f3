"""``loopline approvals`` end to end, on a workspace with two model versions. The four-eyes
refusal and the approval run in subprocesses as users run them; the rest in this process
(``cli.main.run``), which runs the same code for a fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runner import InProcessCli, Ran, run_console

from loopline.app import Workspace
from loopline.core.models import NewModelVersion
from loopline.store.model_registry import create_version


def _run(runner: Callable[..., Ran], cwd: Path, user: str, *args: str) -> Ran:
    """Run ``loopline --user USER ARGS`` with no LOOPLINE_USER set."""
    return runner(cwd, "--user", user, *args, user=None, env={"COLUMNS": "250"})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    with Workspace.init(tmp_path) as ws, ws.store.write("trainer") as uow:
        for _ in range(2):
            create_version(uow, NewModelVersion("fraud", "ab" * 32, "skops"))
    return tmp_path


@pytest.mark.e2e
def test_request_is_refused_to_its_requester_and_approved_by_someone_else(
        workspace: Path, run_cli: InProcessCli) -> None:
    asked = _run(run_cli, workspace, "dev", "approvals", "request", "models:/fraud/1",
                 "--gate", "alias", "--target", "production", "--reason", "beats champion",
                 "--json")
    assert asked.returncode == 0, asked.stderr
    made = json.loads(asked.stdout)
    assert (made["status"], made["required"], made["requester"]) == ("pending", 1, "dev")
    own = _run(run_console, workspace, "dev", "approvals", "approve", made["id"])
    assert own.returncode == 9 and "four-eyes" in own.stderr and "'dev'" in own.stderr
    done = _run(run_console, workspace, "ann", "approvals", "approve", made["id"],
                "--comment", "ok")
    assert done.returncode == 0 and "1/1 approvals, now approved" in done.stdout
    shown = _run(run_cli, workspace, "ann", "approvals", "show", made["id"])
    assert shown.returncode == 0 and "approved" in shown.stdout
    assert "ann" in shown.stdout and "1 of 1 required" in shown.stdout


def test_alias_uri_resolves_bad_input_fails_and_reject_closes(
        workspace: Path, run_cli: InProcessCli) -> None:
    bad = _run(run_cli, workspace, "dev", "approvals", "request", "fraud@latest",
               "--gate", "deploy", "--reason", "ship", "--expires-in", "soon")
    assert bad.returncode == 5 and "expires_in" in bad.stderr
    asked = _run(run_cli, workspace, "dev", "approvals", "request", "fraud@latest",
                 "--gate", "deploy", "--target", "prod", "--reason", "ship",
                 "--expires-in", "3d", "--json")
    made = json.loads(asked.stdout)
    assert made["version"] == 2 and made["target"] == "prod"
    rejected = _run(run_cli, workspace, "ann", "approvals", "reject", made["id"],
                    "--comment", "no")
    assert rejected.returncode == 0, rejected.stderr
    listed = json.loads(_run(run_cli, workspace, "dev", "approvals", "list", "--json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(made["id"], "rejected")]
    assert [(v["approver"], v["verdict"], v["comment"]) for v in listed[0]["votes"]] == [
        ("ann", "reject", "no")]
    table = _run(run_cli, workspace, "dev", "approvals", "list", "--status", "rejected")
    assert made["id"] in table.stdout and "0/1" in table.stdout


WEEK_POLICY = """\
kind: gate_policy
name: four-eyes
applies_to: {gates: [alias], targets: [production]}
rules:
  - {id: one, kind: approvals, count: 1, expires_after: 7d}
"""


def test_a_lifetime_beyond_the_policys_is_cut_and_said_and_list_takes_a_limit(
        workspace: Path, run_cli: InProcessCli) -> None:
    with Workspace.open(workspace) as ws:
        ws.policies.apply(ws.actor, {"p.yaml": WEEK_POLICY})
    asked = _run(run_cli, workspace, "dev", "approvals", "request", "models:/fraud/1",
                 "--gate", "alias", "--target", "production", "--reason", "ship",
                 "--expires-in", "365d")
    assert asked.returncode == 0, asked.stderr
    assert "asked to stay open 365d; the policy's expires_after caps it at 1w" in asked.stdout
    bad = _run(run_cli, workspace, "dev", "approvals", "list", "--limit", "0")
    assert bad.returncode == 5 and "limit" in bad.stderr
    _run(run_cli, workspace, "dev", "approvals", "request", "models:/fraud/2",
         "--gate", "deploy", "--target", "prod", "--reason", "ship")
    listed = json.loads(_run(run_cli, workspace, "dev", "approvals", "list", "--limit", "1",
                             "--json").stdout)
    assert [(r["version"], r["gate"]) for r in listed] == [(2, "deploy")]
