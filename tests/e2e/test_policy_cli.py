"""``loopline policy``: apply (refusing a malformed file), show, and check a version against a
policy set without writing anything. A denied check runs in a subprocess as a user runs it;
the rest call the CLI in-process (``cli.main.run``), most on every backend, which proves the
same and costs far less (see ``cli_runner``)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_runner import InProcessCli, WorkspaceCli, run_console

from loopline.app import Workspace
from loopline.core.models import NewModelVersion
from loopline.store import AuditFilter

POLICY = textwrap.dedent("""\
    kind: gate_policy
    name: production-readiness
    applies_to:
      gates: [alias]
      targets: [production]
    rules:
      - id: card
        kind: required_metadata
        fields: [owner]
      - id: recall-eu
        kind: metric
        check: "recall >= 0.8 on slice region=EU"
    """)


def _register(ws: Workspace) -> None:
    digest = ws._blobs.put_bytes(b"a model").digest
    ws.models.record_version(NewModelVersion(
        name="fraud", artifact_digest=digest, flavor="python", tags={"owner": "ann"},
        metrics={"recall": 0.9, "slices": {"region=EU": {"recall": 0.72}}}), ())


def _written(root: Path) -> tuple[int, int]:
    """Return how many audit entries and events the workspace holds."""
    with Workspace.open(root) as ws:
        audit = ws.store.audit.entries(AuditFilter(limit=10_000))
        return len(audit), len(ws.store.events.read_after(0, 10_000))


def test_apply_refuses_a_malformed_file_naming_file_and_line_then_applies_and_shows(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    Workspace.init(tmp_path).close()
    before = _written(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "prod.yaml").write_text(POLICY.replace("fields: [owner]", "fields: []"))
    refused = run_cli(tmp_path, "policy", "apply")
    assert refused.returncode == 5, refused.stderr
    assert "prod.yaml:9: rules[0].fields" in refused.stderr
    assert _written(tmp_path) == before

    (policies / "prod.yaml").write_text(POLICY)
    applied = run_cli(tmp_path, "policy", "apply")
    assert applied.returncode == 0, applied.stderr
    assert "1 gate policy, 2 rules in 1 file" in applied.stdout
    shown = json.loads(run_cli(tmp_path, "policy", "show", "--json").stdout)
    assert shown["applied_by"] == "cli-tester" and shown["files"] == ["prod.yaml"]
    assert [r["id"] for r in shown["policies"][0]["rules"]] == ["card", "recall-eu"]
    assert shown["digest"][:12] in applied.stdout


@pytest.mark.e2e
def test_check_prints_the_failing_rule_exits_non_zero_and_writes_nothing(
        tmp_path: Path) -> None:
    with Workspace.init(tmp_path) as ws:
        _register(ws)
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "prod.yaml").write_text(POLICY)
    before = _written(tmp_path)
    checked = run_console(tmp_path, "policy", "check", "models:/fraud/1", "--gate", "alias",
                          "--target", "production", "--policies", str(candidate))
    assert checked.returncode == 9, checked.stderr
    assert "recall-eu" in checked.stdout and "FAIL" in checked.stdout
    assert "recall on slice region=EU is 0.72" in checked.stdout
    assert "would be denied" in checked.stderr
    assert "policy 'production-readiness' rule 'recall-eu'" in checked.stderr
    assert _written(tmp_path) == before


# -- in-process: the same CLI on every backend ---------------------------------------------------


@pytest.fixture
def cli(ws: Workspace, db_url: str, run_cli: InProcessCli) -> WorkspaceCli:
    (ws.root / "policies").mkdir()
    (ws.root / "policies" / "prod.yaml").write_text(POLICY)
    _register(ws)
    return WorkspaceCli(ws, db_url, run_cli)


def test_a_dry_run_shows_the_change_and_writes_nothing(cli: WorkspaceCli) -> None:
    before = cli.written()
    code, out, err = cli("policy", "apply", "--dry-run")
    assert code == 0, err
    assert "would apply policy set" in out and "+ prod.yaml" in out
    assert cli.written() == before
    code, out, _ = cli("policy", "show")
    assert code == 0 and "no policy set applied" in out


def test_applying_the_same_folder_twice_writes_one_audit_entry(cli: WorkspaceCli) -> None:
    assert cli("policy", "apply")[0] == 0
    code, out, _ = cli("policy", "apply", str(cli.ws.root / "policies"))
    assert code == 0 and "nothing written" in out
    assert len(cli.ws.store.audit.entries(AuditFilter(action="governance.policy_applied"))) == 1
    code, out, _ = cli("policy", "apply", "--dry-run")
    assert code == 0 and "nothing would change" in out
    code, out, _ = cli("policy", "show")
    assert code == 0 and "production-readiness" in out and "recall-eu (metric)" in out


def test_check_against_the_applied_set_reports_every_rule_and_allows_other_targets(
        cli: WorkspaceCli) -> None:
    assert cli("policy", "apply")[0] == 0
    before = cli.written()
    code, out, err = cli("policy", "check", "fraud@latest", "--gate", "alias", "--target",
                         "production", "--json")
    assert code == 9 and "would be denied" in err
    decision = json.loads(out)["decision"]
    assert [(r["rule"], r["passed"]) for r in decision["rules"]] == [
        ("card", True), ("recall-eu", False)]
    assert decision["policy_set"] and decision["facts"]["version"] == 1
    code, out, err = cli("policy", "check", "fraud/1", "--gate", "alias", "--target", "staging")
    assert code == 0, err
    assert "allowed: no policy governs" in out
    assert cli.written() == before


def test_an_empty_folder_is_refused_naming_it_unless_allow_empty(cli: WorkspaceCli) -> None:
    assert cli("policy", "apply")[0] == 0
    empty = cli.ws.root / "cleared"
    empty.mkdir()
    before = cli.written()
    for args in (("policy", "apply", str(empty)), ("policy", "apply", "--dry-run", str(empty))):
        code, _, err = cli(*args)
        assert code == 5 and str(empty) in err and "--allow-empty" in err, err
    assert cli.written() == before
    code, out, err = cli("policy", "apply", "--allow-empty", str(empty))
    assert code == 0, err
    assert "0 gate policies, 0 rules in 0 files" in out
    code, out, _ = cli("policy", "check", "fraud/1", "--gate", "alias", "--target", "production")
    assert code == 0 and "no policy governs" in out


def test_check_refuses_an_unknown_gate_and_an_unknown_version(cli: WorkspaceCli) -> None:
    code, _, err = cli("policy", "check", "fraud/1", "--gate", "launch")
    assert code == 5 and "--gate" in err and "alias" in err
    code, _, err = cli("policy", "check", "fraud/7", "--gate", "alias")
    assert code == 3 and "models:/fraud/7" in err
    code, _, err = cli("policy", "apply", str(cli.ws.root / "missing"))
    assert code == 3 and "policy folder" in err
