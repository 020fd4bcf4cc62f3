"""``loopline scheduler`` end to end. ``--once`` failing with exit 10 runs in subprocesses as a
user runs it; the rest in this process (``cli.main.run``), which runs the same code for a
fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_runner import InProcessCli, run_console

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import Route, Strategy
from loopline.core.events import EventType
from loopline.core.models import NewModelVersion
from loopline.data.quantile_sketch import QuantileSketch
from loopline.data.serving_windows import grid_floor
from loopline.store.serving_stats import StatsRow, add_stats

FLOW = '''
from loopline import pipeline, task
from loopline.pipelines.schedules import Schedule, Trigger


@task
def total(n: int) -> int:
    if n < 0:
        raise RuntimeError("negative rows")
    return sum(range(n))


@pipeline(schedule=Schedule("0 0 1 1 *", parameters={"n": 1}),
          triggers=[Trigger(on="custom.data_arrived", where={"source": "s3"},
                            parameters={"n": "rows"}, name="arrival")])
def refresh(n: int):
    return total(n)


@pipeline
def unscheduled(n: int = 1):
    return total(n)
'''


def _emit(root: Path, **payload: Any) -> None:
    with Workspace.open(root) as workspace, workspace.store.write("uploader") as uow:
        uow.emit("custom.data_arrived", "bucket:raw", payload)


def _runs(root: Path, run_cli: InProcessCli) -> list[dict[str, Any]]:
    listed = run_cli(root, "runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_scheduler_once_runs_a_due_event_trigger_once(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    first = run_cli(tmp_path, "scheduler", "flow.py", "--once")  # first start: from the log's end
    assert first.returncode == 0, first.stderr
    assert "refresh/arrival" in first.stdout and "refresh/default" in first.stdout
    assert "nothing was due" in first.stdout

    _emit(tmp_path, source="s3", rows=4)
    _emit(tmp_path, source="laptop", rows=9)  # filtered out by where=
    fired = run_cli(tmp_path, "scheduler", "flow.py", "--once")
    assert fired.returncode == 0, fired.stderr
    assert fired.stdout.count("started run") == 1
    assert "1 scheduled runs succeeded" in fired.stdout
    runs = _runs(tmp_path, run_cli)
    assert [(r["pipeline"], r["state"], r["parameters"], r["trigger"]["name"]) for r in runs] \
        == [("refresh", "succeeded", {"n": 4}, "refresh/arrival")]

    again = run_cli(tmp_path, "scheduler", "flow.py", "--once")
    assert again.returncode == 0 and "nothing was due" in again.stdout
    assert len(_runs(tmp_path, run_cli)) == 1


@pytest.mark.e2e
def test_scheduler_once_exits_10_when_a_run_fails_or_cannot_start(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    assert run_cli(tmp_path, "scheduler", "flow.py", "--once").returncode == 0
    _emit(tmp_path, source="s3", rows=-1)  # the task raises
    _emit(tmp_path, source="s3")  # no "rows": the trigger cannot start a run
    failed = run_console(tmp_path, "scheduler", "flow.py:refresh", "--once")
    assert failed.returncode == 10, failed.stderr
    assert "2 of 2 scheduled runs did not succeed" in failed.stderr
    assert "has no value at 'rows'" in failed.stderr
    assert {r["state"] for r in _runs(tmp_path, run_cli)} == {"failed"}


def test_unscheduled_pipelines_are_kept_for_playbooks_and_a_missing_file_is_refused(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    (tmp_path / "flow.py").write_text(textwrap.dedent(FLOW))
    unscheduled = run_cli(tmp_path, "scheduler", "flow.py:unscheduled", "--once")
    assert unscheduled.returncode == 0, unscheduled.stderr
    assert "nothing was due" in unscheduled.stdout
    alone = run_cli(tmp_path, "scheduler", "--once")  # canaries, monitoring, playbooks only
    assert alone.returncode == 0, alone.stderr
    missing = run_cli(tmp_path, "scheduler", "nope.py", "--once")
    assert missing.returncode == 5 and "nope.py" in missing.stderr


MONITORING = """
playbooks:
  tell:
    steps:
      - action: notify
        message: error rate up
rules:
  - name: errors-up
    signal: error_rate
    deployment: web
    window: 10m
    threshold: 0.2
    min_samples: 10
    for: 1
    severity: critical
    playbook: tell
"""


def test_a_scheduler_round_evaluates_rules_hands_the_alert_over_and_runs_its_playbook(
        tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    with Workspace.open(tmp_path) as ws:
        digest = ws.artifacts.blobs.put_bytes(b"a model").digest
        ws.models.record_version(NewModelVersion("fraud", digest, "python"), ())
        ws.deployments.create("web", [Route("fraud", 1, 100.0)], Strategy.REPLACE)
        bucket = grid_floor(datetime.now(UTC) - timedelta(minutes=2), timedelta(seconds=10))
        add_stats(ws.store, [StatsRow("web", "models:/fraud/1", "i-1", bucket, 40, 20,
                                      QuantileSketch.of([5.0] * 40).to_dict())])
    (tmp_path / "monitor.yaml").write_text(MONITORING)
    assert run_cli(tmp_path, "monitor", "apply", "monitor.yaml").returncode == 0
    two_days_ago = ManualClock(datetime.now(UTC) - timedelta(days=2))
    with Workspace.open(tmp_path, clock=two_days_ago) as old, \
            old.store.write("monitor") as uow:  # an alert from before any scheduler ran
        uow.emit(EventType.ALERT_FIRED, "alert:old", {
            "alert_id": "old", "rule": "errors-up", "scope": "web|*|*|*",
            "deployment": "web", "severity": "critical", "playbook": "tell",
            "evaluation_id": "gone"})
    ran = run_cli(tmp_path, "scheduler", "--once")  # the first: not replaying the old alert
    assert ran.returncode == 0, ran.stderr
    alerts = json.loads(run_cli(tmp_path, "monitor", "alerts", "--json").stdout)
    assert [(a["rule"], a["state"]) for a in alerts] == [("errors-up", "firing")]
    actions = json.loads(run_cli(tmp_path, "playbooks", "actions", "--json").stdout)
    assert [(a["kind"], a["state"], a["alert_id"]) for a in actions] == [
        ("notify", "done", alerts[0]["id"])]
    again = run_cli(tmp_path, "scheduler", "--once")  # the same minute: nothing new
    assert again.returncode == 0, again.stderr
    assert len(json.loads(run_cli(tmp_path, "playbooks", "actions", "--json").stdout)) == 1
