"""The scheduler on every backend: triggers fire once per event across restarts, schedules
catch up by their policy and never fire a slot twice, bad events do not stop it."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loopline import pipeline, task
from loopline.artifacts import ContentAddressedStore
from loopline.core.clock import ManualClock
from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.core.events import EventType
from loopline.core.runs import PipelineRun, RunState, RunTrigger
from loopline.loop.scheduler import Duty, Scheduler
from loopline.pipelines import PipelineDefinition, Runner, RunnerOptions
from loopline.pipelines.schedules import Schedule, Trigger
from loopline.store import MetadataStore
from loopline.store.runs import RunQueries

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOURLY = "0 * * * *"


class Crash(Exception):
    """The scheduler's process dies here."""


@task
def describe(model: str, severity: str) -> str:
    return f"{model}:{severity}"


@task
def count_to(n: int) -> int:
    if n < 0:
        raise RuntimeError("told to fail")
    return n


@pipeline(triggers=[Trigger(on="alert.fired", where={"severity": ["high", "critical"]},
                            parameters={"model": "model", "severity": "severity"})])
def retrain(model: str, severity: str = "low") -> Any:
    return describe(model, severity)


@pipeline(schedules=[Schedule(HOURLY, catchup=policy, name=policy, parameters={"n": 1})
                     for policy in ("all", "latest", "none")])
def hourly(n: int) -> Any:
    return count_to(n)


@pipeline(triggers=[Trigger(on="custom.count", parameters={"n": "count.value"}, name="count")])
def counted(n: int) -> Any:
    return count_to(n)


@pipeline(triggers=[Trigger(on="custom.count", parameters={"n": "value"}, name=name)
                    for name in ("first", "second")])
def twice(n: int) -> Any:
    return count_to(n)


class FlakyRunner(Runner):
    """A runner whose store fails while recording the run of one trigger, once."""

    fail_for = "twice/second"

    def create(self, pipeline: PipelineDefinition, parameters: Any = None,
               trigger: RunTrigger | None = None) -> PipelineRun:
        if trigger is not None and trigger.name == self.fail_for:
            self.fail_for = ""
            raise BackendError("metadata database error: connection lost")
        return super().create(pipeline, parameters, trigger)


Stores = Callable[[], MetadataStore]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 - timedelta(minutes=10))


@pytest.fixture
def stores(db_url: str, clock: ManualClock) -> Iterator[Stores]:
    """Open another connection to the same database: one per scheduler "process"."""
    opened: list[MetadataStore] = []

    def open_store() -> MetadataStore:
        opened.append(MetadataStore.open(db_url, clock=clock, check_schema=False))
        return opened[-1]

    open_store().upgrade()
    yield open_store
    for store in opened:
        store.close()


Schedulers = Callable[[MetadataStore, list[PipelineDefinition]], Scheduler]


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Schedulers]:
    made: list[tuple[Scheduler, Runner]] = []
    blobs = ContentAddressedStore.from_url(tmp_path / "artifacts")

    def make(store: MetadataStore, pipelines: list[PipelineDefinition]) -> Scheduler:
        runner = Runner(store, blobs, RunnerOptions(max_workers=2, actor="scheduler",
                                                    record_provenance=False))
        made.append((Scheduler(store, runner, pipelines), runner))
        return made[-1][0]

    yield make
    for scheduler, runner in made:
        scheduler.close()
        runner.close()


def _emit(store: MetadataStore, type_: str, **payload: Any) -> str:
    with store.write("monitor") as uow:
        return uow.emit(type_, "rule:drift", payload).id


def _order(run: PipelineRun) -> tuple[datetime, int, datetime]:
    trigger = run.trigger
    return (run.created_at, int(trigger.details.get("event_seq", 0)) if trigger else 0,
            trigger.scheduled_for or run.created_at if trigger else run.created_at)


def _runs(store: MetadataStore, name: str) -> list[PipelineRun]:
    """List the runs of pipeline ``name``, in the order of their events or slots."""
    return sorted(RunQueries(store.engine).runs(name, limit=1000), key=_order)


def _finish(*running: Scheduler) -> None:
    for scheduler in running:
        assert scheduler.wait(timeout=60)


# -- (a) once per event, across a restart -----------------------------------------------------

