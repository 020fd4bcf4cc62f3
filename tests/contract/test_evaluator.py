"""The evaluator on every backend, through a scripted measurer and a manual clock: ``for: 3``
fires on the third bad window and not before; an insufficient window breaks a streak; the
alert, its event and its audit entry commit with the evaluation or not at all; an ok window
resolves it; a second run in the same minute measures nothing and writes nothing, even when
another evaluator wrote first; one rule's bad data does not stop the others; a stored
evaluation is re-run from its record alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loopline.core.clock import ManualClock
from loopline.core.errors import (
    AccessDeniedError,
    BackendError,
    InvalidArgumentError,
)
from loopline.core.events import EventType
from loopline.core.governance import Permission, Role
from loopline.core.monitoring import (
    AlertState,
    EvaluationStatus,
    Measurement,
    MonitorConfig,
)
from loopline.monitoring import evaluator as evaluator_module
from loopline.monitoring.config_store import MonitorConfigs
from loopline.monitoring.config_yaml import parse_config
from loopline.monitoring.evaluator import Evaluator, evaluate_in_force
from loopline.monitoring.windows import MeasureTask
from loopline.store import AuditFilter, MetadataStore

T0 = datetime(2026, 3, 1, 12, 0, 20, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _document(**changes: Any) -> dict[str, Any]:
    rule = {"name": "drift", "signal": "dataset_drift", "deployment": "fraud", "window": "15m",
            "threshold": 0.3, "for": 3, "min_samples": 10, "severity": "critical",
            "playbook": "recover", **changes}
    return {
        "drift": {"method": "psi"},
        "playbooks": {"recover": {"steps": [{"action": "notify", "url": "https://x.test"}]}},
        "rules": [rule, {"name": "errors", "signal": "error_rate", "deployment": "ads",
                         "threshold": 0.1, "min_samples": 1}]}


def _config(**changes: Any) -> MonitorConfig:
    return parse_config(_document(**changes))


class Scripted:
    """Measures each rule with the next of its scripted measurements; records the tasks."""

    def __init__(self, **scripts: list[Measurement | Exception]) -> None:
        self.scripts = {name: list(items) for name, items in scripts.items()}
        self.tasks: list[MeasureTask] = []

    def measure(self, task: MeasureTask) -> Measurement:
        self.tasks.append(task)
        script = self.scripts.get(task.rule.name) or [Measurement(0.0, 100)]
        found = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(found, Exception):
            raise found
        return found


BAD, GOOD, FEW = Measurement(0.5, 100, {"share": 0.5}), Measurement(0.1, 100), \
    Measurement(0.9, 3)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def clocked(db_url: str, clock: ManualClock) -> Iterator[MetadataStore]:
    store = MetadataStore.open(db_url, clock=clock, check_schema=False)
    store.upgrade()
    try:
        yield store
    finally:
        store.close()


def _fired(store: MetadataStore) -> list[Any]:
    return store.events.read_after(0, 1000, types=[EventType.ALERT_FIRED])


def _steps(evaluator: Evaluator, clock: ManualClock, config: MonitorConfig,
           count: int) -> list[Any]:
    """Run ``count`` times a minute apart; return the drift rule's evaluations."""
    found = []
    for _ in range(count):
        found.append(evaluator.run(config, deployments=["fraud"])[0])
        clock.advance(MINUTE)
    return found


def test_for_three_fires_on_the_third_bad_window_not_before(clocked: MetadataStore,
                                                            clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[BAD]), clock)
    config = _config()
    first, second = _steps(evaluator, clock, config, 2)
    assert [(e.status, e.streak, e.alert_id) for e in (first, second)] == [
        (EvaluationStatus.BREACHED, 1, None), (EvaluationStatus.BREACHED, 2, None)]
    assert _fired(clocked) == [] and evaluator.records.alerts() == []

    third = _steps(evaluator, clock, config, 1)[0]
    assert (third.status, third.streak) == (EvaluationStatus.BREACHED, 3)
    [alert] = evaluator.records.alerts()
    assert third.alert_id == alert.id and alert.evaluation_id == third.id
    assert (alert.state, alert.rule, alert.scope_key, alert.playbook, alert.severity) == (
        AlertState.FIRING, "drift", "fraud|*|*|*", "recover", "critical")
    [event] = _fired(clocked)
    assert event.subject == f"alert:{alert.id}"
    assert {key: event.payload[key] for key in (
        "alert_id", "rule", "deployment", "severity", "playbook", "evaluation_id", "value",
        "threshold")} == {"alert_id": alert.id, "rule": "drift", "deployment": "fraud",
                          "severity": "critical", "playbook": "recover",
                          "evaluation_id": third.id, "value": 0.5, "threshold": 0.3}
    assert event.payload["scope"] == {"deployment": "fraud", "model_version": None,
                                      "slice": None, "column": None}
    [audit] = clocked.audit.entries(AuditFilter(action="monitoring.alert_fired"))
    assert audit.subject == event.subject and audit.after is not None
    assert audit.after["evaluation_id"] == third.id

    fourth = _steps(evaluator, clock, config, 1)[0]  # still bad: the same alert, no new one
    assert (fourth.streak, fourth.alert_id) == (4, alert.id)
    assert len(_fired(clocked)) == 1 and len(evaluator.records.alerts()) == 1


