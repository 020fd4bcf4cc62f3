"""The rollout controller on every backend and a ManualClock: windows, verdicts, recovery.

A fake deployment service (``list``/``apply_verdict``, storing verdicts like the real one)
isolates the controller; the last test drives the real service end to end: a stats recorder
writes what "servers" answered, the controller judges it, the service promotes or rolls back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.artifacts import ContentAddressedStore
from loopline.cli.main import run as run_cli
from loopline.core.clock import ManualClock
from loopline.core.deployments import (
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    DeploymentState,
    RolloutVerdict,
    Route,
    RouteRole,
    Strategy,
)
from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.data.serving_windows import window
from loopline.deploy.service import DeploymentService
from loopline.loop.rollout import (
    DEFAULT_SETTLE,
    FAIL,
    INCONCLUSIVE,
    MAX_WINDOW_INTERVALS,
    PASS,
    RolloutController,
    WindowRules,
)
from loopline.loop.scheduler import Duty, Scheduler
from loopline.pipelines import Runner, RunnerOptions
from loopline.serving.stats_recorder import StatsRecorder
from loopline.store import MetadataStore
from loopline.store.models import ROLLOUT_VERDICTS
from loopline.store.serving_stats import StatsRow, add_stats, window_rows

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(minutes=1)
PLAN = CanaryPlan((10.0, 25.0, 50.0, 100.0), AnalysisPolicy(interval=INTERVAL, min_samples=50))
PRIMARY, CANARY = "models:/churn/1", "models:/churn/2"


def rollout(name: str = "churn", state: DeploymentState = DeploymentState.ROLLING_OUT,
            step_started_at: datetime = T0) -> Deployment:
    routes = (Route(name, 1, 90.0, RouteRole.PRIMARY), Route(name, 2, 10.0, RouteRole.CANARY))
    return Deployment(name=name, strategy=Strategy.CANARY, routes=routes, state=state,
                      revision=2, created_at=T0, created_by="t", updated_at=T0, updated_by="t",
                      canary=PLAN, step=0, step_started_at=step_started_at,
                      last_good=routes[:1])


class FakeDeployments:
    """Keeps deployments in memory; stores verdicts in the real table; moves a step per pass."""

    def __init__(self, store: MetadataStore, *deployments: Deployment) -> None:
        self.store = store
        self.current = {d.name: d for d in deployments}
        self.applied: list[RolloutVerdict] = []
        self.broken: set[str] = set()

    def list(self) -> list[Deployment]:
        return list(self.current.values())

    def apply_verdict(self, verdict: RolloutVerdict) -> Deployment:
        if verdict.deployment in self.broken:
            raise BackendError("the database is away")
        deployment = self.current[verdict.deployment]
        with self.store.write("fake") as uow:
            uow.session.connection().execute(sa.insert(ROLLOUT_VERDICTS), {
                "id": verdict.id, "deployment": verdict.deployment,
                "revision": verdict.revision, "step": verdict.step,
                "window_start": verdict.window_start, "window_end": verdict.window_end,
                "verdict": verdict.verdict, "numbers": dict(verdict.numbers),
                "decided_at": verdict.decided_at})
        self.applied.append(verdict)
        failures = deployment.failures + (verdict.verdict == FAIL)
        limit = deployment.canary.analysis.failures_to_rollback if deployment.canary else 1
        if verdict.verdict == FAIL and failures < limit:
            deployment = replace(deployment, failures=failures)
        elif verdict.verdict == PASS:
            deployment = replace(deployment, step=deployment.step + 1,
                                 step_started_at=self.store.clock.now(),
                                 revision=deployment.revision + 1)
        elif verdict.verdict == FAIL:
            deployment = replace(deployment, state=DeploymentState.ROLLED_BACK,
                                 routes=deployment.last_good, revision=deployment.revision + 1)
        self.current[deployment.name] = deployment
        return deployment


def serve(store: MetadataStore, at: datetime, version: str, requests: int, errors: int,
          latency_ms: float = 10.0, deployment: str = "churn") -> None:
    """Record what one instance served in the 10-second bucket starting at ``at``."""
    add_stats(store, [StatsRow(deployment, version, "i-1", at, requests, errors,
                               QuantileSketch.of([latency_ms] * requests).to_dict())])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def controller(store: MetadataStore, fake: FakeDeployments, clock: ManualClock,
               settle: timedelta | None = timedelta(0)) -> RolloutController:
    """A controller judging at a window's end (``serve`` writes synchronously), by default."""
    store.clock = clock
    return RolloutController(store, fake, clock, rules=WindowRules(settle=settle))