def test_a_trigger_fires_exactly_once_per_event_across_a_scheduler_restart(
        stores: Stores, schedulers: Schedulers, monkeypatch: pytest.MonkeyPatch) -> None:
    store_a = stores()
    scheduler_a = schedulers(store_a, [retrain])
    assert scheduler_a.start() == []
    first = _emit(store_a, EventType.ALERT_FIRED, model="churn", severity="high")
    _emit(store_a, EventType.ALERT_FIRED, model="noise", severity="low")  # filtered out
    second = _emit(store_a, EventType.ALERT_FIRED, model="fraud", severity="critical")
    _emit(store_a, "custom.other", model="other", severity="high")  # another type

    def crash(*_: Any) -> bool:
        raise Crash

    # Scheduler A records both runs, then dies before moving its cursor or running them.
    monkeypatch.setattr(store_a.events, "advance", crash)
    with pytest.raises(Crash):
        scheduler_a.poll_events()
    assert [r.state for r in _runs(store_a, "retrain")] == [RunState.PENDING] * 2
    assert store_a.events.cursor("scheduler") < store_a.events.last_seq()

    store_b = stores()
    scheduler_b = schedulers(store_b, [retrain])
    recovered = scheduler_b.start()  # executes what A recorded but never ran
    assert scheduler_b.poll_events() == []  # the same events again: keys already used
    _finish(scheduler_b)
    assert len(recovered) == 2
    assert scheduler_b.poll_events() == []
    runs = _runs(store_b, "retrain")
    assert [(dict(r.parameters), r.state) for r in runs] == [
        ({"model": "churn", "severity": "high"}, RunState.SUCCEEDED),
        ({"model": "fraud", "severity": "critical"}, RunState.SUCCEEDED)]
    assert [r.trigger.key for r in runs if r.trigger] == [
        f"event:retrain/monitoring.alert_fired:{first}",
        f"event:retrain/monitoring.alert_fired:{second}"]
    assert store_b.events.cursor("scheduler") == store_b.events.last_seq()


def test_a_scheduler_restarted_normally_starts_nothing_twice(stores: Stores,
                                                              schedulers: Schedulers) -> None:
    store = stores()
    scheduler = schedulers(store, [retrain])
    scheduler.start()
    _emit(store, EventType.ALERT_FIRED, model="churn", severity="high")
    assert len(scheduler.poll_events()) == 1
    _finish(scheduler)
    again = schedulers(stores(), [retrain])
    assert again.start() == [] and again.poll_events() == []
    assert len(_runs(store, "retrain")) == 1


def test_events_from_before_the_first_start_do_not_fire(stores: Stores,
                                                         schedulers: Schedulers) -> None:
    store = stores()
    _emit(store, EventType.ALERT_FIRED, model="old", severity="high")
    scheduler = schedulers(store, [retrain])
    assert scheduler.poll_events() == []
    _emit(store, EventType.ALERT_FIRED, model="new", severity="high")
    assert len(scheduler.poll_events()) == 1
    _finish(scheduler)
    assert [r.parameters["model"] for r in _runs(store, "retrain")] == ["new"]


# -- (b) catch-up policies and concurrent schedulers -------------------------------------------

def _fired(store: MetadataStore) -> Counter[str]:
    return Counter(r.trigger.name for r in _runs(store, "hourly") if r.trigger)


def test_three_missed_slots_fire_three_one_or_none_by_policy(
        stores: Stores, schedulers: Schedulers, clock: ManualClock) -> None:
    store = stores()
    first = schedulers(store, [hourly])
    clock.advance(timedelta(minutes=10, seconds=5))  # T0 + 5s: the first slot is due
    assert len(first.tick()) == 3
    _finish(first)
    first.close()

    clock.advance(timedelta(hours=3, minutes=30))  # down through slots 1h, 2h and 3h
    restarted = schedulers(stores(), [hourly])
    restarted.tick()
    _finish(restarted)
    slots = {name: sorted(r.trigger.scheduled_for for r in _runs(store, "hourly")
                          if r.trigger and r.trigger.name == name and r.trigger.scheduled_for)
             for name in ("hourly/all", "hourly/latest", "hourly/none")}
    assert slots == {
        "hourly/all": [T0 + timedelta(hours=h) for h in range(4)],
        "hourly/latest": [T0, T0 + timedelta(hours=3)],
        "hourly/none": [T0]}
    assert all(r.state is RunState.SUCCEEDED for r in _runs(store, "hourly"))
    assert restarted.tick() == []


def _tick_together(pair: list[Scheduler]) -> list[list[str]]:
    barrier = threading.Barrier(len(pair))
    started: list[list[str]] = [[] for _ in pair]

    def tick(i: int) -> None:
        barrier.wait()
        started[i] = pair[i].tick()

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(pair))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started


