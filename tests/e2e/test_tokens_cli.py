"""``loopline tokens`` end to end: the secret is printed once and works against a server;
list and revoke locally and through ``--server``; local-only commands refuse a server; a
revoked token is refused with the authentication exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_runner import InProcessCli, run_console

from loopline.api import ApiOptions, create_api
from loopline.app import Workspace
from loopline.serving.server import ThreadedServer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    workspace = Workspace.init(tmp_path)
    server = ThreadedServer(create_api(workspace, ApiOptions(auth_failures_per_minute=0)))
    try:
        yield workspace, server.url
    finally:
        server.stop()
        workspace.close()


def test_create_prints_the_secret_once_and_it_authenticates_against_the_server(
        served: tuple[Workspace, str], run_cli: InProcessCli, tmp_path: Path) -> None:
    _, url = served
    made = run_cli(tmp_path, "tokens", "create", "--user", "ci-bot", "--role", "developer",
                   "--expires", "30d", "--description", "nightly")
    assert made.returncode == 0, made.stderr
    secret = next(line for line in made.stdout.splitlines() if line.startswith("llt_"))
    who = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert who.json()["user"] == "ci-bot" and who.json()["role"] == "developer"
    listed = json.loads(run_cli(tmp_path, "tokens", "list", "--json").stdout)
    assert [(t["user"], t["role"], t["description"]) for t in listed] == [
        ("ci-bot", "developer", "nightly")]
    assert secret not in run_cli(tmp_path, "tokens", "list").stdout


def test_the_cli_works_through_a_server_as_the_tokens_user(
        served: tuple[Workspace, str], run_cli: InProcessCli, tmp_path: Path) -> None:
    workspace, url = served
    _, admin = workspace.tokens.create("ada", "admin")
    victim, _ = workspace.tokens.create("old-ci", "viewer")
    remote = {"LOOPLINE_SERVER": url, "LOOPLINE_TOKEN": admin}
    elsewhere = tmp_path / "elsewhere"  # no workspace here: everything goes to the server
    elsewhere.mkdir()
    listed = json.loads(run_cli(elsewhere, "tokens", "list", "--json", env=remote).stdout)
    assert {t["user"] for t in listed} == {"ada", "old-ci"}
    revoked = run_cli(elsewhere, "--server", url, "--token", admin, "tokens", "revoke",
                      victim.id)
    assert revoked.returncode == 0, revoked.stderr
    assert workspace.tokens.get(victim.id).revoked_by == "ada"
    refused = run_cli(elsewhere, "status", env=remote)
    assert refused.returncode == 5
    assert "works on a local workspace only" in refused.stderr
    missing = run_cli(elsewhere, "--server", url, "tokens", "list")
    assert missing.returncode == 5 and "--token" in missing.stderr


@pytest.mark.e2e
def test_a_revoked_token_exits_with_the_authentication_status(
        served: tuple[Workspace, str], tmp_path: Path) -> None:
    workspace, url = served
    token, secret = workspace.tokens.create("ada", "admin")
    workspace.tokens.revoke(token.id)
    done = run_console(tmp_path, "--server", url, "tokens", "list", user=None,
                       env={"LOOPLINE_TOKEN": secret})
    assert done.returncode == 9
    assert "missing, unknown, expired or revoked API token" in done.stderr