def test_the_window_ends_on_the_minute_and_spans_the_rule_window(clocked: MetadataStore,
                                                                  clock: ManualClock) -> None:
    measurer = Scripted(drift=[BAD])
    evaluation = Evaluator(clocked, measurer, clock).run(_config())[0]
    end = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert (evaluation.window_start, evaluation.window_end, evaluation.evaluated_at) == (
        end - timedelta(minutes=15), end, T0)
    task = measurer.tasks[0]
    assert (task.start, task.end, task.as_of, task.drift.default.method) == (
        end - timedelta(minutes=15), end, T0, "psi")


def test_an_insufficient_window_breaks_the_streak(clocked: MetadataStore,
                                                  clock: ManualClock) -> None:
    script: list[Measurement | Exception] = [BAD, BAD, FEW, BAD, BAD, BAD]
    evaluator = Evaluator(clocked, Scripted(drift=script), clock)
    found = _steps(evaluator, clock, _config(), 5)
    assert [(e.status.value, e.streak) for e in found] == [
        ("breached", 1), ("breached", 2), ("insufficient", 0), ("breached", 1),
        ("breached", 2)]
    assert _fired(clocked) == []
    sixth = _steps(evaluator, clock, _config(), 1)[0]
    assert sixth.streak == 3 and sixth.alert_id is not None and len(_fired(clocked)) == 1


def test_breaches_hours_apart_never_add_up_to_an_alert(clocked: MetadataStore,
                                                       clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[BAD]), clock)
    config = _config()  # a 15-minute window, for: 3
    found = []
    for _ in range(3):
        found.append(evaluator.run(config, deployments=["fraud"])[0])
        clock.advance(timedelta(hours=2))  # no scheduler ran in between
    assert [(e.status, e.streak, e.alert_id) for e in found] == [
        (EvaluationStatus.BREACHED, 1, None)] * 3
    assert _fired(clocked) == [] and evaluator.records.alerts() == []
    # the same three breaches a minute apart do fire
    assert [e.streak for e in _steps(evaluator, clock, config, 3)] == [1, 2, 3]
    assert len(_fired(clocked)) == 1


def test_a_changed_rule_starts_a_new_streak_and_an_unrelated_change_does_not(
        clocked: MetadataStore, clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[BAD]), clock)
    assert [e.streak for e in _steps(evaluator, clock, _config(), 2)] == [1, 2]
    changed = _config(threshold=0.2)  # another rule now: its breaches start again
    assert [e.streak for e in _steps(evaluator, clock, changed, 2)] == [1, 2]
    assert _fired(clocked) == []
    widened = parse_config({**_document(threshold=0.2), "rules": [
        *_document(threshold=0.2)["rules"],
        {"name": "latency", "signal": "latency", "metric": "p99", "deployment": "ads",
         "threshold": 500, "min_samples": 1}]})  # a rule for another deployment added
    assert widened.digest != changed.digest
    [third] = _steps(evaluator, clock, widened, 1)
    assert third.streak == 3 and len(_fired(clocked)) == 1


def test_an_ok_window_resolves_the_alert_and_a_new_streak_must_build_again(
        clocked: MetadataStore, clock: ManualClock) -> None:
    script: list[Measurement | Exception] = [BAD, BAD, FEW, GOOD, BAD, BAD]
    evaluator = Evaluator(clocked, Scripted(drift=script), clock)
    config = _config(**{"for": 2})
    _, second, few = _steps(evaluator, clock, config, 3)
    alert_id = second.alert_id
    assert alert_id is not None and few.alert_id is None
    assert evaluator.records.alert(alert_id).state is AlertState.FIRING  # insufficient: firing

    good = _steps(evaluator, clock, config, 1)[0]
    resolved = evaluator.records.alert(alert_id)
    assert (good.status, resolved.state, resolved.resolved_at) == (
        EvaluationStatus.OK, AlertState.RESOLVED, good.evaluated_at)
    [audit] = clocked.audit.entries(AuditFilter(action="monitoring.alert_resolved"))
    assert audit.subject == f"alert:{alert_id}" and audit.after is not None
    assert audit.after["evaluation_id"] == good.id
    assert len(_fired(clocked)) == 1  # resolving emits no alert_fired

    again, then = _steps(evaluator, clock, config, 2)
    assert again.alert_id is None and then.alert_id not in (None, alert_id)
    assert len(_fired(clocked)) == 2