def test_no_slot_fires_twice_when_two_schedulers_tick_at_once(
        stores: Stores, schedulers: Schedulers, clock: ManualClock) -> None:
    store = stores()
    pair = [schedulers(stores(), [hourly]), schedulers(stores(), [hourly])]
    for scheduler in pair:
        scheduler.start()
    for hour in range(3):
        clock.advance(T0 + timedelta(hours=hour, seconds=5) - clock.now())
        assert sum(len(ids) for ids in _tick_together(pair)) == 3
    _finish(*pair)
    runs = _runs(store, "hourly")
    assert len(runs) == 9
    assert len({r.trigger.key for r in runs if r.trigger}) == 9
    assert _fired(store) == {"hourly/all": 3, "hourly/latest": 3, "hourly/none": 3}


# -- (c) bad events and failing runs do not stop it ---------------------------------------------

def test_a_missing_parameter_path_is_recorded_as_a_failed_run_and_the_scheduler_goes_on(
        stores: Stores, schedulers: Schedulers) -> None:
    store = stores()
    scheduler = schedulers(store, [counted])
    scheduler.start()
    missing = _emit(store, "custom.count", other=1)
    _emit(store, "custom.count", count={"value": "three"})  # the plan refuses a str
    _emit(store, "custom.count", count={"value": -1})  # the task raises
    _emit(store, "custom.count", count={"value": 3})
    recorded = scheduler.poll_events()
    _finish(scheduler)
    runs = _runs(store, "counted")
    assert sorted(recorded) == sorted(r.id for r in runs)
    assert [r.state for r in runs] == [RunState.FAILED, RunState.FAILED, RunState.FAILED,
                                       RunState.SUCCEEDED]
    assert runs[0].trigger is not None and runs[0].trigger.key == f"event:counted/count:{missing}"
    assert "trigger.parameters.n" in (runs[0].error or "")
    assert "'count.value'" in (runs[0].error or "")
    assert "parameters.n" in (runs[1].error or "")
    assert scheduler.poll_events() == []
    assert len(_runs(store, "counted")) == 4
    assert store.events.cursor("scheduler") == store.events.last_seq()


def test_run_forever_ticks_and_polls_until_stopped(stores: Stores,
                                                   schedulers: Schedulers) -> None:
    store = stores()
    scheduler = schedulers(store, [counted])
    stop = threading.Event()
    reported: list[str] = []

    def report(ids: list[str]) -> None:
        reported.extend(ids)
        stop.set()

    scheduler.start()
    _emit(store, "custom.count", count={"value": 2})
    loop = threading.Thread(target=scheduler.run_forever, args=(stop, 0.01, report))
    loop.start()
    loop.join(timeout=30)
    assert not loop.is_alive()
    _finish(scheduler)
    assert [r.id for r in _runs(store, "counted")] == reported


def test_a_store_failure_mid_event_keeps_the_runs_recorded_and_retries_the_rest(
        stores: Stores, tmp_path: Path) -> None:
    store = stores()
    runner = FlakyRunner(store, ContentAddressedStore.from_url(tmp_path / "blobs"),
                         RunnerOptions(actor="scheduler", record_provenance=False))
    with Scheduler(store, runner, [twice]) as scheduler:
        scheduler.start()
        _emit(store, "custom.count", value=2)
        first = scheduler.poll_events()  # "first" is recorded, then the store fails
        assert len(first) == 1
        assert store.events.cursor("scheduler") < store.events.last_seq()
        second = scheduler.poll_events()  # the event again: only "second" is new
        assert len(second) == 1 and second != first
        _finish(scheduler)
    runner.close()
    runs = _runs(store, "twice")
    assert sorted(r.trigger.name for r in runs if r.trigger) == ["twice/first", "twice/second"]
    assert all(r.state is RunState.SUCCEEDED for r in runs)


def test_a_sweep_executes_triggered_runs_left_pending(stores: Stores, schedulers: Schedulers,
                                                     tmp_path: Path) -> None:
    store = stores()
    scheduler = schedulers(store, [counted])
    scheduler.start()
    runner = Runner(store, ContentAddressedStore.from_url(tmp_path / "other"),
                    RunnerOptions(actor="tester", record_provenance=False))
    run = runner.create(counted, {"n": 3}, RunTrigger("event:counted/count:x", "counted/count",
                                                      "event"))
    assert scheduler.sweep() == [run.id]
    assert scheduler.wait(30)
    assert runner.runs.run(run.id).state is RunState.SUCCEEDED
    assert scheduler.sweep() == []


