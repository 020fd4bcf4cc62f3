"""Monitoring records on every backend: applied configs (newest in force, even on a clock
that stands still), evaluations (one per rule, scope and window; the previous one by window
end; infinite values and NaN numbers kept), alerts (firing, resolved once), and the reads'
filters and limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from loopline.core.clock import ManualClock
from loopline.core.errors import ConflictError, InvalidArgumentError, NotFoundError
from loopline.core.ids import new_id
from loopline.core.monitoring import (
    Alert,
    AlertState,
    Evaluation,
    EvaluationStatus,
    Severity,
    SignalKind,
)
from loopline.store import MetadataStore
from loopline.store import monitor_records as records

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _evaluation(minute: int, rule: str = "drift", value: float | None = 0.5,
                status: EvaluationStatus = EvaluationStatus.BREACHED,
                deployment: str = "fraud") -> Evaluation:
    end = T0 + timedelta(minutes=minute)
    return Evaluation(
        id=new_id(), rule=rule, scope_key=f"{deployment}|*|*|*", deployment=deployment,
        signal=SignalKind.DATASET_DRIFT, window_start=end - timedelta(minutes=15),
        window_end=end, value=value, samples=200, status=status, streak=1,
        rule_record={"rule": {"name": rule}}, numbers={"share": value, "odd": float("nan")},
        config_digest="c" * 64, evaluated_at=end + timedelta(seconds=5))


def _alert(evaluation: Evaluation) -> Alert:
    return Alert(id=new_id(), rule=evaluation.rule, scope_key=evaluation.scope_key,
                 deployment=evaluation.deployment, severity=Severity.CRITICAL,
                 state=AlertState.FIRING, playbook="recover", opened_at=evaluation.evaluated_at,
                 evaluation_id=evaluation.id, numbers={"value": evaluation.value})


def test_the_newest_config_is_in_force_even_when_the_clock_stands_still(db_url: str) -> None:
    store = MetadataStore.open(db_url, clock=ManualClock(T0), check_schema=False)
    store.upgrade()
    try:
        reads = records.MonitorRecords(store.engine)
        assert reads.newest_config() is None and reads.newest_config_id() is None
        with store.write("ann") as uow:
            first = records.insert_config(uow, "a" * 64, {"rules": []}, "one.yaml", None)
        with store.write("bob") as uow:
            second = records.insert_config(uow, "b" * 64, {"rules": [], "slices": {}}, None,
                                           records.newest_config(uow.session.connection()))
        assert second.applied_at > first.applied_at
        newest = reads.newest_config()
        assert newest is not None and newest.id == second.id == reads.newest_config_id()
        assert (newest.digest, dict(newest.document), newest.applied_by) == (
            "b" * 64, {"rules": [], "slices": {}}, "bob")
        assert [record.id for record in reads.configs()] == [second.id, first.id]
        assert reads.configs(limit=1)[0].source is None
    finally:
        store.close()


def test_an_evaluation_reads_back_as_written_with_its_numbers_made_json_safe(
        store: MetadataStore) -> None:
    written = replace(_evaluation(0), value=float("inf"),
                      numbers={"share": float("-inf"), "odd": float("nan"), "n": [1.5]})
    with store.write("monitor") as uow:
        records.insert_evaluation(uow, written)
    back = records.MonitorRecords(store.engine).evaluation(written.id)
    assert back.value == float("inf")
    assert back.numbers == {"share": "-inf", "odd": "nan", "n": [1.5]}
    assert (back.rule, back.scope_key, back.window_start, back.window_end, back.status,
            back.samples, back.streak, back.config_digest, back.alert_id) == (
        written.rule, written.scope_key, written.window_start, written.window_end,
        written.status, 200, 1, "c" * 64, None)
    assert dict(back.rule_record) == {"rule": {"name": "drift"}}
    with store.read() as session:
        assert records.evaluation_at(session.connection(), "drift", written.scope_key,
                                     written.window_end) == back


def test_a_second_evaluation_of_the_same_window_is_refused(store: MetadataStore) -> None:
    first = _evaluation(0)
    with store.write("monitor") as uow:
        records.insert_evaluation(uow, first)
    with pytest.raises(ConflictError), store.write("monitor") as uow:
        records.insert_evaluation(uow, replace(first, id=new_id(), value=0.1))
    reads = records.MonitorRecords(store.engine)
    assert [e.id for e in reads.evaluations()] == [first.id]


def test_the_previous_evaluation_is_the_one_whose_window_ended_last_before(
        store: MetadataStore) -> None:
    made = [_evaluation(minute) for minute in (0, 2, 1)] + [_evaluation(1, rule="other")]
    with store.write("monitor") as uow:
        for evaluation in made:
            records.insert_evaluation(uow, evaluation)
    with store.read() as session:
        connection = session.connection()
        key = made[0].scope_key
        assert records.previous_evaluation(connection, "drift", key, T0) is None
        found = records.previous_evaluation(connection, "drift", key,
                                            T0 + timedelta(minutes=2))
        assert found is not None and found.id == made[2].id
        later = records.previous_evaluation(connection, "drift", key, T0 + timedelta(hours=1))
        assert later is not None and later.id == made[1].id
        assert records.previous_evaluation(connection, "drift", "x|*|*|*", T0 + timedelta(
            hours=1)) is None


def test_evaluations_list_newest_window_first_by_rule_and_deployment(
        store: MetadataStore) -> None:
    made = [_evaluation(0), _evaluation(1), _evaluation(1, rule="lat", deployment="ads")]
    with store.write("monitor") as uow:
        for evaluation in made:
            records.insert_evaluation(uow, evaluation)
    reads = records.MonitorRecords(store.engine)
    assert [e.id for e in reads.evaluations(rule="drift")] == [made[1].id, made[0].id]
    assert [e.id for e in reads.evaluations(deployment="ads")] == [made[2].id]
    assert len(reads.evaluations(limit=2)) == 2
    for bad in (0, 1001, True):
        with pytest.raises(InvalidArgumentError, match="limit"):
            reads.evaluations(limit=bad)
    with pytest.raises(NotFoundError, match="loopline monitor evaluations"):
        reads.evaluation("nope")


def test_an_alert_fires_until_resolved_once(store: MetadataStore) -> None:
    evaluation = _evaluation(0)
    alert = _alert(evaluation)
    with store.write("monitor") as uow:
        records.insert_evaluation(uow, replace(evaluation, alert_id=alert.id))
        records.insert_alert(uow, alert)
    reads = records.MonitorRecords(store.engine)
    with store.read() as session:
        assert records.firing_alert(session.connection(), "drift",
                                    evaluation.scope_key) == alert
        assert records.firing_alert(session.connection(), "other",
                                    evaluation.scope_key) is None
    at = T0 + timedelta(minutes=9)
    with store.write("monitor") as uow:
        resolved = records.resolve_alert(uow, alert, at)
    assert (resolved.state, resolved.resolved_at) == (AlertState.RESOLVED, at)
    assert reads.alert(alert.id) == resolved
    with pytest.raises(NotFoundError, match="firing alert"), store.write("monitor") as uow:
        records.resolve_alert(uow, alert, at)
    with store.read() as session:
        assert records.firing_alert(session.connection(), "drift",
                                    evaluation.scope_key) is None
    assert [a.id for a in reads.alerts(state=AlertState.RESOLVED)] == [alert.id]
    assert reads.alerts(state=AlertState.FIRING) == []
    assert reads.alerts(deployment="ads") == []
    with pytest.raises(NotFoundError, match="loopline monitor alerts"):
        reads.alert("nope")