def test_running_again_in_the_same_minute_measures_nothing_and_writes_nothing(
        clocked: MetadataStore, clock: ManualClock) -> None:
    measurer = Scripted(drift=[BAD, GOOD])
    evaluator = Evaluator(clocked, measurer, clock)
    first = evaluator.run(_config())
    events, audit = clocked.events.read_after(0, 1000), clocked.audit.entries()
    clock.advance(timedelta(seconds=54))  # 12:01:14, less the settle time: the same minute
    again = evaluator.run(_config())
    assert again == first and len(measurer.tasks) == 2  # one per rule, first run only
    assert clocked.events.read_after(0, 1000) == events and clocked.audit.entries() == audit
    assert len(evaluator.records.evaluations()) == 2
    clock.advance(timedelta(seconds=1))  # 12:01:15: a new window
    assert evaluator.run(_config())[0].window_end == first[0].window_end + MINUTE


def test_a_window_is_read_only_once_its_data_has_settled(clocked: MetadataStore) -> None:
    minute = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(minute + timedelta(seconds=5))  # stats of 11:59:50.. not flushed yet
    measurer = Scripted(drift=[BAD])
    early = Evaluator(clocked, measurer, clock).run(_config(), deployments=["fraud"])[0]
    assert early.window_end == minute - MINUTE and measurer.tasks[0].end == minute - MINUTE
    clock.advance(timedelta(seconds=10))  # 12:00:15: one bucket and one flush later
    settled = Evaluator(clocked, measurer, clock).run(_config(), deployments=["fraud"])[0]
    assert settled.window_end == minute and measurer.tasks[1].end == minute


def test_an_evaluator_that_loses_the_race_returns_the_stored_evaluation(
        clocked: MetadataStore, clock: ManualClock) -> None:
    rival = Evaluator(clocked, Scripted(drift=[BAD]), clock)

    class Racing:
        """While this evaluator measures, the rival evaluates the same window and stores it."""

        def measure(self, task: MeasureTask) -> Measurement:
            rival.run(_config(), deployments=["fraud"])
            return GOOD

    mine = Evaluator(clocked, Racing(), clock).run(_config(), deployments=["fraud"])[0]
    [stored] = rival.records.evaluations(rule="drift")
    assert mine == stored and mine.value == BAD.value


def test_one_rules_bad_data_is_recorded_and_the_other_rules_still_run(
        clocked: MetadataStore, clock: ManualClock) -> None:
    refusal = InvalidArgumentError("inputs", "request 'r1': is not JSON text")
    evaluator = Evaluator(clocked, Scripted(drift=[refusal], errors=[GOOD]), clock)
    drift, errors = evaluator.run(_config())
    assert (drift.status, drift.value, drift.samples) == (EvaluationStatus.INSUFFICIENT, None,
                                                          0)
    assert drift.numbers == {"error": refusal.message}
    assert errors.status is EvaluationStatus.OK


def test_any_error_of_the_measurer_is_recorded_with_its_text_and_logged(
        clocked: MetadataStore, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    mixed = ValueError("Classification metrics can't handle a mix of continuous and binary "
                       "targets")
    evaluator = Evaluator(clocked, Scripted(drift=[mixed], errors=[GOOD]), clock)
    with caplog.at_level("WARNING", logger="loopline.monitoring.evaluator"):
        drift, errors = evaluator.run(_config())
    assert (drift.status, drift.value, drift.samples) == (EvaluationStatus.INSUFFICIENT, None,
                                                          0)
    assert drift.numbers == {"error": f"ValueError: {mixed}"}
    assert errors.status is EvaluationStatus.OK
    [record] = [r for r in caplog.records if r.name == "loopline.monitoring.evaluator"]
    assert "'drift'" in record.getMessage() and record.exc_info is not None
    assert record.exc_info[1] is mixed


def test_a_database_failure_stops_the_run(clocked: MetadataStore, clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[BackendError("down")]), clock)
    with pytest.raises(BackendError, match="down"):
        evaluator.run(_config())
    assert evaluator.records.evaluations() == []