def test_duties_tick_when_their_period_passed_and_a_failing_one_spares_the_others(
        stores: Stores, clock: ManualClock, tmp_path: Path) -> None:
    store = stores()
    ticks: Counter[str] = Counter()

    def broken() -> None:
        ticks["broken"] += 1
        raise BackendError("the database is away")

    duties = [Duty("monitor", lambda: ticks.update(["monitor"]), timedelta(minutes=1)),
              Duty("broken", broken),
              Duty("playbooks", lambda: ticks.update(["playbooks"]))]
    runner = Runner(store, ContentAddressedStore.from_url(tmp_path / "artifacts"),
                    RunnerOptions(max_workers=1, actor="scheduler", record_provenance=False))
    with Scheduler(store, runner, [], duties=duties) as running:
        running.tick()
        clock.advance(timedelta(seconds=30))
        running.tick()
        assert ticks == {"monitor": 1, "broken": 2, "playbooks": 2}
        clock.advance(timedelta(seconds=30))
        running.tick()
        assert ticks == {"monitor": 2, "broken": 3, "playbooks": 3}
    runner.close()
    with pytest.raises(InvalidArgumentError, match="every"):
        Duty("late", lambda: None, timedelta(seconds=-1))
    with pytest.raises(InvalidArgumentError, match="duties"):
        Scheduler(store, runner, [], duties=[Duty("a", lambda: None), Duty("a", lambda: None)])


def test_a_duty_raising_a_non_loopline_error_is_logged_spares_the_others_and_retries(
        stores: Stores, clock: ManualClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    store = stores()
    ticks: Counter[str] = Counter()

    def monitor() -> None:
        ticks["monitor"] += 1
        if ticks["monitor"] == 1:
            raise ValueError("a bug in a rule")

    duties = [Duty("monitor", monitor, timedelta(minutes=1)),
              Duty("playbooks", lambda: ticks.update(["playbooks"]))]
    runner = Runner(store, ContentAddressedStore.from_url(tmp_path / "artifacts"),
                    RunnerOptions(max_workers=1, actor="scheduler", record_provenance=False))
    with Scheduler(store, runner, [], duties=duties) as running, \
            caplog.at_level("WARNING", "loopline.loop.scheduler"):
        running.tick()  # the failure is caught: the loop and the other duty go on
        assert ticks == {"monitor": 1, "playbooks": 1}
        (failed,) = [r for r in caplog.records if r.exc_info is not None]
        assert "monitor failed" in failed.getMessage() and failed.exc_info is not None
        assert failed.exc_info[0] is ValueError  # logged with its traceback
        clock.advance(timedelta(seconds=10))
        running.tick()  # a failed duty is tried again on the next tick, not a period later
        assert ticks == {"monitor": 2, "playbooks": 2}
        clock.advance(timedelta(seconds=10))
        running.tick()  # it succeeded: now it waits for its period
        assert ticks == {"monitor": 2, "playbooks": 3}
    runner.close()


def test_run_forever_goes_on_when_a_duty_keeps_raising(stores: Stores, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = stores()
    stop = threading.Event()
    ticks: Counter[str] = Counter()

    def overflowing() -> None:
        ticks["overflowing"] += 1
        raise OverflowError("math range error")

    def counting() -> None:
        ticks["counting"] += 1
        if ticks["counting"] == 3:
            stop.set()

    runner = Runner(store, ContentAddressedStore.from_url(tmp_path / "artifacts"),
                    RunnerOptions(max_workers=1, actor="scheduler", record_provenance=False))
    duties = [Duty("overflowing", overflowing, timedelta(hours=1)), Duty("counting", counting)]
    with Scheduler(store, runner, [], duties=duties) as running, \
            caplog.at_level("WARNING", "loopline.loop.scheduler"):
        loop = threading.Thread(target=running.run_forever, args=(stop, 0.01))
        loop.start()
        loop.join(timeout=30)
        assert not loop.is_alive()
    runner.close()
    # the clock stands still here: the failing duty waits for its backoff, the others go on
    assert ticks == {"overflowing": 1, "counting": 3}
    assert sum(1 for r in caplog.records if r.exc_info is not None) == 1  # one traceback


def test_a_duty_that_keeps_failing_is_retried_after_a_doubling_backoff_up_to_its_period(
        stores: Stores, clock: ManualClock, tmp_path: Path) -> None:
    store = stores()
    tried: list[float] = []
    start = clock.now()

    def away() -> None:
        tried.append((clock.now() - start).total_seconds())
        raise BackendError("the database is away")

    runner = Runner(store, ContentAddressedStore.from_url(tmp_path / "artifacts"),
                    RunnerOptions(max_workers=1, actor="scheduler", record_provenance=False))
    with Scheduler(store, runner, [], duties=[Duty("monitor", away, timedelta(seconds=5))]) \
            as running:
        for _ in range(26):  # 0 to 12.5 s
            running.tick()
            clock.advance(timedelta(milliseconds=500))
    runner.close()
    assert tried == [0.0, 1.0, 3.0, 7.0, 12.0]  # waits 1, 2, 4, then the 5 s period
