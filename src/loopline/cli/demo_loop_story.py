"""What ``loopline demo`` prints while the loop runs, read back from the records after each round.

After every scheduler tick the ``Narrator`` reads what the product recorded — evaluations,
alerts, playbook actions, the deployment's history and canary verdicts — and prints what is
new, stamped with the simulated time since the loop started (``+M:SS``). It also says when
the loop is over: the accuracy alert resolved with a retrained version alone at 100 % (and
the other alerts resolved, or a minute more passed). A recovery step that failed, was
skipped or rolled back ends the demo with ``LoopFailed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from loopline.app import Workspace
from loopline.cli.demo_loop_config import DEPLOYMENT
from loopline.cli.demo_loop_pipeline import MODEL
from loopline.cli.demo_loop_traffic import RoundReport
from loopline.cli.output import console
from loopline.core.deployments import DeploymentState
from loopline.core.monitoring import ActionState, AlertState, Evaluation, EvaluationStatus
from loopline.store import AuditFilter

QUALITY_RULE = "accuracy-drop"
RECOVERY_PLAYBOOK = "recover"
LEGEND = ("each minute the scheduler evaluates the rules over the last 2 whole minutes, once 15 s "
          "have let their records land; a line shows [the window], each version's share of "
          "the traffic since the last line, and each rule's value: input-drift = "
          "share of input columns drifted (alert above 0.5), accuracy-drop = training accuracy "
          "minus served accuracy (alert above 0.1 twice in a row), basic-plan-accuracy = the "
          "same on the basic plan (above 0.15 twice)")


class LoopFailed(RuntimeError):
    """The loop did not recover: the message says which step went wrong."""


def offset(start: datetime, when: datetime) -> str:
    """Return ``when`` as simulated time since ``start``: ``+M:SS`` (``-M:SS`` before it)."""
    seconds = int((when - start).total_seconds())
    sign = "-" if seconds < 0 else "+"
    return f"{sign}{abs(seconds) // 60}:{abs(seconds) % 60:02d}"


def short(uri: str) -> str:
    """Return ``models:/churn/2`` as ``v2``."""
    return f"v{uri.rsplit('/', 1)[-1]}"


def _evaluation_text(evaluation: Evaluation) -> str:
    if evaluation.status is EvaluationStatus.INSUFFICIENT or evaluation.value is None:
        return f"{evaluation.rule} - ({evaluation.samples} samples)"
    mark = "ok" if evaluation.status is EvaluationStatus.OK else \
        f"BREACHED x{evaluation.streak}"
    return f"{evaluation.rule} {evaluation.value:.2f} {mark}"


def _window(start: datetime, parameters: Mapping[str, Any]) -> str:
    try:
        first, last = (datetime.fromisoformat(str(parameters[key]))
                       for key in ("window_start", "window_end"))
    except (KeyError, ValueError):
        return ""
    return f" on the labelled traffic of {offset(start, first)}..{offset(start, last)}"


def _action_detail(state: ActionState, result: Mapping[str, Any], start: datetime) -> str:
    if state is ActionState.RUNNING:
        return f"run {result.get('run_id', '')} of {result.get('pipeline', '')}"
    if state is not ActionState.DONE:
        return str(result.get("reason") or "")
    done = []
    if result.get("run_id"):
        done.append(f"run {result['run_id']} of {result.get('pipeline')}"
                    f"{_window(start, result.get('parameters') or {})}")
    if result.get("registered"):
        done.append(f"{', '.join(result['registered'])} registered")
    if result.get("canary"):
        done.append(f"canary of {result['canary']} started")
    return ", ".join(done)


class Narrator:
    """Prints the loop's new records after each round; tells when it is over."""

    def __init__(self, workspace: Workspace, start: datetime, shift_at: datetime) -> None:
        self._ws = workspace
        self._start = start
        self._shift_at = shift_at
        self._minute: Counter[str] = Counter()
        self._windows: set[datetime] = set()
        self._alerts: dict[str, AlertState] = {}
        self._actions: dict[str, ActionState] = {}
        self._verdicts: set[str] = set()
        self._revision = workspace.deployments.get(DEPLOYMENT).revision
        self._versions = {v.version for v in workspace.models.versions(MODEL)}

    def shift(self) -> None:
        """Say that the shift starts now."""
        self._say(self._shift_at, "SHIFT: prices rise (+23 a month on average), support calls "
                                  "go up, and a competitor courts loyal customers",
                  "bold yellow")

    def _say(self, when: datetime, text: str, style: str | None = None) -> None:
        console.print(f"   {offset(self._start, when):>6}  {text}", style=style)

    def update(self, report: RoundReport) -> bool:
        """Print what the round and the tick after it recorded; return whether it is over.

        Raises:
            LoopFailed: when a recovery step failed, was skipped, or the canary rolled back.
        """
        self._minute.update(report.by_version)
        self._evaluations()
        self._new_alerts()
        self._new_versions()
        self._new_actions()
        self._new_verdicts()
        self._new_revisions()
        return self._over()

    def _traffic(self) -> str:
        total = sum(self._minute.values()) or 1
        shares = ", ".join(f"{short(uri)} {count / total:.0%}"
                           for uri, count in sorted(self._minute.items()))
        self._minute.clear()
        return shares

    def _evaluations(self) -> None:
        found = [e for e in self._ws.evaluator.records.evaluations(deployment=DEPLOYMENT,
                                                                   limit=20)
                 if e.window_end not in self._windows]
        self._windows.update(e.window_end for e in found)
        if not any(e.samples for e in found):
            return  # the scheduler's first tick, before any traffic
        end = max(e.window_end for e in found)
        latest = sorted((e for e in found if e.window_end == end), key=lambda e: e.rule)
        window = f"[{offset(self._start, latest[0].window_start)}..{offset(self._start, end)}]"
        self._say(max(e.evaluated_at for e in latest), f"{window} {self._traffic()} | "
                  + " | ".join(_evaluation_text(e) for e in latest), "dim")

    def _new_alerts(self) -> None:
        for alert in reversed(self._ws.evaluator.records.alerts(deployment=DEPLOYMENT)):
            seen = self._alerts.get(alert.id)
            self._alerts[alert.id] = alert.state
            if seen is None:
                numbers = alert.numbers
                streak = int(numbers.get("streak") or 1)
                self._say(alert.opened_at, (
                    f"ALERT {alert.rule} ({alert.severity}): {numbers.get('value', 0):.2f} > "
                    f"{numbers.get('threshold')}"
                    f"{f' in {streak} windows in a row' if streak > 1 else ''}"
                    f"{', playbook ' + alert.playbook if alert.playbook else ''}"), "bold red")
            if alert.state is AlertState.RESOLVED and seen is not AlertState.RESOLVED \
                    and alert.resolved_at is not None:
                self._say(alert.resolved_at, f"resolved {alert.rule}: back within its "
                                             "threshold", "bold green")

    def _new_actions(self) -> None:
        for action in reversed(self._ws.playbook_actions.list(limit=100)):
            if self._actions.get(action.id) is action.state:
                continue
            self._actions[action.id] = action.state
            result = action.result
            detail = _action_detail(action.state, result, self._start)
            self._say(action.updated_at, f"playbook {action.playbook} step {action.step + 1} "
                                         f"({action.kind}): {action.state}"
                                         f"{' — ' + detail if detail else ''}")
            if action.playbook == RECOVERY_PLAYBOOK and action.state in (
                    ActionState.FAILED, ActionState.SKIPPED):
                raise LoopFailed(f"the {action.kind} action {action.id} {action.state}: "
                                 f"{result.get('reason')}")

    def _new_versions(self) -> None:
        for version in self._ws.models.versions(MODEL):
            if version.version in self._versions:
                continue
            self._versions.add(version.version)
            entry = self._ws.store.audit.entries(AuditFilter(
                action="model.version_registered", subject=version.uri, limit=1))
            gate = (entry[0].after or {}).get("gate", {}) if entry else {}
            basic = version.metrics.get("slices", {}).get("plan=basic", {}).get("accuracy")
            self._say(version.created_at, (
                f"{version.uri} registered by run {version.run_id} on "
                f"{', '.join(version.datasets)}: accuracy {version.metrics.get('accuracy')} "
                f"(basic plan {basic}), reference profile of "
                f"{version.extra.get('reference_profile', {}).get('rows', 0):,} rows; gate: "
                f"{gate.get('reason', 'no policy')}"))

    def _new_verdicts(self) -> None:
        for verdict in reversed(self._ws.deployments.verdicts(DEPLOYMENT)):
            if verdict.id in self._verdicts:
                continue
            self._verdicts.add(verdict.id)
            canary, primary = verdict.numbers["canary"], verdict.numbers["primary"]
            self._say(verdict.decided_at, (
                f"canary window {offset(self._start, verdict.window_start)}.."
                f"{offset(self._start, verdict.window_end)}: {verdict.verdict} (canary "
                f"{canary['requests']} requests, {canary['errors']} errors; primary "
                f"{primary['requests']}, {primary['errors']})"))

    def _new_revisions(self) -> None:
        for change in reversed(self._ws.deployments.history(DEPLOYMENT, limit=20)):
            if change.revision <= self._revision:
                continue
            self._revision = change.revision
            self._say(change.at, f"deployment r{change.revision}: {change.reason}",
                      "bold cyan")
            if change.state is DeploymentState.ROLLED_BACK:
                raise LoopFailed(f"the canary was rolled back: {change.reason}")

    def _over(self) -> bool:
        """Tell whether the loop has recovered (see the module docstring).

        Over when the accuracy alert fired and is resolved with a retrained version alone at
        100 %, once the other alerts are resolved too or a minute more has passed.
        """
        alerts = self._ws.evaluator.records.alerts(deployment=DEPLOYMENT)
        quality = [a for a in alerts if a.rule == QUALITY_RULE]
        deployment = self._ws.deployments.get(DEPLOYMENT)
        if not quality or any(a.resolved_at is None for a in quality) \
                or deployment.state is not DeploymentState.ACTIVE \
                or len(deployment.routes) != 1 or deployment.routes[0].version == 1:
            return False
        recovered = max(a.resolved_at for a in quality if a.resolved_at is not None)
        return all(a.state is AlertState.RESOLVED for a in alerts) or \
            self._ws.store.clock.now() - recovered >= timedelta(minutes=1)

    def give_up(self, limit: timedelta) -> None:
        """End the loop: it did not recover within ``limit`` of simulated time.

        Raises:
            LoopFailed: always.
        """
        raise LoopFailed(f"the loop did not recover within {limit} of simulated time")
