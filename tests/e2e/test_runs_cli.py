"""``loopline run`` and ``loopline runs`` end to end. A failed run and its resume run in
subprocesses as a user runs them: each process imports the pipeline file afresh and the resume
picks up what another process left. The rest run in this process (``cli.main.run``), which
runs the same code for a fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from cli_runner import InProcessCli, run_console

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


@pytest.mark.e2e
def test_run_list_show_and_resume_a_pipeline_from_a_file(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    (tmp_path / "fail-total").touch()
    failed = run_console(tmp_path, "run", "flow.py:flow", "--param", "n=4", "-p", "label=abc")
    assert failed.returncode == 10, failed.stderr
    assert "task 'total' failed after 1 attempt: RuntimeError" in failed.stderr
    runs = json.loads(run_cli(tmp_path, "runs", "list", "--json").stdout)
    assert [(r["pipeline"], r["state"], r["parameters"]) for r in runs] == [
        ("flow", "failed", {"n": 4, "label": "abc"})]
    (tmp_path / "fail-total").unlink()
    resumed = run_console(tmp_path, "runs", "resume", runs[0]["id"], "flow.py:flow", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["result"] == 6
    shown = json.loads(run_cli(tmp_path, "runs", "show", runs[0]["id"], "--json").stdout)
    assert shown["run"]["state"] == "succeeded"
    assert {t["task_key"]: t["attempt"] for t in shown["tasks"]} == {"numbers": 1, "total": 2}


def test_bad_parameters_and_targets_exit_5_naming_the_problem(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    bad = run_cli(tmp_path, "run", "flow.py:flow", "--param", "n=four")
    assert bad.returncode == 5 and "parameters.n" in bad.stderr
    unknown = run_cli(tmp_path, "run", "flow.py:flow", "-p", "n=1", "-p", "colour=red")
    assert unknown.returncode == 5 and "parameters.colour" in unknown.stderr
    missing = run_cli(tmp_path, "run", "flow.py:nope")
    assert missing.returncode == 5 and "no @pipeline named 'nope'" in missing.stderr
    assert run_cli(tmp_path, "runs", "show", "0" * 32).returncode == 3


def test_runs_logs_show_each_attempt_with_its_error_and_traceback(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    (tmp_path / "fail-total").touch()
    assert run_cli(tmp_path, "run", "flow.py:flow", "-p", "n=3").returncode == 10
    run_id = json.loads(run_cli(tmp_path, "runs", "list", "--json").stdout)[0]["id"]
    logs = run_cli(tmp_path, "runs", "logs", run_id, "--task", "total")
    assert logs.returncode == 0, logs.stderr
    assert "== total attempt 1: failed" in logs.stdout
    assert "RuntimeError: total was told to fail" in logs.stdout
    assert 'in total' in logs.stdout  # the traceback names the task's function
    every = json.loads(run_cli(tmp_path, "runs", "logs", run_id, "--json").stdout)
    assert set(every) == {"numbers", "total"} and every["numbers"][0]["state"] == "succeeded"
    missing = run_cli(tmp_path, "runs", "logs", run_id, "--task", "nope")
    assert missing.returncode != 0 and "--task" in missing.stderr


def test_a_finished_or_unknown_run_cannot_be_cancelled(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    assert run_cli(tmp_path, "run", "flow.py:flow", "-p", "n=2").returncode == 0
    run_id = json.loads(run_cli(tmp_path, "runs", "list", "--json").stdout)[0]["id"]
    finished = run_cli(tmp_path, "runs", "cancel", run_id)
    assert finished.returncode != 0 and "cancelled" in finished.stderr
    unknown = run_cli(tmp_path, "runs", "cancel", "0" * 32)
    assert unknown.returncode != 0 and "not found" in unknown.stderr.lower()


def test_no_cache_runs_every_task_again_and_the_process_executor_runs_a_file(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    first = run_cli(tmp_path, "run", "flow.py:flow", "-p", "n=5", "--json")
    assert first.returncode == 0, first.stderr
    cached = json.loads(run_cli(tmp_path, "run", "flow.py:flow", "-p", "n=5", "--json").stdout)
    assert {t["state"] for t in cached["tasks"]} == {"cached"}
    fresh = run_cli(tmp_path, "run", "flow.py:flow", "-p", "n=5", "--no-cache", "--json",
                    "--executor", "process", "--max-workers", "2")
    assert fresh.returncode == 0, fresh.stderr
    report = json.loads(fresh.stdout)
    assert report["result"] == 10
    assert {t["state"] for t in report["tasks"]} == {"succeeded"}


PIPELINE_TOML = """
name = "wrapped"

[parameters]
rows = 3

[[tasks]]
name = "prepare"
command = ["{python}", "prepare.py", "{rows}", "{out}"]
outputs = ["data.txt"]

[[tasks]]
name = "train"
command = ["{python}", "train.py", "{prepare}"]
needs = ["prepare"]
"""
PREPARE = """
import pathlib, sys
n = int(sys.argv[1])
print("prepared", n)
pathlib.Path(sys.argv[2], "data.txt").write_text(str(list(range(n))))
"""
TRAIN = """
import pathlib, sys
print("trained on", pathlib.Path(sys.argv[1], "data.txt").read_text())
"""


def test_a_pipeline_file_of_commands_runs_and_its_output_is_in_the_logs(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    python = sys.executable.replace("\\", "/")
    (tmp_path / "pipeline.toml").write_text(PIPELINE_TOML.replace("{python}", python))
    (tmp_path / "prepare.py").write_text(PREPARE)
    (tmp_path / "train.py").write_text(TRAIN)
    ran = run_cli(tmp_path, "run", "pipeline.toml", "-p", "rows=4", "--json")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run"]["id"]
    logs = run_cli(tmp_path, "runs", "logs", run_id)
    assert "prepared 4" in logs.stdout
    assert "trained on [0, 1, 2, 3]" in logs.stdout
    wrong = run_cli(tmp_path, "run", "pipeline.toml", "-p", "rows=many")
    assert wrong.returncode != 0 and "rows" in wrong.stderr
