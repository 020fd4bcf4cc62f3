"""``loopline deploy``: create (replace, shadow, A/B, aliases resolved and recorded), update,
canary, pause, resume, promote, rollback, show, list and history, with bad input refused
naming the option and the right exit code. In-process (``cli.main.run``) on every backend;
one subprocess run proves the console entry point reaches the same state."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_runner import InProcessCli, WorkspaceCli, run_console

from loopline.app import Workspace
from loopline.core.models import NewModelVersion


@pytest.fixture
def cli(ws: Workspace, db_url: str, run_cli: InProcessCli) -> WorkspaceCli:
    digest = ws._blobs.put_bytes(b"a model").digest
    for _ in range(3):
        ws.models.record_version(NewModelVersion("fraud", digest, "python",
                                                 tags={"owner": "risk"}), ())
    ws.models.set_alias("fraud", "champion", 2)
    return WorkspaceCli(ws, db_url, run_cli)


def test_create_with_arms_and_shadows_then_show_list_and_history(cli: WorkspaceCli) -> None:
    code, out, err = cli("deploy", "create", "web", "--model", "models:/fraud@champion",
                         "--arm", "models:/fraud/3=30", "--shadow", "fraud/1",
                         "--shadow-percent", "20", "--sticky-key", "header:X-User-Id",
                         "--description", "fraud scoring")
    assert code == 0, err
    assert "web: revision 1, active" in out
    shown = cli.json("deploy", "show", "web")
    assert shown["strategy"] == "ab" and shown["sticky_key"] == "header:x-user-id"
    assert [(r["version"], r["role"], r["weight"]) for r in shown["routes"]] == [
        (2, "primary", 70.0), (3, "canary", 30.0), (1, "shadow", 20.0)]
    history = cli.json("deploy", "history", "web")
    assert history[0]["reason"] == "created (ab) (models:/fraud@champion = models:/fraud/2)"
    code, out, _ = cli("deploy", "show", "web")
    assert code == 0 and "strategy ab" in out and "models:/fraud/3" in out and "30%" in out
    code, out, _ = cli("deploy", "list")
    assert code == 0 and "1 deployments" in out and "web" in out
    assert [d["name"] for d in cli.json("deploy", "list")] == ["web"]


def test_a_canary_through_pause_resume_promote_and_a_rollback(cli: WorkspaceCli) -> None:
    assert cli("deploy", "create", "web", "--model", "fraud/1")[0] == 0
    code, out, err = cli("deploy", "canary", "web", "--model", "fraud@champion",
                         "--steps", "5,50,100", "--interval", "30s", "--min-samples", "10",
                         "--passes", "2")
    assert code == 0, err
    shown = cli.json("deploy", "show", "web")
    assert shown["state"] == "rolling_out" and shown["canary"]["steps"] == [5.0, 50.0, 100.0]
    assert shown["canary"]["analysis"]["interval_seconds"] == 30.0
    assert shown["canary"]["analysis"]["passes_to_promote"] == 2
    code, out, _ = cli("deploy", "show", "web")
    assert "1 of 3 (5%)" in out and "last good routes" in out
    assert cli("deploy", "pause", "web", "--reason", "dashboards look odd")[0] == 0
    assert cli.json("deploy", "show", "web")["state"] == "paused"
    assert cli("deploy", "resume", "web")[0] == 0
    code, out, _ = cli("deploy", "promote", "web")
    assert code == 0 and "active: models:/fraud/2 primary 100%" in out
    code, out, _ = cli("deploy", "update", "web", "--model", "models:/fraud/3")
    assert code == 0 and "revision 6" in out
    code, out, _ = cli("deploy", "rollback", "web", "--reason", "v3 is slow")
    assert code == 0 and "rolled_back: models:/fraud/2 primary 100%" in out
    code, out, _ = cli("deploy", "history", "web")
    assert code == 0 and "7 revisions" in out and "v3 is slow" in out
    reasons = [c["reason"] for c in cli.json("deploy", "history", "web")]
    assert reasons[-2] == ("canary models:/fraud/2 started at 5% "
                           "(models:/fraud@champion = models:/fraud/2)")


def test_bad_input_is_refused_naming_the_option_with_its_exit_code(cli: WorkspaceCli) -> None:
    before = cli.written()
    for args, code, text in (
            (("create", "web", "--model", "fraud/1", "--arm", "fraud/2"), 5, "--arm"),
            (("create", "web", "--model", "fraud/1", "--arm", "fraud/2=60",
              "--arm", "fraud/3=60"), 5, "above 100"),
            (("create", "web", "--model", "fraud/1", "--shadow", "fraud/2",
              "--shadow-percent", "150"), 5, "--shadow-percent"),
            (("create", "web", "--model", "fraud/1", "--strategy", "blue"), 5, "--strategy"),
            (("create", "web", "--model", "fraud/1", "--arm", "fraud/2=50"), 5, "sticky_key"),
            (("create", "../web", "--model", "fraud/1"), 5, "invalid name"),
            (("create", "web", "--model", "fraud/9"), 3, "models:/fraud/9"),
            (("create", "web", "--model", "fraud@gone"), 3, "models:/fraud@gone"),
            (("show", "nope"), 3, "deployment 'nope' not found")):
        result = cli("deploy", *args)
        assert result[0] == code and text in result[2], (args, result)
    assert cli.written() == before
    assert cli("deploy", "create", "web", "--model", "fraud/1")[0] == 0
    for args, code, text in (
            (("canary", "web", "--model", "fraud/2", "--steps", "10,50"), 5, "canary.steps"),
            (("canary", "web", "--model", "fraud/2", "--steps", "10,x"), 5, "--steps"),
            (("canary", "web", "--model", "fraud/2", "--interval", "soon"), 5, "--interval"),
            (("canary", "web", "--model", "fraud/2", "--min-samples", "0"), 5,
             "canary.analysis.min_samples"),
            (("pause", "web"), 4, "from 'active' to 'paused'"),
            (("promote", "web"), 4, "from 'active' to 'active'"),
            (("rollback", "web"), 4, "no earlier routes")):
        result = cli("deploy", *args)
        assert result[0] == code and text in result[2], (args, result)


def test_a_deploy_policy_denial_exits_9_naming_the_rule_and_writes_nothing(
        cli: WorkspaceCli) -> None:
    cli.ws.policies.apply(cli.ws.actor, {"guard.yaml": textwrap.dedent("""\
        kind: gate_policy
        name: deploy-guard
        applies_to: {models: [fraud], gates: [deploy]}
        rules:
          - {id: reviewed, kind: required_metadata, fields: [security_review]}
        """)})
    before = cli.written()
    code, _, err = cli("deploy", "create", "web", "--model", "fraud/1")
    assert code == 9 and "'reviewed'" in err and "models:/fraud/1" in err
    assert cli.written() == before


@pytest.mark.e2e
def test_the_console_command_creates_and_lists_a_deployment(tmp_path: Path) -> None:
    with Workspace.init(tmp_path) as ws:
        digest = ws._blobs.put_bytes(b"a model").digest
        ws.models.record_version(NewModelVersion("fraud", digest, "python"), ())
    created = run_console(tmp_path, "deploy", "create", "web", "--model", "models:/fraud/1")
    assert created.returncode == 0, created.stderr
    listed = run_console(tmp_path, "deploy", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(d["name"], d["updated_by"]) for d in json.loads(listed.stdout)] == [
        ("web", "cli-tester")]
