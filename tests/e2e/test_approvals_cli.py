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
                 "--reason", "ship", "--expires-in", "3d", "--json")
    made = json.loads(asked.stdout)
    assert made["version"] == 2 and made["target"] is None
    rejected = _run(workspace, "ann", "approvals", "reject", made["id"], "--comment", "no")
    assert rejected.returncode == 0, rejected.stderr
    listed = json.loads(_run(workspace, "dev", "approvals", "list", "--json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(made["id"], "rejected")]
    assert [(v["approver"], v["verdict"], v["comment"]) for v in listed[0]["votes"]] == [
        ("ann", "reject", "no")]
    table = _run(workspace, "dev", "approvals", "list", "--status", "rejected")
    assert made["id"] in table.stdout and "0/1" in table.stdout
