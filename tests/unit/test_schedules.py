"""Schedules and triggers: slots by catch-up policy, DST, validation, event matching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline import pipeline, task
from loopline.core.errors import InvalidArgumentError
from loopline.core.events import Event, EventType
from loopline.pipelines.definitions import PipelineDefinition
from loopline.pipelines.schedules import Schedule, Trigger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOURLY = "0 * * * *"


def _event(type_: str = "monitoring.alert_fired", **payload: Any) -> Event:
    return Event(seq=7, id="e" * 32, type=type_, subject="rule:drift", payload=payload,
                 actor="monitor", occurred_at=T0)


# -- slots by policy ---------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "expected"), [
    ("all", [T0 + timedelta(hours=h) for h in (1, 2, 3)]),
    ("latest", [T0 + timedelta(hours=3)]),
    ("none", []),
])
def test_three_missed_hourly_slots_fire_by_the_catchup_policy(policy: Any,
                                                              expected: list[datetime]) -> None:
    schedule = Schedule(HOURLY, catchup=policy)
    now = T0 + timedelta(hours=3, minutes=20)
    assert schedule.due_slots(T0, now, first_seen=T0) == expected


def test_none_fires_a_slot_only_within_its_grace() -> None:
    schedule = Schedule(HOURLY, catchup="none", grace=60)
    slot = T0 + timedelta(hours=3)
    assert schedule.due_slots(T0, slot + timedelta(seconds=59), T0) == [slot]
    assert schedule.due_slots(T0, slot + timedelta(seconds=61), T0) == []


def test_all_keeps_only_the_newest_max_catchup_slots() -> None:
    schedule = Schedule(HOURLY, catchup="all", max_catchup=2)
    slots = schedule.due_slots(T0, T0 + timedelta(hours=5), T0)
    assert slots == [T0 + timedelta(hours=4), T0 + timedelta(hours=5)]


def test_a_schedule_that_never_fired_counts_from_first_seen_inclusive() -> None:
    schedule = Schedule(HOURLY, catchup="all")
    first_seen = T0 + timedelta(hours=2)
    assert schedule.due_slots(None, T0 + timedelta(hours=3, minutes=5), first_seen) == [
        T0 + timedelta(hours=2), T0 + timedelta(hours=3)]
    assert schedule.due_slots(None, first_seen + timedelta(minutes=59), first_seen) == [
        first_seen]
    assert Schedule(HOURLY).due_slots(None, T0 + timedelta(minutes=30),
                                      T0 + timedelta(minutes=1)) == []


def test_nothing_is_due_again_once_the_latest_slot_fired() -> None:
    schedule = Schedule(HOURLY, catchup="all")
    last = T0 + timedelta(hours=3)
    assert schedule.due_slots(last, last + timedelta(minutes=59), T0) == []
    assert schedule.due_slots(last, last, T0) == []


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Schedule(HOURLY).due_slots(None, datetime(2026, 1, 1), T0)  # noqa: DTZ001
    assert caught.value.field == "now"


# -- time zones and daylight saving --------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


def test_nine_oclock_in_paris_stays_nine_oclock_across_the_spring_change() -> None:
    schedule = Schedule("0 9 * * *", timezone="Europe/Paris", catchup="all")
    slots = schedule.due_slots(datetime(2026, 3, 27, 12, tzinfo=UTC),
                               datetime(2026, 3, 30, 12, tzinfo=UTC), T0)
    assert slots == [datetime(2026, 3, 28, 8, tzinfo=UTC), datetime(2026, 3, 29, 7, tzinfo=UTC),
                     datetime(2026, 3, 30, 7, tzinfo=UTC)]
    assert [s.astimezone(PARIS).hour for s in slots] == [9, 9, 9]


def test_nine_oclock_in_paris_stays_nine_oclock_across_the_autumn_change() -> None:
    schedule = Schedule("0 9 * * *", timezone="Europe/Paris", catchup="all")
    slots = schedule.due_slots(datetime(2026, 10, 24, 12, tzinfo=UTC),
                               datetime(2026, 10, 26, 12, tzinfo=UTC), T0)
    assert slots == [datetime(2026, 10, 25, 8, tzinfo=UTC), datetime(2026, 10, 26, 8, tzinfo=UTC)]


def test_a_time_skipped_by_dst_fires_after_the_jump_and_a_repeated_time_fires_once() -> None:
    schedule = Schedule("30 2 * * *", timezone="Europe/Paris", catchup="all")
    spring = schedule.due_slots(datetime(2026, 3, 28, 12, tzinfo=UTC),
                                datetime(2026, 3, 29, 12, tzinfo=UTC), T0)
    assert spring == [datetime(2026, 3, 29, 1, tzinfo=UTC)]  # 03:00 CEST, just after the jump
    autumn = schedule.due_slots(datetime(2026, 10, 24, 12, tzinfo=UTC),
                                datetime(2026, 10, 25, 12, tzinfo=UTC), T0)
    assert autumn == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]  # 02:30 CEST, not also CET


def test_a_wildcard_hour_keeps_every_real_half_hour_through_the_repeated_hour() -> None:
    schedule = Schedule("*/30 * * * *", timezone="Europe/Paris", catchup="all")
    slots = schedule.due_slots(datetime(2026, 10, 24, 23, 59, tzinfo=UTC),
                               datetime(2026, 10, 25, 2, 0, tzinfo=UTC), T0)
    assert slots == [datetime(2026, 10, 25, 0, 0, tzinfo=UTC) + timedelta(minutes=30 * i)
                     for i in range(5)]


def test_next_slot_is_strictly_after_the_time_given() -> None:
    schedule = Schedule("@daily", timezone="Europe/Paris")
    assert schedule.next_slot(datetime(2026, 6, 1, 22, tzinfo=UTC)) == datetime(
        2026, 6, 2, 22, tzinfo=UTC)


CRONS = ["* * * * *", "*/7 * * * *", "0 * * * *", "15 3 * * *", "0 9 * * 1-5", "30 2 * * *"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
times = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31),  # noqa: DTZ001
                     timezones=st.just(UTC))


@settings(max_examples=100, deadline=None)
@given(cron=st.sampled_from(CRONS), zone=st.sampled_from(ZONES), start=times,
       span=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)),
       policy=st.sampled_from(["all", "latest", "none"]), limit=st.integers(1, 50))
def test_due_slots_are_sorted_unique_in_the_window_and_on_the_schedule(
        cron: str, zone: str, start: datetime, span: timedelta, policy: Any,
        limit: int) -> None:
    schedule = Schedule(cron, timezone=zone, catchup=policy, max_catchup=limit)
    now = start + span
    slots = schedule.due_slots(start, now, first_seen=start)
    assert slots == sorted(set(slots))
    assert all(start < slot <= now and slot.tzinfo is UTC for slot in slots)
    assert len(slots) <= (limit if policy == "all" else 1)
    if policy == "none":
        assert all(now - slot <= timedelta(seconds=schedule.grace) for slot in slots)
    everything = Schedule(cron, timezone=zone, catchup="all", max_catchup=10_000)
    all_slots = everything.due_slots(start, now, first_seen=start)
    assert slots == (all_slots[-limit:] if policy == "all" else all_slots[-1:]
                     if policy == "latest" else slots)


@settings(max_examples=40, deadline=None)
@given(cron=st.sampled_from(CRONS), start=times,
       span=st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=6)))
def test_all_in_utc_returns_exactly_the_matching_minutes(cron: str, start: datetime,
                                                         span: timedelta) -> None:
    now = start + span
    minute = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    expected = []
    while minute <= now:
        if croniter.match(cron, minute):
            expected.append(minute)
        minute += timedelta(minutes=1)
    assert Schedule(cron, catchup="all", max_catchup=10_000).due_slots(start, now, start) == \
        expected


# -- validation names the field ------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"cron": "61 * * * *"}, "schedule.cron"),
    ({"cron": "* * *"}, "schedule.cron"),
    ({"cron": "0 0 9 * * * 2026"}, "schedule.cron"),
    ({"cron": "@reboot"}, "schedule.cron"),
    ({"cron": HOURLY, "timezone": "Mars/Olympus"}, "schedule.timezone"),
    ({"cron": HOURLY, "timezone": "../etc/passwd"}, "schedule.timezone"),
    ({"cron": HOURLY, "catchup": "some"}, "schedule.catchup"),
    ({"cron": HOURLY, "parameters": {"when": T0}}, "schedule.parameters"),
    ({"cron": HOURLY, "name": "no/slash"}, "schedule.name"),
    ({"cron": HOURLY, "max_catchup": 0}, "schedule.max_catchup"),
    ({"cron": HOURLY, "grace": 0}, "schedule.grace"),
])
def test_a_bad_schedule_is_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Schedule(**kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"on": "Alert Fired"}, "trigger.on"),
    ({"on": "nodots"}, "trigger.on"),
    ({"on": "custom.x", "where": {"a..b": 1}}, "trigger.where.a..b"),
    ({"on": "custom.x", "where": {"a": {1, 2}}}, "trigger.where"),
    ({"on": "custom.x", "parameters": {"n": "bad path"}}, "trigger.parameters.n"),
    ({"on": "custom.x", "name": "two words"}, "trigger.name"),
])
def test_a_bad_trigger_is_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Trigger(**kwargs)
    assert caught.value.field == field


# -- triggers ------------------------------------------------------------------------------------

def test_a_trigger_accepts_loopline_types_future_types_and_the_alert_alias() -> None:
    typed = Trigger(on=EventType.ALERT_FIRED)
    assert typed.known_type and type(typed.name) is str and typed.name == "monitoring.alert_fired"
    assert Trigger(on="alert.fired").on == "monitoring.alert_fired"
    future = Trigger(on="privacy.subject_erased")
    assert not future.known_type and future.name == "privacy.subject_erased"


def test_a_trigger_matches_its_type_and_every_filter_with_lists_meaning_one_of() -> None:
    trigger = Trigger(on="alert.fired", where={"severity": ["high", "critical"],
                                               "model.name": "churn",
                                               "event.subject": "rule:drift"})
    assert trigger.matches(_event(severity="high", model={"name": "churn"}))
    assert trigger.matches(_event(severity="critical", model={"name": "churn", "v": 3}))
    assert not trigger.matches(_event(severity="low", model={"name": "churn"}))
    assert not trigger.matches(_event(severity="high", model={"name": "fraud"}))
    assert not trigger.matches(_event(severity="high"))
    assert not trigger.matches(_event("custom.other", severity="high", model={"name": "churn"}))


def test_a_filter_does_not_take_true_for_one() -> None:
    trigger = Trigger(on="custom.flag", where={"on": 1})
    assert trigger.matches(_event("custom.flag", on=1))
    assert not trigger.matches(_event("custom.flag", on=True))


def test_parameters_come_from_the_payload_and_the_event_fields() -> None:
    trigger = Trigger(on="alert.fired", parameters={
        "model": "model.name", "first": "rows.0", "alert": "event.id", "seq": "event.seq",
        "rule": "event.subject", "severity": "event.payload.severity"})
    event = _event(model={"name": "churn"}, rows=[5, 6], severity="high")
    assert trigger.parameters_for(event) == {
        "model": "churn", "first": 5, "alert": "e" * 32, "seq": 7, "rule": "rule:drift",
        "severity": "high"}


def test_a_missing_parameter_path_names_the_parameter_and_the_path() -> None:
    trigger = Trigger(on="alert.fired", parameters={"model": "model.name"})
    with pytest.raises(InvalidArgumentError) as caught:
        trigger.parameters_for(_event(model={"id": 3}))
    assert caught.value.field == "trigger.parameters.model"
    assert "'model.name'" in caught.value.message


# -- on @pipeline ----------------------------------------------------------------------------------

@task
def echo(value: int) -> int:
    return value


def test_pipeline_keeps_its_schedules_and_triggers_and_a_string_is_a_cron() -> None:
    @pipeline(schedule="0 9 * * *", schedules=[Schedule("@hourly", name="hourly")],
              triggers=[Trigger(on="alert.fired", parameters={"n": "count"})])
    def flow(n: int = 1) -> Any:
        return echo(n)

    assert isinstance(flow, PipelineDefinition)
    assert [s.cron for s in flow.schedules] == ["0 9 * * *", "@hourly"]
    assert flow.triggers[0].name == "monitoring.alert_fired"
    assert PipelineDefinition(flow.fn, "plain").schedules == ()


def _decorate(**options: Any) -> None:
    def flow(n: int, label: str = "x") -> Any:
        return echo(n)

    pipeline(**options)(flow)


@pytest.mark.parametrize(("options", "field"), [
    ({"schedule": Schedule(HOURLY, parameters={"m": 1})}, "schedule.parameters.m"),
    ({"schedule": Schedule(HOURLY)}, "schedule.parameters.n"),
    ({"triggers": [Trigger(on="custom.x", parameters={"n": "a", "colour": "b"})]},
     "trigger.parameters.colour"),
    ({"triggers": [Trigger(on="custom.x", parameters={"label": "a"})]}, "trigger.parameters.n"),
    ({"schedules": [Schedule(HOURLY, parameters={"n": 1}),
                    Schedule("@daily", parameters={"n": 2})]}, "schedule.name"),
    ({"triggers": [Trigger(on="custom.x", parameters={"n": "a"}),
                   Trigger(on="custom.x", parameters={"n": "b"})]}, "trigger.name"),
    ({"schedule": "not cron"}, "schedule.cron"),
    ({"triggers": ["custom.x"]}, "triggers"),
])
def test_pipeline_refuses_schedules_and_triggers_that_do_not_fit_it(options: dict[str, Any],
                                                                    field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        _decorate(**options)
    assert caught.value.field == field


def test_a_schedule_name_too_long_with_its_pipeline_name_is_refused_when_decorating() -> None:
    import pytest

    from loopline import pipeline
    from loopline.core.errors import InvalidArgumentError
    from loopline.pipelines import Schedule

    with pytest.raises(InvalidArgumentError, match="schedule.name"):
        @pipeline(name="p" * 128, schedules=[Schedule("@daily", name="s" * 128)])
        def too_long() -> None:
            return None
