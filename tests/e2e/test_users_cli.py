"""``loopline users`` end to end: grant, whoami, list, and a refused grant. Who acts comes
from ``LOOPLINE_USER``. The refused grant runs in subprocesses as users run it; the rest in
this process (``cli.main.run``), which runs the same code for a fraction of the cost (see
``cli_runner``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runner import InProcessCli, Ran, run_console


def _run(runner: Callable[..., Ran], cwd: Path, *args: str, user: str = "ann") -> Ran:
    return runner(cwd, *args, user=user)


def test_grant_then_whoami_and_list_show_the_enforced_roles(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert _run(run_cli, tmp_path, "init").returncode == 0
    granted = _run(run_cli, tmp_path, "users", "grant", "ann", "admin")
    assert granted.returncode == 0, granted.stderr
    assert "ann holds admin" in granted.stdout
    scoped = _run(run_cli, tmp_path, "users", "grant", "ci-bot", "developer", "--models", "fraud-*",
                  "--service")
    assert scoped.returncode == 0, scoped.stderr
    who = json.loads(_run(run_cli, tmp_path, "users", "whoami", "--json", user="ci-bot").stdout)
    assert who["actor"] == "ci-bot" and who["enforced"] is True
    assert [(b["role"], b["models"]) for b in who["bindings"]] == [("developer", "fraud-*")]
    listed = json.loads(_run(run_cli, tmp_path, "users", "list", "--json").stdout)
    assert [(i["name"], i["kind"], [b["role"] for b in i["bindings"]]) for i in listed] == [
        ("ann", "user", ["admin"]), ("ci-bot", "service", ["developer"])]
    table = _run(run_cli, tmp_path, "users", "list")
    assert table.returncode == 0 and "developer on fraud-*" in table.stdout


@pytest.mark.e2e
def test_grant_by_a_non_admin_exits_non_zero_with_the_error_on_stderr(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert _run(run_cli, tmp_path, "init").returncode == 0
    # The first grant must be admin.
    first = _run(run_console, tmp_path, "users", "grant", "ann", "viewer")
    assert first.returncode == 5 and "invalid role" in first.stderr
    assert _run(run_cli, tmp_path, "users", "grant", "ann", "admin").returncode == 0
    refused = _run(run_console, tmp_path, "users", "grant", "bob", "admin", user="bob")
    assert refused.returncode == 9 and refused.stdout == ""
    assert "'bob' may not admin" in refused.stderr and "loopline users grant" in refused.stderr
