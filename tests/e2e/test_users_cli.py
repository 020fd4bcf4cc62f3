"""``loopline users`` end to end, in subprocesses: grant, whoami, list, and a refused grant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _run(cwd: Path, *args: str, user: str = "ann") -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    environment.update({"LOOPLINE_USER": user, "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "loopline", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


def test_grant_then_whoami_and_list_show_the_enforced_roles(tmp_path: Path) -> None:
    assert _run(tmp_path, "init").returncode == 0
    granted = _run(tmp_path, "users", "grant", "ann", "admin")
    assert granted.returncode == 0, granted.stderr
    assert "ann holds admin" in granted.stdout
    scoped = _run(tmp_path, "users", "grant", "ci-bot", "developer", "--models", "fraud-*",
                  "--service")
    assert scoped.returncode == 0, scoped.stderr
    who = json.loads(_run(tmp_path, "users", "whoami", "--json", user="ci-bot").stdout)
    assert who["actor"] == "ci-bot" and who["enforced"] is True
    assert [(b["role"], b["models"]) for b in who["bindings"]] == [("developer", "fraud-*")]
    listed = json.loads(_run(tmp_path, "users", "list", "--json").stdout)
    assert [(i["name"], i["kind"], [b["role"] for b in i["bindings"]]) for i in listed] == [
        ("ann", "user", ["admin"]), ("ci-bot", "service", ["developer"])]
    table = _run(tmp_path, "users", "list")
    assert table.returncode == 0 and "developer on fraud-*" in table.stdout


def test_grant_by_a_non_admin_exits_non_zero_with_the_error_on_stderr(tmp_path: Path) -> None:
    assert _run(tmp_path, "init").returncode == 0
    first = _run(tmp_path, "users", "grant", "ann", "viewer")  # the first grant must be admin
    assert first.returncode == 5 and "invalid role" in first.stderr
    assert _run(tmp_path, "users", "grant", "ann", "admin").returncode == 0
    refused = _run(tmp_path, "users", "grant", "bob", "admin", user="bob")
    assert refused.returncode == 9 and refused.stdout == ""
    assert "'bob' may not admin" in refused.stderr and "loopline users grant" in refused.stderr