def test_a_nan_value_is_insufficient_and_said_so(clocked: MetadataStore,
                                                 clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[Measurement(float("nan"), 500)]), clock)
    evaluation = evaluator.run(_config())[0]
    assert (evaluation.status, evaluation.value) == (EvaluationStatus.INSUFFICIENT, None)
    assert evaluation.numbers["reason"] == "the value is NaN"


def test_an_alert_is_written_with_its_evaluation_or_not_at_all(
        clocked: MetadataStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[BAD]), clock)
    config = _config(**{"for": 1})

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise BackendError("the disk is full")

    monkeypatch.setattr(evaluator_module.records, "insert_alert", broken)
    with pytest.raises(BackendError):
        evaluator.run(config, deployments=["fraud"])
    assert evaluator.records.evaluations() == [] and _fired(clocked) == []
    monkeypatch.undo()
    evaluation = evaluator.run(config, deployments=["fraud"])[0]
    assert evaluation.alert_id is not None and len(_fired(clocked)) == 1


def test_only_the_named_deployments_are_evaluated(clocked: MetadataStore,
                                                  clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(), clock)
    assert [e.rule for e in evaluator.run(_config(), deployments=["ads"])] == ["errors"]
    assert evaluator.run(_config(), deployments=["nothing"]) == []


def test_an_evaluation_stores_what_it_was_judged_by_and_reruns_to_the_same_answer(
        clocked: MetadataStore, clock: ManualClock) -> None:
    measurer = Scripted(drift=[BAD])
    evaluator = Evaluator(clocked, measurer, clock)
    config = _config(version="models:/fraud/2")
    evaluation = evaluator.run(config)[0]
    assert evaluation.config_digest == config.digest
    assert evaluation.rule_record["rule"]["threshold"] == 0.3
    assert evaluation.rule_record["drift"]["method"] == "psi"
    assert evaluation.numbers == {"share": 0.5}

    rerun = Evaluator(clocked, measurer, ManualClock(T0 + timedelta(days=3))).rerun(
        evaluation.id)
    assert rerun.same and (rerun.value, rerun.status) == (0.5, EvaluationStatus.BREACHED)
    original, again = measurer.tasks[0], measurer.tasks[-1]
    assert (again.rule, again.start, again.end, again.as_of, again.drift) == (
        original.rule, original.start, original.end, original.as_of, original.drift)
    changed = Evaluator(clocked, Scripted(drift=[GOOD]), clock).rerun(evaluation.id)
    assert not changed.same and changed.status is EvaluationStatus.OK


def test_a_locked_down_workspace_needs_write_to_evaluate(clocked: MetadataStore,
                                                         clock: ManualClock) -> None:
    class Viewer:
        def authorize(self, actor: str, permission: Permission, model: str | None = None,
                      ) -> Role:
            if permission is not Permission.READ:
                raise AccessDeniedError(actor, permission.value, model, (Role.VIEWER.value,))
            return Role.VIEWER

    evaluator = Evaluator(clocked, Scripted(), clock, actor="val", authorizer=Viewer())
    with pytest.raises(AccessDeniedError, match="'val' may not write"):
        evaluator.run(_config())
    assert evaluator.records.evaluations() == []


def test_an_infinite_value_fires_with_a_strict_json_event_and_is_kept_in_the_row(
        clocked: MetadataStore, clock: ManualClock) -> None:
    evaluator = Evaluator(clocked, Scripted(drift=[Measurement(float("inf"), 100)]), clock)
    evaluation = evaluator.run(_config(**{"for": 1}), deployments=["fraud"])[0]
    assert evaluation.value == float("inf") and evaluation.alert_id is not None
    [event] = _fired(clocked)
    assert event.payload["value"] is None
    [audit] = clocked.audit.entries(AuditFilter(action="monitoring.alert_fired"))
    assert audit.after is not None and audit.after["value"] == "inf"
    assert evaluator.records.evaluation(evaluation.id).value == float("inf")


def test_the_periodic_duty_evaluates_the_config_in_force_or_nothing(
        clocked: MetadataStore, clock: ManualClock) -> None:
    configs = MonitorConfigs(clocked)
    evaluator = Evaluator(clocked, Scripted(drift=[BAD]), clock)
    assert evaluate_in_force(evaluator, configs) == []
    configs.apply("ann", {"rules": [{"name": "lat", "signal": "latency", "metric": "p95",
                                     "deployment": "ads", "threshold": 200}]})
    assert [e.rule for e in evaluate_in_force(evaluator, configs)] == ["lat"]
    clock.advance(MINUTE)
    assert evaluate_in_force(evaluator, configs, deployments=["fraud"]) == []
