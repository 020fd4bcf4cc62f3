"""``loopline retention`` end to end: the policy comes from ``policy apply``, a dry run deletes
nothing, a legal hold keeps an object until it is released. What to fix is said by processes
as a user runs them; the rest runs in this process (``cli.main.run``), which runs the same code
for a fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_runner import InProcessCli, run_console

from loopline.app import Workspace
from loopline.artifacts import ContentAddressedStore

POLICY = """\
kind: retention
name: default
classes:
  unreferenced_artifacts: {max_age: 30d}
  prediction_log: {max_age: 90d}
"""


def _stray_object(root: Path) -> str:
    """Store bytes no record names, written (by its mtime) a year ago."""
    with Workspace.open(root) as workspace:
        blobs = workspace.artifacts.blobs
        assert isinstance(blobs, ContentAddressedStore)
        digest = blobs.put_bytes(b"left behind by a crash").digest
        path = Path(blobs.storage.url, "objects", digest[:2], digest)
        year_ago = path.stat().st_mtime - 365 * 86400
        os.utime(path, (year_ago, year_ago))
        return digest


@pytest.mark.e2e
def test_retention_without_an_applied_policy_or_with_a_bad_class_says_what_to_fix(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    done = run_console(tmp_path, "retention", "run", "--dry-run")
    assert done.returncode == 7
    assert "no retention policy applied; add a `kind: retention` document" in done.stderr
    bad = run_console(tmp_path, "retention", "holds", "add", "everything", "*", "--reason", "x")
    assert bad.returncode == 5 and "data_class" in bad.stderr


def test_dry_run_hold_and_release_then_a_real_run_deletes_the_stray_object(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "retention.yaml").write_text(POLICY)
    applied = run_cli(tmp_path, "policy", "apply")
    assert applied.returncode == 0, applied.stderr
    digest = _stray_object(tmp_path)

    dry = json.loads(run_cli(tmp_path, "retention", "run", "--dry-run", "--json").stdout)
    [artifacts] = [c for c in dry["classes"] if c["data_class"] == "unreferenced_artifacts"]
    assert dry["dry_run"] and artifacts["items"] == [digest]

    added = run_cli(tmp_path, "retention", "holds", "add", "unreferenced_artifacts", digest,
                    "--reason", "evidence for the incident review")
    assert added.returncode == 0, added.stderr
    hold_id = added.stdout.split()[2]
    held = json.loads(run_cli(tmp_path, "retention", "run", "--json").stdout)
    [artifacts] = [c for c in held["classes"] if c["data_class"] == "unreferenced_artifacts"]
    assert artifacts["deleted"] == 0 and artifacts["held_items"][0]["holds"] == [hold_id]

    assert run_cli(tmp_path, "retention", "holds", "release", hold_id).returncode == 0
    done = run_cli(tmp_path, "retention", "run")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 items" in done.stdout and "unreferenced_artifacts" in done.stdout
