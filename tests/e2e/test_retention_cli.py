"""``loopline retention`` end to end, in subprocesses: the policy comes from ``policy apply``,
a dry run deletes nothing, a legal hold keeps an object until it is released."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.app import Workspace
from loopline.artifacts import ContentAddressedStore

pytestmark = pytest.mark.e2e

POLICY = """\
kind: retention
name: default
classes:
  unreferenced_artifacts: {max_age: 30d}
  prediction_log: {max_age: 90d}
"""


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    environment.update({"LOOPLINE_USER": "cli-tester", "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "loopline", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


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


def test_retention_without_an_applied_policy_or_with_a_bad_class_says_what_to_fix(
        tmp_path: Path) -> None:
    assert _run(tmp_path, "init").returncode == 0
    done = _run(tmp_path, "retention", "run", "--dry-run")
    assert done.returncode == 7
    assert "no retention policy applied; add a `kind: retention` document" in done.stderr
    bad = _run(tmp_path, "retention", "holds", "add", "everything", "*", "--reason", "x")
    assert bad.returncode == 5 and "data_class" in bad.stderr


def test_dry_run_hold_and_release_then_a_real_run_deletes_the_stray_object(
        tmp_path: Path) -> None:
    assert _run(tmp_path, "init").returncode == 0
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "retention.yaml").write_text(POLICY)
    applied = _run(tmp_path, "policy", "apply")
    assert applied.returncode == 0, applied.stderr
    digest = _stray_object(tmp_path)

    dry = json.loads(_run(tmp_path, "retention", "run", "--dry-run", "--json").stdout)
    [artifacts] = [c for c in dry["classes"] if c["data_class"] == "unreferenced_artifacts"]
    assert dry["dry_run"] and artifacts["items"] == [digest]

    added = _run(tmp_path, "retention", "holds", "add", "unreferenced_artifacts", digest,
                 "--reason", "evidence for the incident review")
    assert added.returncode == 0, added.stderr
    hold_id = added.stdout.split()[2]
    held = json.loads(_run(tmp_path, "retention", "run", "--json").stdout)
    [artifacts] = [c for c in held["classes"] if c["data_class"] == "unreferenced_artifacts"]
    assert artifacts["deleted"] == 0 and artifacts["held_items"][0]["holds"] == [hold_id]

    assert _run(tmp_path, "retention", "holds", "release", hold_id).returncode == 0
    done = _run(tmp_path, "retention", "run")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 items" in done.stdout and "unreferenced_artifacts" in done.stdout
