"""The closed loop's timeline for ``loopline demo``: when each thing happened, and quality.

``timeline`` reads the records the loop left — the alerts, the recovery playbook's actions,
the retrain run, the deployment's history — and measures accuracy from the prediction log
with its feedback labels (``monitoring.quality.quality_report``, the evaluator's own
scoring) over four phases: before the shift, from the shift to the accuracy alert, from the
alert to the new version at 100 % (the canary), and after. ``show_timeline`` prints it;
``write_report`` writes the deployment's HTML monitoring report over the loop (as ``loopline
monitor report`` does). Times are on the loop's simulated clock (see ``demo_loop``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from loopline.app import Workspace
from loopline.cli.demo_loop import LoopOutcome
from loopline.cli.demo_loop_config import DEPLOYMENT
from loopline.cli.demo_loop_story import QUALITY_RULE, RECOVERY_PLAYBOOK, offset, short
from loopline.cli.output import console, table
from loopline.core.deployments import DeploymentState
from loopline.core.errors import ConfigurationError, NotFoundError
from loopline.core.monitoring import ActionKind, Alert, PlaybookAction, SliceSpec
from loopline.core.predictions import PredictionWindow
from loopline.core.runs import PipelineRun
from loopline.data.prediction_log import ReadOptions
from loopline.monitoring.quality import quality_report
from loopline.monitoring.report import write_monitor_report
from loopline.monitoring.window_rows import LABEL, MODEL_VERSION, expand_predictions

DRIFT_RULE = "input-drift"
BASIC = SliceSpec("basic-plan", {"plan": "basic"})


@dataclass(frozen=True, slots=True)
class Phase:
    """Accuracy over one phase: overall, on the basic plan, and per serving version."""

    name: str
    start: datetime
    end: datetime
    labelled: int
    accuracy: float | None
    basic: float | None
    by_version: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class Timeline:
    """The loop's milestones (simulated time), its phases, and what recovered it."""

    outcome: LoopOutcome
    quality_alert: Alert
    drift_alert: Alert | None
    retrain: PlaybookAction
    run: PipelineRun
    new_version: str
    canary_at: datetime
    promoted_at: datetime
    phases: tuple[Phase, ...]
    retrain_runs: int

    @property
    def time_to_detect(self) -> timedelta:
        """From the shift to the accuracy alert."""
        return self.quality_alert.opened_at - self.outcome.shift_at

    @property
    def time_to_recover(self) -> timedelta:
        """From the accuracy alert to the new version alone at 100 %."""
        return self.promoted_at - self.quality_alert.opened_at

    def phase(self, name: str) -> Phase:
        """Return the phase called ``name`` (``before``, ``during``, ``canary``, ``after``)."""
        return next(p for p in self.phases if p.name == name)


def _accuracy(rows: pa.Table, name: str | None) -> float | None:
    report = quality_report(rows, {BASIC.name: BASIC}, None)
    return report.get(name).metrics.get("accuracy")


def _phase(workspace: Workspace, name: str, start: datetime, end: datetime) -> Phase:
    window = PredictionWindow(deployment=DEPLOYMENT, start=start, end=end)
    rows = expand_predictions(workspace.predictions.read(window,
                                                         ReadOptions(with_feedback=True)))
    rows = rows.filter(pc.is_valid(rows[LABEL]))
    versions = sorted(str(v) for v in pc.unique(rows[MODEL_VERSION]).to_pylist())
    by_version = {f"v{v.rsplit('.v', 1)[-1]}": _accuracy(
        rows.filter(pc.equal(rows[MODEL_VERSION], v)), None) for v in versions}
    return Phase(name, start, end, rows.num_rows, _accuracy(rows, None),
                 _accuracy(rows, BASIC.name), by_version)


def _retrain(workspace: Workspace, alert: Alert) -> PlaybookAction:
    for action in workspace.playbook_actions.list(alert_id=alert.id):
        if action.kind is ActionKind.RETRAIN:
            return action
    raise NotFoundError("retrain action", alert.id, "the accuracy alert started none")


