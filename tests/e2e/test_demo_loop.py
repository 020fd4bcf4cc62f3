"""The closed loop of ``loopline demo`` end to end, on the small setting (``--quick``'s).

One loop runs for the module (about ten seconds): a real server answers the load generator
and takes labels, the customers shift, the rules fire, the recover playbook retrains, the
canary is promoted, quality recovers. The tests read what it recorded. A second, shorter
loop whose playbook names a pipeline nobody gave the automation shows the demo failing
loudly rather than hanging.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from cli_runner import InProcessCli

from loopline.app import Workspace
from loopline.cli import demo_loop_config
from loopline.cli.demo_loop import run_loop
from loopline.cli.demo_loop_config import DEPLOYMENT, SMALL
from loopline.cli.demo_loop_story import QUALITY_RULE, LoopFailed
from loopline.cli.demo_loop_timeline import DRIFT_RULE, Timeline, timeline
from loopline.core.deployments import DeploymentState, RouteRole
from loopline.core.monitoring import ActionKind, ActionState, AlertState
from loopline.core.runs import RunState
from loopline.monitoring.windows import SETTLE
from loopline.store import AuditFilter

pytestmark = pytest.mark.slow  # one loop of about ten seconds, in this process


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Timeline]]:
    root = tmp_path_factory.mktemp("loop")
    Workspace.init(root).close()
    workspace, outcome = run_loop(root, SMALL)
    with workspace:
        yield workspace, timeline(workspace, outcome)


def test_the_shift_fires_the_drift_and_accuracy_alerts_and_both_resolve(
        loop: tuple[Workspace, Timeline]) -> None:
    workspace, line = loop
    alerts = workspace.evaluator.records.alerts(deployment=DEPLOYMENT)
    fired = {a.rule for a in alerts}
    assert {QUALITY_RULE, DRIFT_RULE} <= fired
    assert line.drift_alert is not None and line.drift_alert.opened_at > line.outcome.shift_at
    quality = line.quality_alert
    assert quality.numbers["streak"] == 2 and quality.numbers["value"] > 0.1  # for: 2
    assert all(a.state is AlertState.RESOLVED for a in alerts
               if a.rule in (QUALITY_RULE, DRIFT_RULE))


def test_exactly_one_retrain_run_trains_on_the_labelled_window(
        loop: tuple[Workspace, Timeline]) -> None:
    workspace, line = loop
    retrains = [a for a in workspace.playbook_actions.list(limit=1000)
                if a.kind is ActionKind.RETRAIN]
    assert [a.id for a in retrains] == [line.retrain.id]
    assert line.retrain.state is ActionState.DONE and line.retrain_runs == 1
    playbook_runs = [r for r in workspace.pipelines.runs.runs(limit=100)
                     if r.trigger is not None and r.trigger.key.startswith("playbook:")]
    assert [r.id for r in playbook_runs] == [line.run.id]
    assert line.run.state is RunState.SUCCEEDED and line.run.pipeline == "retrain_churn"
    assert line.run.trigger is not None and line.run.trigger.key == f"playbook:{line.retrain.id}"
    window = line.run.parameters
    assert window["window_end"] == quality_window_end(line)
    feedback = workspace.datasets.get("churn-feedback@1")
    assert feedback.rows > 0 and "churned" in [c.name for c in feedback.columns]


def quality_window_end(line: Timeline) -> str:
    """Return the end of the window of the evaluation that opened the accuracy alert."""
    return str(line.quality_alert.numbers["window_end"])


def test_v2_is_registered_through_the_gate_with_a_reference_and_lineage(
        loop: tuple[Workspace, Timeline]) -> None:
    workspace, line = loop
    assert line.new_version == "models:/churn/2"
    version = workspace.models.resolve(line.new_version)
    assert version.run_id == line.run.id and version.datasets == ("churn-feedback@1",)
    assert version.tags["owner"] == "demo" and "plan=basic" in version.metrics["slices"]
    reference = workspace.references.reference_of("churn", 2)
    assert reference is not None and set(reference.inputs.names) == {
        "tenure", "charges", "calls", "plan"}
    entry = workspace.store.audit.entries(AuditFilter(
        action="model.version_registered", subject=line.new_version, limit=1))[0]
    gate = (entry.after or {})["gate"]
    assert gate["allowed"] is True
    assert {r["rule"] for r in gate["rules"] if r["passed"]} == {
        "card", "trained-on-checked-data", "accuracy", "basic-plan"}


def test_the_canary_is_promoted_to_100_percent_by_the_rollout_controller(
        loop: tuple[Workspace, Timeline]) -> None:
    workspace, line = loop
    deployment = workspace.deployments.get(DEPLOYMENT)
    assert deployment.state is DeploymentState.ACTIVE
    assert [(r.uri, r.role, r.weight) for r in deployment.routes] == [
        (line.new_version, RouteRole.PRIMARY, 100.0)]
    history = workspace.deployments.history(DEPLOYMENT)
    promoted = next(c for c in history if c.at == line.promoted_at)
    assert "promoted" in promoted.reason and promoted.actor == workspace.actor
    verdicts = workspace.deployments.verdicts(DEPLOYMENT)
    assert verdicts and all(v.verdict == "pass" for v in verdicts if v.decided_at
                            <= line.promoted_at)


def test_quality_recovers_after_dropping_at_the_shift(loop: tuple[Workspace, Timeline]) -> None:
    _, line = loop
    before, during, after = (line.phase(name).accuracy for name in ("before", "during", "after"))
    assert before is not None and during is not None and after is not None
    assert after > during + 0.15 and before > during + 0.15
    assert line.phase("canary").by_version.keys() == {"v1", "v2"}
    assert set(line.phase("after").by_version) == {"v2"}


def test_the_timeline_numbers_are_consistent(loop: tuple[Workspace, Timeline]) -> None:
    _, line = loop
    outcome, quality = line.outcome, line.quality_alert
    assert outcome.start < outcome.shift_at < quality.opened_at <= line.canary_at \
        <= line.promoted_at <= outcome.end
    assert line.time_to_detect == quality.opened_at - outcome.shift_at
    window_end = datetime.fromisoformat(quality_window_end(line))
    assert window_end.second == window_end.microsecond == 0  # windows end on the minute
    assert SETTLE <= quality.opened_at - window_end < timedelta(minutes=1)  # judged once settled
    assert line.time_to_recover == line.promoted_at - quality.opened_at
    assert quality.resolved_at is not None and line.promoted_at <= quality.resolved_at \
        <= outcome.end
    bounds = [(p.start, p.end) for p in line.phases]
    assert bounds[0][0] == outcome.start and bounds[-1][1] == outcome.end
    assert all(left[1] == right[0] for left, right in pairwise(bounds))
    assert sum(p.labelled for p in line.phases) <= outcome.requests * SMALL.rows


def test_the_where_to_look_commands_show_the_loop(loop: tuple[Workspace, Timeline],
                                                  run_cli: InProcessCli) -> None:
    workspace, line = loop
    actions = run_cli(workspace.root, "playbooks", "actions")
    assert actions.returncode == 0 and line.retrain.id in actions.stdout
    alerts = run_cli(workspace.root, "monitor", "alerts")
    assert alerts.returncode == 0 and QUALITY_RULE in alerts.stdout
    history = run_cli(workspace.root, "deploy", "history", DEPLOYMENT)
    assert history.returncode == 0 and "promoted" in history.stdout


def test_a_recovery_that_cannot_start_stops_the_demo_naming_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = demo_loop_config.monitor_yaml
    monkeypatch.setattr(demo_loop_config, "monitor_yaml", lambda settings, root: written(
        settings, root).replace("pipeline: retrain_churn", "pipeline: nowhere"))
    Workspace.init(tmp_path).close()
    with pytest.raises(LoopFailed, match="retrain action .* failed: .*nowhere"):
        run_loop(tmp_path, SMALL)