def test_nothing_is_judged_before_the_interval_has_elapsed(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    serve(store, T0, PRIMARY, 500, 0)
    serve(store, T0, CANARY, 100, 0)
    clock.advance(INTERVAL - timedelta(seconds=1))
    assert running.tick() == []
    clock.advance(timedelta(seconds=1))
    [verdict] = running.tick()
    assert verdict.verdict == PASS
    assert (verdict.window_start, verdict.window_end) == (T0, T0 + INTERVAL)
    assert (verdict.revision, verdict.step, verdict.decided_at) == (2, 0, T0 + INTERVAL)
    assert verdict.numbers["canary"]["model_version"] == CANARY
    assert verdict.numbers["primary"]["requests"] == 500


def test_a_healthy_canary_moves_one_step_per_interval(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    for step in range(3):
        start = clock.now()
        serve(store, start, PRIMARY, 400, 2)
        serve(store, start, CANARY, 100, 0, latency_ms=11.0)
        clock.advance(INTERVAL)
        [verdict] = running.tick()
        assert (verdict.verdict, verdict.step, verdict.window_start) == (PASS, step, start)
        assert fake.current["churn"].step == step + 1


def test_a_raised_canary_error_rate_fails_and_the_service_rolls_back(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    serve(store, T0, PRIMARY, 400, 2)
    serve(store, T0, CANARY, 100, 30)
    clock.advance(INTERVAL)
    [verdict] = running.tick()
    assert verdict.verdict == FAIL
    errors = next(c for c in verdict.numbers["checks"] if c["name"] == "error_rate_increase")
    assert errors["observed"] == pytest.approx(0.3 - 0.005)
    assert errors["passed"] is False
    assert fake.current["churn"].state is DeploymentState.ROLLED_BACK
    clock.advance(INTERVAL)
    assert running.tick() == []  # no longer rolling out


def test_an_inconclusive_window_carries_forward_and_the_next_one_accumulates_from_its_start(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    serve(store, T0, CANARY, 10, 0)
    clock.advance(INTERVAL)
    [first] = running.tick()
    assert first.verdict == INCONCLUSIVE
    assert first.numbers["canary"]["requests"] == 10
    assert first.numbers["primary"]["requests"] == 0
    assert running.tick() == []  # judged once
    serve(store, T0 + INTERVAL, PRIMARY, 400, 0)
    serve(store, T0 + INTERVAL, CANARY, 100, 0)
    clock.advance(INTERVAL)
    [second] = running.tick()
    assert (second.window_start, second.window_end) == (T0, T0 + 2 * INTERVAL)
    assert second.numbers["canary"]["requests"] == 110
    assert second.verdict == PASS
    serve(store, T0 + 2 * INTERVAL, PRIMARY, 400, 0)
    clock.advance(INTERVAL)
    [third] = running.tick()  # after a decisive verdict, the next window starts at its end
    assert (third.window_start, third.window_end) == (T0 + 2 * INTERVAL, T0 + 3 * INTERVAL)


def test_healthy_low_traffic_accumulates_over_intervals_to_a_pass(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    verdicts = []
    for minute in range(3):
        for second in range(0, 60, 10):  # 18 canary requests an interval; 50 are needed
            at = T0 + minute * INTERVAL + timedelta(seconds=second)
            serve(store, at, CANARY, 3, 0)
            serve(store, at, PRIMARY, 100, 0)
        clock.advance(INTERVAL)
        verdicts += running.tick()
    assert [v.verdict for v in verdicts] == [INCONCLUSIVE, INCONCLUSIVE, PASS]
    passed = verdicts[-1]
    assert (passed.window_start, passed.window_end) == (T0, T0 + 3 * INTERVAL)
    assert passed.numbers["canary"]["requests"] == 54
    assert fake.current["churn"].step == 1


def test_a_low_traffic_canary_failing_every_request_rolls_back_without_min_samples(
        store: MetadataStore, clock: ManualClock) -> None:
    plan = CanaryPlan(PLAN.steps, replace(PLAN.analysis, failures_to_rollback=2))
    fake = FakeDeployments(store, replace(rollout(), canary=plan))
    running = controller(store, fake, clock, settle=None)
    seen: list[tuple[datetime, RolloutVerdict]] = []
    while fake.current["churn"].state is DeploymentState.ROLLING_OUT and \
            clock.now() < T0 + 10 * INTERVAL:
        serve(store, clock.now(), CANARY, 5, 5)  # 30 failing requests an interval
        serve(store, clock.now(), PRIMARY, 100, 1)
        now = clock.advance(timedelta(seconds=10))
        seen += [(now, verdict) for verdict in running.tick()]
    assert [v.verdict for _, v in seen] == [FAIL, FAIL]
    assert fake.current["churn"].state is DeploymentState.ROLLED_BACK
    assert seen[-1][0] - T0 <= (plan.analysis.failures_to_rollback + 1) * INTERVAL
    last = seen[-1][1]
    assert last.numbers["decided_by"] == ["canary_errors_at_min_samples"]
    early = next(c for c in last.numbers["checks"]
                 if c["name"] == "canary_errors_at_min_samples")
    assert (early["observed"], early["passed"]) == (30, False)
    assert early["threshold"] == pytest.approx((0.01 + 0.01) * 50)
    assert last.numbers["canary"]["error_rate"] == 1.0
    assert last.numbers["canary"]["requests"] == 30 < PLAN.analysis.min_samples


def test_a_window_starts_on_the_first_bucket_boundary_after_the_step_started(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout(step_started_at=T0 + timedelta(seconds=3)))
    running = controller(store, fake, clock, settle=None)
    for second in range(0, 70, 10):
        serve(store, T0 + timedelta(seconds=second), CANARY, 20, 0)
        serve(store, T0 + timedelta(seconds=second), PRIMARY, 200, 0)
    clock.advance(timedelta(seconds=10) + INTERVAL + DEFAULT_SETTLE - timedelta(seconds=1))
    assert running.tick() == []
    clock.advance(timedelta(seconds=1))
    [verdict] = running.tick()
    assert (verdict.window_start, verdict.window_end) == \
        (T0 + timedelta(seconds=10), T0 + timedelta(seconds=70))
    assert verdict.numbers["canary"]["requests"] == 120  # six whole buckets, not the first


def test_a_judged_window_read_again_after_later_buckets_arrive_gives_the_same_numbers(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout(step_started_at=T0 + timedelta(seconds=3)))
    running = controller(store, fake, clock, settle=None)
    for second in range(10, 70, 10):
        serve(store, T0 + timedelta(seconds=second), CANARY, 20, 0)
        serve(store, T0 + timedelta(seconds=second), PRIMARY, 200, 0)
    serve(store, T0 + timedelta(seconds=70), CANARY, 5, 0)  # the next bucket, partly served
    clock.advance(timedelta(seconds=63))
    assert running.tick() == []  # the window's last bucket may still be flushing
    clock.advance(timedelta(seconds=22))  # T0+85: 70 + one bucket + one flush period
    [verdict] = running.tick()
    assert verdict.window_end == T0 + timedelta(seconds=70)
    serve(store, T0 + timedelta(seconds=70), CANARY, 20, 20)  # the rest of that bucket
    serve(store, T0 + timedelta(seconds=80), CANARY, 20, 20)
    again = window(store, "churn", verdict.window_start, verdict.window_end)
    for side, uri in (("canary", CANARY), ("primary", PRIMARY)):
        assert (again[uri].requests, again[uri].errors) == \
            (verdict.numbers[side]["requests"], verdict.numbers[side]["errors"])
    assert fake.current["churn"].step == 1
    next_start = fake.current["churn"].step_started_at
    assert next_start is not None
    found = running.window_of(fake.current["churn"], next_start + INTERVAL + DEFAULT_SETTLE
                              + timedelta(seconds=10))
    assert found is not None and found[0] == T0 + timedelta(seconds=90)  # the next boundary


def test_the_default_settle_is_one_bucket_plus_one_flush_period(
        store: MetadataStore, clock: ManualClock) -> None:
    assert timedelta(seconds=15) == DEFAULT_SETTLE
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock, settle=None)
    clock.advance(INTERVAL + DEFAULT_SETTLE - timedelta(seconds=1))
    assert running.tick() == []
    clock.advance(timedelta(seconds=1))
    [verdict] = running.tick()
    assert verdict.window_end == T0 + INTERVAL


def test_an_interval_that_is_not_whole_buckets_is_rounded_up_to_whole_buckets(
        store: MetadataStore, clock: ManualClock) -> None:
    plan = CanaryPlan(PLAN.steps, replace(PLAN.analysis, interval=timedelta(seconds=45)))
    fake = FakeDeployments(store, replace(rollout(), canary=plan))
    running = controller(store, fake, clock)
    clock.advance(timedelta(seconds=49))
    assert running.tick() == []
    clock.advance(timedelta(seconds=1))
    [verdict] = running.tick()
    assert verdict.window_end == T0 + timedelta(seconds=50)


def test_a_rerun_after_a_crash_judges_the_same_window_from_stored_state(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    serve(store, T0, PRIMARY, 400, 0)
    serve(store, T0, CANARY, 100, 0)
    clock.advance(INTERVAL + timedelta(seconds=17))
    lost = controller(store, fake, clock).judge(fake.current["churn"], clock.now())
    clock.advance(timedelta(seconds=9))  # the process died before storing; another runs later
    again = controller(store, fake, clock).judge(fake.current["churn"], clock.now())
    assert lost is not None and again is not None
    assert (lost.window_start, lost.window_end, lost.verdict, lost.numbers) == \
        (again.window_start, again.window_end, again.verdict, again.numbers)


def test_a_stopped_controller_judges_its_backlog_as_one_window_of_whole_intervals(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    for minute in range(3):
        serve(store, T0 + minute * INTERVAL, PRIMARY, 100, 0)
        serve(store, T0 + minute * INTERVAL, CANARY, 20, 0)
    clock.advance(3 * INTERVAL + timedelta(seconds=40))
    [verdict] = running.tick()
    assert (verdict.window_start, verdict.window_end) == (T0, T0 + 3 * INTERVAL)
    assert verdict.numbers["canary"]["requests"] == 60
    assert verdict.verdict == PASS
    assert running.tick() == []


def test_an_inconclusive_window_grows_to_max_intervals_then_slides_keeping_the_latest(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    store.clock = clock
    running = RolloutController(store, fake, clock,
                                rules=WindowRules(settle=timedelta(0), max_intervals=3))
    windows = []
    for minute in range(5):  # 10 canary requests a minute: never the 50 needed
        serve(store, T0 + minute * INTERVAL, CANARY, 10, 0)
        serve(store, T0 + minute * INTERVAL, PRIMARY, 100, 0)
        clock.advance(INTERVAL)
        [verdict] = running.tick()
        assert verdict.verdict == INCONCLUSIVE
        windows.append((verdict.window_start, verdict.window_end,
                        verdict.numbers["canary"]["requests"]))
    assert windows == [(T0, T0 + INTERVAL, 10), (T0, T0 + 2 * INTERVAL, 20),
                       (T0, T0 + 3 * INTERVAL, 30), (T0 + INTERVAL, T0 + 4 * INTERVAL, 30),
                       (T0 + 2 * INTERVAL, T0 + 5 * INTERVAL, 30)]
    with pytest.raises(InvalidArgumentError, match="max_intervals"):
        RolloutController(store, fake, clock, rules=WindowRules(max_intervals=0))


def test_stats_older_than_keep_stats_are_pruned_hourly_sparing_a_rollouts_longest_window(
        store: MetadataStore, clock: ManualClock) -> None:
    idle = replace(rollout("idle"), state=DeploymentState.ACTIVE, canary=None)
    fake = FakeDeployments(store, rollout(), idle)
    store.clock = clock
    running = RolloutController(store, fake, clock, rules=WindowRules(settle=timedelta(0),
                                                                  keep_stats=timedelta(hours=2)))
    for name in ("churn", "idle"):
        for hours in (0, 1, 3):
            serve(store, T0 + timedelta(hours=hours), PRIMARY, 5, 0, deployment=name)
    clock.advance(timedelta(hours=3, minutes=30))

    def kept(name: str) -> list[datetime]:
        return [row.bucket_start for row in window_rows(store.engine, name, T0 - INTERVAL,
                                                        T0 + timedelta(days=1))]

    running.tick()
    # the idle deployment keeps 2 hours; the rollout keeps its 12-interval window's span too,
    # which (12 minutes) is shorter, so both keep only buckets from the last 2 hours
    assert kept("idle") == kept("churn") == [T0 + timedelta(hours=3)]
    serve(store, T0 + timedelta(hours=1), PRIMARY, 5, 0, deployment="idle")
    clock.advance(timedelta(minutes=30))
    running.tick()  # within the hour: no prune
    assert kept("idle") == [T0 + timedelta(hours=1), T0 + timedelta(hours=3)]
    assert running.prune(clock.now(), force=True) == 1
    with pytest.raises(InvalidArgumentError, match="keep_stats"):
        RolloutController(store, fake, clock,
                          rules=WindowRules(keep_stats=timedelta(minutes=5)))


def test_a_long_analysis_interval_keeps_stats_for_its_whole_window(
        store: MetadataStore, clock: ManualClock) -> None:
    slow = replace(PLAN, analysis=replace(PLAN.analysis, interval=timedelta(hours=1)))
    fake = FakeDeployments(store, replace(rollout(), canary=slow))
    store.clock = clock
    running = RolloutController(store, fake, clock, rules=WindowRules(settle=timedelta(0),
                                                                  keep_stats=timedelta(hours=2)))
    serve(store, T0, PRIMARY, 5, 0)
    clock.advance(timedelta(hours=11))
    assert running.prune(clock.now()) == 0  # a 12-hour window may still read it
    clock.advance(timedelta(hours=2))
    assert running.prune(clock.now(), force=True) == 1


def test_settle_time_delays_judging_past_the_window_end(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock, settle=timedelta(seconds=10))
    clock.advance(INTERVAL + timedelta(seconds=9))
    assert running.tick() == []
    clock.advance(timedelta(seconds=1))
    [verdict] = running.tick()
    assert verdict.window_end == T0 + INTERVAL


def test_only_rolling_out_deployments_are_judged_and_one_failure_spares_the_rest(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout("a"), rollout("b"),
                           rollout("c", DeploymentState.PAUSED),
                           rollout("d", DeploymentState.ACTIVE))
    fake.broken.add("a")
    running = controller(store, fake, clock)
    clock.advance(INTERVAL)
    assert [v.deployment for v in running.tick()] == ["b"]
    fake.broken.clear()
    assert [v.deployment for v in running.tick()] == ["a"]  # the same window, judged again


def test_stats_before_the_step_started_are_not_in_the_window(
        store: MetadataStore, clock: ManualClock) -> None:
    fake = FakeDeployments(store, rollout(step_started_at=T0 + timedelta(seconds=30)))
    running = controller(store, fake, clock)
    serve(store, T0, CANARY, 100, 100)  # before the step: not this step's traffic
    serve(store, T0 + timedelta(seconds=30), PRIMARY, 400, 0)
    serve(store, T0 + timedelta(seconds=30), CANARY, 100, 0)
    clock.advance(INTERVAL + timedelta(seconds=30))
    [verdict] = running.tick()
    assert verdict.verdict == PASS
    assert verdict.numbers["canary"]["errors"] == 0


def test_a_negative_settle_time_or_a_sub_second_bucket_is_refused(
        store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        RolloutController(store, FakeDeployments(store),
                          rules=WindowRules(settle=timedelta(seconds=-1)))
    assert caught.value.field == "settle"
    with pytest.raises(InvalidArgumentError) as caught:
        RolloutController(store, FakeDeployments(store), rules=WindowRules(bucket=timedelta(0)))
    assert caught.value.field == "bucket"


def test_a_scheduler_given_the_controller_judges_rollouts_on_each_tick(
        store: MetadataStore, clock: ManualClock, tmp_path: Path) -> None:
    fake = FakeDeployments(store, rollout())
    running = controller(store, fake, clock)
    blobs = ContentAddressedStore.from_url(tmp_path / "artifacts")
    runner = Runner(store, blobs, RunnerOptions(max_workers=1, actor="scheduler",
                                                record_provenance=False))
    with Scheduler(store, runner, [], duties=[Duty("rollouts", running.tick)]) as scheduler:
        assert scheduler.tick() == []
        assert fake.applied == []
        clock.advance(INTERVAL)
        scheduler.tick()
        fake.broken.add("churn")  # a failing deployment never breaks the scheduler's tick
        clock.advance(INTERVAL)
        scheduler.tick()
    runner.close()
    assert [v.window_start for v in fake.applied] == [T0]


# -- end to end: the real deployment service, stats recorder and store --------------------------

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
BUCKET = timedelta(seconds=10)


@pytest.fixture
def clocked_ws(db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "ws", overrides={"db_url": db_url},
                               clock=ManualClock(T0))
    try:
        yield workspace
    finally:
        workspace.close()


class Traffic:
    """Sends ``per_bucket`` requests every 10 seconds by the deployment's weights."""

    def __init__(self, ws: Workspace, service: DeploymentService, clock: ManualClock) -> None:
        self.service, self.clock = service, clock
        self.recorder = StatsRecorder(lambda rows: add_stats(ws.store, rows), "server-1",
                                      clock, flush_seconds=None)
        self.canary_error_every = 100  # one canary error in this many canary requests
        self.sent = {"canary": 0, "primary": 0}

    def bucket(self, per_bucket: int = 120) -> None:
        deployment = self.service.get("churn")
        canary = next((r for r in deployment.routes if r.role is RouteRole.CANARY), None)
        share = canary.weight if canary else 0.0
        for i in range(per_bucket):
            if canary is not None and i % 100 < share:
                n = self.sent["canary"] = self.sent["canary"] + 1
                self.recorder.record("churn", canary.uri, n % self.canary_error_every == 0,
                                     11.0 + i % 3)
            else:
                n = self.sent["primary"] = self.sent["primary"] + 1
                self.recorder.record("churn", deployment.primary.uri, n % 100 == 0,
                                     10.0 + i % 3)
        self.recorder.flush()


def run_for(traffic: Traffic, running: RolloutController, span: timedelta,
            ) -> list[tuple[datetime, RolloutVerdict]]:
    """Serve and tick every 10 seconds for ``span``; return when each verdict came."""
    seen = []
    for _ in range(int(span / BUCKET)):
        traffic.bucket()
        now = traffic.clock.advance(BUCKET)
        seen += [(now, verdict) for verdict in running.tick()]
    return seen


def test_a_healthy_canary_is_promoted_step_by_step_then_a_failing_one_rolls_back_by_itself(
        clocked_ws: Workspace) -> None:
    ws = clocked_ws
    clock = ws.store.clock
    assert isinstance(clock, ManualClock)
    for seed in range(3):
        model = LogisticRegression(C=1.0 + seed).fit(FRAME[["x"]], FRAME["y"])
        ws.models.register(model, "churn", input_example=FRAME[["x"]])
    service = ws.deployments
    service.create("churn", [Route("churn", 1, 100.0)], Strategy.REPLACE)
    plan = CanaryPlan((10.0, 25.0, 50.0, 100.0),
                      AnalysisPolicy(interval=INTERVAL, min_samples=50, max_p99_ratio=1.5))
    traffic = Traffic(ws, service, clock)
    running = RolloutController(ws.store, service)

    service.start_canary("churn", ("churn", 2), plan)
    weights = []
    for _ in range(3):  # each window is judged one bucket and a flush period after its end
        weights.append(next(r.weight for r in service.get("churn").routes
                            if r.role is RouteRole.CANARY))
        seen = run_for(traffic, running, INTERVAL + 2 * BUCKET)
        assert [v.verdict for _, v in seen] == [PASS]
        assert seen[0][0] == service.get("churn").updated_at  # moved at the verdict's time
    assert weights == [10.0, 25.0, 50.0]
    promoted = service.get("churn")
    assert promoted.state is DeploymentState.ACTIVE
    assert promoted.routes == (Route("churn", 2, 100.0, RouteRole.PRIMARY),)

    slow_plan = CanaryPlan((10.0, 50.0, 100.0), AnalysisPolicy(
        interval=INTERVAL, min_samples=50, passes_to_promote=3, failures_to_rollback=2))
    service.start_canary("churn", ("churn", 3), slow_plan)
    assert [v.verdict for _, v in run_for(traffic, running, INTERVAL + 2 * BUCKET)] == [PASS]
    raised_at = clock.now()
    traffic.canary_error_every = 3  # a third of the canary's answers fail from now on
    seen = run_for(traffic, running, 4 * INTERVAL)
    assert [v.verdict for _, v in seen] == [FAIL, FAIL]
    rolled_back_at = seen[-1][0]
    assert rolled_back_at - raised_at <= (slow_plan.analysis.failures_to_rollback + 1) * INTERVAL
    after = service.get("churn")
    assert after.state is DeploymentState.ROLLED_BACK
    assert after.routes == promoted.routes

    stored = service.verdicts("churn", limit=50)
    assert [v.verdict for v in reversed(stored)] == [PASS, PASS, PASS, PASS, FAIL, FAIL]
    last = stored[0]
    assert last.numbers == seen[-1][1].numbers
    errors = next(c for c in last.numbers["checks"] if c["name"] == "error_rate_increase")
    assert errors["passed"] is False
    assert errors["threshold"] == slow_plan.analysis.max_error_rate_increase
    assert last.numbers["canary"]["model_version"] == "models:/churn/3"
    assert last.numbers["canary"]["requests"] >= 50
    assert last.numbers["primary"]["requests"] >= 50
    windows = [(v.window_start, v.window_end) for v in reversed(stored)]
    assert all(end - start == INTERVAL for start, end in windows)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows))  # never judged twice


# -- the command -----------------------------------------------------------------------------


def _cli(ws: Workspace, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_cli(["--workspace", str(ws.root), "--db-url", ws.store.url, "rollouts", "run",
                 *args])
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def test_rollouts_run_once_judges_a_due_canary_and_prints_its_verdict(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)  # the command runs on the wall clock
    with Workspace.init(tmp_path / "ws", overrides={"db_url": db_url},
                        clock=ManualClock(long_ago)) as ws:
        for seed in range(2):
            model = LogisticRegression(C=1.0 + seed).fit(FRAME[["x"]], FRAME["y"])
            ws.models.register(model, "churn", input_example=FRAME[["x"]])
        ws.deployments.create("churn", [Route("churn", 1, 100.0)], Strategy.REPLACE)
        ws.deployments.start_canary("churn", ("churn", 2), PLAN)
        code, out = _cli(ws, capsys, "--once")
        assert code == 0, out
        assert "inconclusive" in out
        [stored] = ws.deployments.verdicts("churn")
        # the backlog's last max_intervals intervals, in whole intervals from the step's start
        assert stored.window_end - stored.window_start == MAX_WINDOW_INTERVALS * INTERVAL
        assert (stored.window_start - long_ago) % INTERVAL == timedelta(0)
        settled = datetime.now(UTC) - DEFAULT_SETTLE  # the default settle time
        assert settled - INTERVAL < stored.window_end <= settled
        assert stored.numbers["checks"][0] == {"name": "min_samples", "observed": 0,
                                               "threshold": 50, "passed": None}
        code, out = _cli(ws, capsys, "--once", "--interval", "2h")
        assert code != 0
        assert "--interval" in out
        code, out = _cli(ws, capsys, "--once", "--settle", "soon")
        assert code != 0
        assert "--settle" in out