def timeline(workspace: Workspace, outcome: LoopOutcome) -> Timeline:
    """Read the loop's records into its timeline (see the module docstring).

    Raises:
        NotFoundError: when a milestone is missing (the loop did not recover).
    """
    alerts = sorted(workspace.evaluator.records.alerts(deployment=DEPLOYMENT),
                    key=lambda a: a.opened_at)
    quality = next((a for a in alerts if a.rule == QUALITY_RULE), None)
    if quality is None:
        raise NotFoundError("alert", QUALITY_RULE, "the accuracy rule never fired")
    retrain = _retrain(workspace, quality)
    run = workspace.pipelines.runs.run(str(retrain.result["run_id"]))
    new_version = str(retrain.result["canary"])
    history = sorted(workspace.deployments.history(DEPLOYMENT), key=lambda c: c.revision)
    canary_at = next(c.at for c in history if c.state is DeploymentState.ROLLING_OUT)
    promoted_at = next(c.at for c in history if c.at >= canary_at and len(c.routes) == 1
                       and c.routes[0].uri == new_version)
    marks = [("before", outcome.start, outcome.shift_at),
             ("during", outcome.shift_at, quality.opened_at),
             ("canary", quality.opened_at, promoted_at), ("after", promoted_at, outcome.end)]
    runs = sum(1 for a in workspace.playbook_actions.list(limit=1000)
               if a.kind is ActionKind.RETRAIN and "run_id" in a.result)
    return Timeline(outcome, quality, next((a for a in alerts if a.rule == DRIFT_RULE), None),
                    retrain, run, new_version, canary_at, promoted_at,
                    tuple(_phase(workspace, *mark) for mark in marks), runs)


def duration(value: timedelta) -> str:
    """Return ``value`` as ``2m20s``."""
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def show_timeline(line: Timeline) -> None:
    """Print the phases' quality and the loop's numbers."""
    start = line.outcome.start
    titles = {"before": "before the shift", "during": "shift → alert",
              "canary": f"alert → {short(line.new_version)} 100%", "after": "after"}
    table("accuracy on the labelled traffic, by phase (simulated time)",
          ["phase", "window", "labelled", "accuracy", "basic plan", "by version"],
          [(titles[p.name], f"{offset(start, p.start)}..{offset(start, p.end)}",
            f"{p.labelled:,}", _number(p.accuracy), _number(p.basic),
            ", ".join(f"{v} {_number(a)}" for v, a in p.by_version.items()))
           for p in line.phases])
    drift = line.drift_alert
    seen = "" if drift is None else \
        f"; input drift alerted after {duration(drift.opened_at - line.outcome.shift_at)}"
    outcome = line.outcome
    console.print(
        f"   time to detect   {duration(line.time_to_detect)}  shift → {QUALITY_RULE} alert"
        f"{seen}\n"
        f"   time to recover  {duration(line.time_to_recover)}  alert → {line.new_version} "
        f"at 100% (retrain run {line.run.id}: {outcome.retrain_seconds:.1f} s of wall time; "
        f"canary from {offset(start, line.canary_at)})\n"
        f"   accuracy         {_number(line.phase('before').accuracy)} before → "
        f"{_number(line.phase('during').accuracy)} during → "
        f"{_number(line.phase('after').accuracy)} after\n"
        f"   {duration(outcome.end - outcome.start)} of simulated time in "
        f"{outcome.wall_seconds:.0f} s of wall time, {outcome.requests:,} HTTP requests; "
        f"{line.retrain_runs} retrain run{'' if line.retrain_runs == 1 else 's'} by playbook "
        f"{RECOVERY_PLAYBOOK}", style="bold")


def report_period(outcome: LoopOutcome) -> tuple[datetime, datetime]:
    """Return the period a report of the loop covers: its start to a minute past its end."""
    return outcome.start, outcome.end + timedelta(minutes=1)


def write_report(workspace: Workspace, root: Path, outcome: LoopOutcome) -> Path | None:
    """Write the churn deployment's HTML report over the loop; None without matplotlib."""
    start, end = report_period(outcome)
    try:
        written = write_monitor_report(workspace.store, DEPLOYMENT, start, end,
                                       root / f"monitor-report-{DEPLOYMENT}.html")
    except ConfigurationError as exc:
        console.print(f"   no HTML report: {exc}", style="yellow")
        return None
    facts = written.report.summary()
    console.print(f"   HTML report {written.path} ({written.size / 1024:,.0f} KiB): drift per "
                  f"column over time, quality per slice, latency, {facts['alerts']['total']} "
                  f"alerts and {facts['actions']['total']} playbook actions")
    return written.path
