"""``loopline run`` and ``loopline runs`` end to end, in subprocesses as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FLOW = '''
import pathlib

from loopline import pipeline, task


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def total(values: list[int]) -> int:
    if pathlib.Path("fail-total").exists():
        raise RuntimeError("total was told to fail")
    return sum(values)


@pipeline
def flow(n: int, label: str = "x"):
    return total(numbers(n))
'''


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    environment.update({"LOOPLINE_USER": "cli-tester", "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "loopline", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


def test_run_list_show_and_resume_a_pipeline_from_a_file(tmp_path: Path) -> None:
    assert _run(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    (tmp_path / "fail-total").touch()
    failed = _run(tmp_path, "run", "flow.py:flow", "--param", "n=4", "-p", "label=abc")
    assert failed.returncode == 10, failed.stderr
    assert "task 'total' failed after 1 attempt: RuntimeError" in failed.stderr
    runs = json.loads(_run(tmp_path, "runs", "list", "--json").stdout)
    assert [(r["pipeline"], r["state"], r["parameters"]) for r in runs] == [
        ("flow", "failed", {"n": 4, "label": "abc"})]
    (tmp_path / "fail-total").unlink()
    resumed = _run(tmp_path, "runs", "resume", runs[0]["id"], "flow.py:flow", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["result"] == 6
    shown = json.loads(_run(tmp_path, "runs", "show", runs[0]["id"], "--json").stdout)
    assert shown["run"]["state"] == "succeeded"
    assert {t["task_key"]: t["attempt"] for t in shown["tasks"]} == {"numbers": 1, "total": 2}


def test_bad_parameters_and_targets_exit_5_naming_the_problem(tmp_path: Path) -> None:
    assert _run(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    bad = _run(tmp_path, "run", "flow.py:flow", "--param", "n=four")
    assert bad.returncode == 5 and "parameters.n" in bad.stderr
    unknown = _run(tmp_path, "run", "flow.py:flow", "-p", "n=1", "-p", "colour=red")
    assert unknown.returncode == 5 and "parameters.colour" in unknown.stderr
    missing = _run(tmp_path, "run", "flow.py:nope")
    assert missing.returncode == 5 and "no @pipeline named 'nope'" in missing.stderr
    assert _run(tmp_path, "runs", "show", "0" * 32).returncode == 3
