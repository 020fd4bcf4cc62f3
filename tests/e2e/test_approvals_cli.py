"""``loopline approvals`` end to end, in subprocesses, on a workspace with two model versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.app import Workspace
from loopline.core.models import NewModelVersion
from loopline.store.model_registry import create_version

pytestmark = pytest.mark.e2e


def _run(cwd: Path, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    environment["COLUMNS"] = "250"
    return subprocess.run([sys.executable, "-m", "loopline", "--user", user, *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    with Workspace.init(tmp_path) as ws, ws.store.write("trainer") as uow:
        for _ in range(2):
            create_version(uow, NewModelVersion("fraud", "ab" * 32, "skops"))
    return tmp_path


def test_request_is_refused_to_its_requester_and_approved_by_someone_else(
        workspace: Path) -> None:
    asked = _run(workspace, "dev", "approvals", "request", "models:/fraud/1", "--gate", "alias",
                 "--target", "production", "--reason", "beats champion", "--json")
    assert asked.returncode == 0, asked.stderr
    made = json.loads(asked.stdout)
    assert (made["status"], made["required"], made["requester"]) == ("pending", 1, "dev")
    own = _run(workspace, "dev", "approvals", "approve", made["id"])
    assert own.returncode == 9 and "four-eyes" in own.stderr and "'dev'" in own.stderr
    done = _run(workspace, "ann", "approvals", "approve", made["id"], "--comment", "ok")
    assert done.returncode == 0 and "1/1 approvals, now approved" in done.stdout
    shown = _run(workspace, "ann", "approvals", "show", made["id"])
    assert shown.returncode == 0 and "approved" in shown.stdout
    assert "ann" in shown.stdout and "1 of 1 required" in shown.stdout


def test_alias_uri_resolves_bad_input_fails_and_reject_closes(workspace: Path) -> None:
    bad = _run(workspace, "dev", "approvals", "request", "fraud@latest", "--gate", "deploy",
               "--reason", "ship", "--expires-in", "soon")
    assert bad.returncode == 5 and "expires_in" in bad.stderr
    asked = _run(workspace, "dev", "approvals", "request", "fraud@latest", "--gate", "deploy",
                 "--target", "prod", "--reason", "ship", "--expires-in", "3d", "--json")
    made = json.loads(asked.stdout)
    assert made["version"] == 2 and made["target"] == "prod"
    rejected = _run(workspace, "ann", "approvals", "reject", made["id"], "--comment", "no")
    assert rejected.returncode == 0, rejected.stderr
    listed = json.loads(_run(workspace, "dev", "approvals", "list", "--json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(made["id"], "rejected")]
    assert [(v["approver"], v["verdict"], v["comment"]) for v in listed[0]["votes"]] == [
        ("ann", "reject", "no")]
    table = _run(workspace, "dev", "approvals", "list", "--status", "rejected")
    assert made["id"] in table.stdout and "0/1" in table.stdout


WEEK_POLICY = """\
kind: gate_policy
name: four-eyes
applies_to: {gates: [alias], targets: [production]}
rules:
  - {id: one, kind: approvals, count: 1, expires_after: 7d}
"""


def test_a_lifetime_beyond_the_policys_is_cut_and_said_and_list_takes_a_limit(
        workspace: Path) -> None:
    with Workspace.open(workspace) as ws:
        ws.policies.apply(ws.actor, {"p.yaml": WEEK_POLICY})
    asked = _run(workspace, "dev", "approvals", "request", "models:/fraud/1", "--gate", "alias",
                 "--target", "production", "--reason", "ship", "--expires-in", "365d")
    assert asked.returncode == 0, asked.stderr
    assert "asked to stay open 365d; the policy's expires_after caps it at 1w" in asked.stdout
    bad = _run(workspace, "dev", "approvals", "list", "--limit", "0")
    assert bad.returncode == 5 and "limit" in bad.stderr
    _run(workspace, "dev", "approvals", "request", "models:/fraud/2", "--gate", "deploy",
         "--target", "prod", "--reason", "ship")
    listed = json.loads(_run(workspace, "dev", "approvals", "list", "--limit", "1",
                             "--json").stdout)
    assert [(r["version"], r["gate"]) for r in listed] == [(2, "deploy")]
