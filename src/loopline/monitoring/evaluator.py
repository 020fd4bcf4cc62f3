"""Evaluating alert rules: measure each rule's window, store what it saw, open and resolve alerts.

Rules kept here:

- One evaluation per rule, scope and window: the window ends at the evaluation time less
  ``windows.SETTLE`` (15 s, so the servers' stats and log records are in), rounded down to
  a whole minute, so running again in the same minute measures nothing and returns
  the stored evaluation (the store's unique key holds even when two evaluators race: each
  looks again under the append lock before writing).
- Status: ``insufficient`` when the measurement has no value or fewer samples than the
  rule's ``min_samples``; otherwise ``breached`` or ``ok`` by ``AlertRule.breaches``.
  ``min_samples`` does not apply to ``throughput``: a rate over the window is measured by
  the window itself, and no requests at all is a throughput of 0.0, which must be able to
  breach a ``below`` rule.
- Streak: a breach continues the streak of the previous evaluation of the rule and scope
  (by window end) when that one breached too, judged by the same rule record (the rule with
  its drift settings and slice: editing other rules keeps the streak), and its
  window ended at most ``streak_gap(rule)`` before this one's (the rule's window, at least
  ``STREAK_SLACK``: the windows overlap or touch, allowing a skipped minute); else it starts
  at 1. ``ok`` and ``insufficient`` set it to 0. An insufficient evaluation breaks a streak on
  purpose: ``for: N`` promises N judged-bad windows in a row, and a window that could not be
  judged (a traffic lull, labels not in yet) is no evidence of a breach; for the same reason
  breaches hours apart (no scheduler ran in between) never add up to an alert.
- An alert opens when the streak reaches the rule's ``for`` and no alert of the rule and
  scope is firing: the evaluation row, the alert row, the ``monitoring.alert_fired`` event
  and the audit entry commit in one transaction. Later breaches refer to the firing alert.
  An ``ok`` evaluation resolves it (audited; no event: only firing drives playbooks); an
  insufficient one leaves it firing.
- A measurement that fails (bad data: an unreadable request, labels scikit-learn refuses,
  or any other error of the measurer) is an ``insufficient`` evaluation whose numbers keep
  the error's text, logged with its traceback, so one rule's bad data stops no other rule;
  only ``BackendError`` (the store is away) stops the run.
- Each evaluation stores the rule, the drift settings and slice it was judged by
  (``rule_records.rule_record``), the window and the numbers measured, so ``rerun``
  measures it again from stored data alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from loopline.core.canonical import hash_canonical, json_safe
from loopline.core.clock import Clock
from loopline.core.errors import BackendError, InvalidArgumentError, LooplineError
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ids import new_id
from loopline.core.models import MODELS_SCHEME
from loopline.core.monitoring import (
    Alert,
    AlertRule,
    AlertState,
    Evaluation,
    EvaluationStatus,
    Measurement,
    MonitorConfig,
    SignalKind,
)
from loopline.core.ports import Authorizer, authorize_if_wired
from loopline.monitoring.config_store import MonitorConfigs
from loopline.monitoring.rule_records import parse_rule_record, rule_record
from loopline.monitoring.windows import Measurer, MeasureTask, window_end
from loopline.store import MetadataStore, UnitOfWork
from loopline.store import monitor_records as records

__all__ = ["MONITOR_ACTOR", "STREAK_SLACK", "Evaluator", "Rerun", "alert_subject",
           "evaluate_in_force", "judge", "next_streak", "streak_gap"]

log = logging.getLogger(__name__)

MONITOR_ACTOR = "loopline-monitor"
"""Who evaluations are recorded as when no actor is given (the scheduler)."""


def alert_subject(alert_id: str) -> str:
    """Return the audit and event subject of an alert: ``alert:<id>``."""
    return f"alert:{alert_id}"


def judge(rule: AlertRule, measurement: Measurement) -> EvaluationStatus:
    """Return the status of ``measurement`` under ``rule`` (see the module's rules)."""
    needed = 0 if rule.signal is SignalKind.THROUGHPUT else rule.min_samples
    if measurement.value is None or measurement.samples < needed:
        return EvaluationStatus.INSUFFICIENT
    return EvaluationStatus.BREACHED if rule.breaches(measurement.value) \
        else EvaluationStatus.OK


STREAK_SLACK = timedelta(minutes=2)
"""The least gap a streak spans: one evaluation a minute may skip a minute."""


def streak_gap(rule: AlertRule) -> timedelta:
    """Return how long before a window's end the previous one may end for a streak to go on."""
    return max(rule.window, STREAK_SLACK)


def next_streak(previous: Evaluation | None, status: EvaluationStatus, rule: AlertRule,
                end: datetime, record: Mapping[str, Any]) -> int:
    """Return the streak of an evaluation following ``previous`` (see the module's rules).

    The evaluation is of ``rule`` with ``status``, its window ending at ``end``, judged by
    ``record`` (``rule_records.rule_record``: the rule with its drift settings and slice). A
    streak goes on only under the same record, so editing another rule of the config (or a
    playbook) leaves this rule's streak alone, while changing this rule starts it again.
    """
    if status is not EvaluationStatus.BREACHED:
        return 0
    if (previous is not None and previous.status is EvaluationStatus.BREACHED
            and hash_canonical(previous.rule_record) == hash_canonical(record)
            and end - previous.window_end <= streak_gap(rule)):
        return previous.streak + 1
    return 1


def _checked(measurement: Measurement) -> Measurement:
    """Return ``measurement`` with a NaN value as None (and said so in its numbers)."""
    samples = measurement.samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise InvalidArgumentError("samples", f"{samples!r} must be a whole number >= 0")
    value = measurement.value
    if value is not None and math.isnan(value):
        return Measurement(None, samples, {**measurement.numbers, "reason": "the value is NaN"})
    return Measurement(None if value is None else float(value), samples, measurement.numbers)


@dataclass(frozen=True, slots=True)
class Rerun:
    """A stored evaluation measured again: what it says now beside what it said then."""

    evaluation: Evaluation
    value: float | None
    samples: int
    status: EvaluationStatus
    numbers: Mapping[str, Any]

    @property
    def same(self) -> bool:
        """Whether the measurement and the status agree with the stored evaluation."""
        return (self.value == self.evaluation.value and self.status is self.evaluation.status
                and self.samples == self.evaluation.samples)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one evaluation decides besides its own row."""

    evaluation: Evaluation
    opened: Alert | None = None
    resolved: Alert | None = None


class Evaluator:
    """Evaluates a config's rules through a ``Measurer`` and records what they found.

    With an ``authorizer``, ``run`` needs ``write`` (its alerts start playbooks).
    """

    def __init__(self, store: MetadataStore, measurer: Measurer, clock: Clock, *,
                 actor: str = MONITOR_ACTOR, authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._measurer = measurer
        self._clock = clock
        self._actor = actor
        self._authorizer = authorizer
        self.records = records.MonitorRecords(store.engine)

    def run(self, config: MonitorConfig,
            deployments: Collection[str] | None = None) -> list[Evaluation]:
        """Evaluate every rule of ``config`` (of ``deployments`` only, when given) once.

        Returns the evaluations in rule order: new ones, or the ones stored already for
        this minute's windows.

        Raises:
            AccessDeniedError: when the actor may not write.
            BackendError: when the store cannot be reached (rules evaluated before the
                failure stay recorded).
        """
        authorize_if_wired(self._authorizer, self._actor, Permission.WRITE)
        now = self._clock.now()
        run = _Run(window_end(now), now, {})  # one memo: rules on one window read it once
        wanted = None if deployments is None else frozenset(deployments)
        return [self._evaluate(rule, config, run) for rule in config.rules
                if wanted is None or rule.scope.deployment in wanted]

    def rerun(self, evaluation_id: str) -> Rerun:
        """Measure a stored evaluation again from its stored rule, settings and window.

        Nothing is written. The answer is the same while the window's predictions and the
        labels timed before the evaluation are as they were.

        Raises:
            NotFoundError: when there is no such evaluation.
        """
        evaluation = self.records.evaluation(evaluation_id)
        rule, config = parse_rule_record(evaluation.rule_record)
        measurement = self._measure(MeasureTask(
            rule, evaluation.window_start, evaluation.window_end, evaluation.evaluated_at,
            config.drift, config.slices))
        return Rerun(evaluation, measurement.value, measurement.samples,
                     judge(rule, measurement), measurement.numbers)

    def _measure(self, task: MeasureTask) -> Measurement:
        try:
            return _checked(self._measurer.measure(task))
        except BackendError:
            raise
        except Exception as exc:  # one rule's bad data must not stop the others (logged)
            rule = task.rule
            log.warning("rule %r (%s) could not be measured over %s..%s; recorded as "
                        "insufficient", rule.name, rule.scope.key, task.start.isoformat(),
                        task.end.isoformat(), exc_info=True)
            text = exc.message if isinstance(exc, LooplineError) \
                else f"{type(exc).__name__}: {exc}"
            return Measurement(None, 0, {"error": text})

    def _evaluate(self, rule: AlertRule, config: MonitorConfig, run: _Run) -> Evaluation:
        key, end, now = rule.scope.key, run.end, run.now
        with self._store.read() as session:
            stored = records.evaluation_at(session.connection(), rule.name, key, end)
        if stored is not None:
            return stored  # measured this minute already: measure nothing
        measurement = self._measure(MeasureTask(rule, end - rule.window, end, now,
                                                config.drift, config.slices, run.cache))
        with self._store.write(self._actor) as uow:
            uow.serialise()  # look again under the lock every evaluator takes
            stored = records.evaluation_at(uow.session.connection(), rule.name, key, end)
            if stored is not None:
                return stored
            outcome = _decide(uow, rule, measurement, _Draft(
                config.digest, end, now, rule_record(rule, config)))
            records.insert_evaluation(uow, outcome.evaluation)
            _record_alerts(uow, rule, outcome)
        return outcome.evaluation


def evaluate_in_force(evaluator: Evaluator, configs: MonitorConfigs,
                      deployments: Collection[str] | None = None) -> list[Evaluation]:
    """Evaluate the config in force once (the scheduler's periodic duty); [] when none is.

    Raises:
        InvalidArgumentError: when the stored config no longer parses.
        AccessDeniedError, BackendError: as ``Evaluator.run``.
    """
    applied = configs.current()
    return [] if applied is None else evaluator.run(applied.config, deployments)


@dataclass(frozen=True, slots=True)
class _Run:
    """One run's window end, time, and the memo its measurements share."""

    end: datetime
    now: datetime
    cache: dict[Hashable, Any]


@dataclass(frozen=True, slots=True)
class _Draft:
    """What an evaluation is stamped with besides the measurement."""

    digest: str
    end: datetime
    now: datetime
    rule_record: Mapping[str, Any]


def _decide(uow: UnitOfWork, rule: AlertRule, measurement: Measurement,
            draft: _Draft) -> _Outcome:
    """Return the evaluation, and the alert it opens or resolves, from what is stored."""
    key = rule.scope.key
    connection = uow.session.connection()
    status = judge(rule, measurement)
    previous = records.previous_evaluation(connection, rule.name, key, draft.end)
    streak = next_streak(previous, status, rule, draft.end, draft.rule_record)
    firing = records.firing_alert(connection, rule.name, key)
    evaluation_id = new_id()
    alert_id: str | None = None
    opened = resolved = None
    if status is EvaluationStatus.BREACHED and firing is not None:
        alert_id = firing.id
    elif status is EvaluationStatus.BREACHED and streak >= rule.for_count:
        alert_id = new_id()
        opened = Alert(id=alert_id, rule=rule.name, scope_key=key,
                       deployment=rule.scope.deployment, severity=rule.severity,
                       state=AlertState.FIRING, playbook=rule.playbook, opened_at=draft.now,
                       evaluation_id=evaluation_id,
                       numbers=_alert_numbers(rule, measurement, streak, draft))
    elif status is EvaluationStatus.OK and firing is not None:
        resolved = firing
    evaluation = Evaluation(
        id=evaluation_id, rule=rule.name, scope_key=key, deployment=rule.scope.deployment,
        signal=rule.signal, window_start=draft.end - rule.window, window_end=draft.end,
        value=measurement.value, samples=measurement.samples, status=status, streak=streak,
        rule_record=draft.rule_record, numbers=dict(measurement.numbers),
        config_digest=draft.digest, evaluated_at=draft.now, alert_id=alert_id)
    return _Outcome(evaluation, opened, resolved)


def _finite(value: float | None) -> float | None:
    """Return ``value`` when finite: an event payload is strict JSON (the row keeps inf)."""
    return value if value is not None and math.isfinite(value) else None


def _served_version(rule: AlertRule, measurement: Measurement) -> str | None:
    found = measurement.numbers.get("model_version")
    if rule.scope.model_version is not None:
        return rule.scope.model_version
    return found if isinstance(found, str) and found.startswith(MODELS_SCHEME) else None


def _alert_numbers(rule: AlertRule, measurement: Measurement, streak: int,
                   draft: _Draft) -> dict[str, Any]:
    return {"signal": str(rule.signal), "value": measurement.value,
            "threshold": rule.threshold, "comparison": str(rule.comparison),
            "metric": rule.metric, "samples": measurement.samples, "streak": streak,
            "for": rule.for_count, "window_start": (draft.end - rule.window).isoformat(),
            "window_end": draft.end.isoformat(),
            "model_version": _served_version(rule, measurement)}


def _record_alerts(uow: UnitOfWork, rule: AlertRule, outcome: _Outcome) -> None:
    evaluation = outcome.evaluation
    if outcome.opened is not None:
        alert = records.insert_alert(uow, outcome.opened)
        scope = rule.scope
        payload = {
            "alert_id": alert.id, "rule": rule.name, "deployment": scope.deployment,
            "scope": {"deployment": scope.deployment, "model_version": scope.model_version,
                      "slice": scope.slice, "column": scope.column},
            "scope_key": scope.key, "severity": str(rule.severity), "playbook": rule.playbook,
            "evaluation_id": evaluation.id, "signal": str(rule.signal),
            "value": _finite(evaluation.value), "threshold": rule.threshold,
            "model_version": alert.numbers.get("model_version"),
            "window_start": evaluation.window_start.isoformat(),
            "window_end": evaluation.window_end.isoformat()}
        uow.emit(EventType.ALERT_FIRED, alert_subject(alert.id), payload)
        uow.audit("monitoring.alert_fired", alert_subject(alert.id), None,
                  {**payload, "value": json_safe(evaluation.value)})
    if outcome.resolved is not None:
        alert = records.resolve_alert(uow, outcome.resolved, evaluation.evaluated_at)
        uow.audit("monitoring.alert_resolved", alert_subject(alert.id),
                  {"state": str(AlertState.FIRING)},
                  {"state": str(alert.state), "evaluation_id": evaluation.id,
                   "value": json_safe(evaluation.value), "rule": rule.name,
                   "deployment": rule.scope.deployment})
