"""``loopline demo``'s closed loop: a model degrades, loopline notices, retrains and recovers.

Set-up (``set_up``): snapshot and validate a churn training set, train it in a pipeline run
that registers ``models:/churn/1`` through the policy gate (card, lineage, per-slice
metrics, ``reference=`` its training inputs), deploy it with a canary plan, and apply the
monitoring config (``demo_loop_config``).

The loop (``run_loop``): the real model server answers a load generator over loopback HTTP
and takes its labels on ``POST /feedback``; after a while the customers shift. The
scheduler's duties are built as ``loopline scheduler`` builds them (the rollout controller,
then ``app.loop_duties.add_loop_duties``: monitoring once a minute, alerts handed to the
playbook automation through a dispatcher subscription, playbook actions whose retrain runs
execute on the scheduler's pool) and ticked once per round. So the drift and quality rules
fire, the ``recover`` playbook retrains on the alert's window with its labels
(``demo_loop_pipeline.retrain_churn``), v2 passes the gate into a canary, the rollout
controller promotes it, and the accuracy alert resolves.

Time, honestly: the workspace of the loop runs on a ``ManualClock`` that the demo moves
forward, 20 simulated seconds a round, starting at the next whole minute. Everything that
reads time — the server's prediction and label timestamps and serving-stats buckets, rule
windows (whole minutes, read once 15 s have settled), the scheduler's once-a-minute
monitoring, canary windows (10-second buckets, one-minute intervals, 15-second settle),
cool-downs, the audit log — reads that
clock, so the product runs with its production defaults and the loop's ten or so simulated
minutes pass in about twenty seconds. The traffic, the models, the runs, the database and every
decision are real. The clock does not move while a retrain run executes (its wall time is
reported beside it), and the demo waits for the server's background writes before each
tick (``demo_loop_traffic``). Records of the loop are stamped with the simulated times, up
to ``LoopSettings.limit`` ahead of the wall clock.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from loopline.app import Workspace
from loopline.app.loop_duties import add_loop_duties
from loopline.cli.demo_loop_config import (
    DEPLOYMENT,
    LoopSettings,
    apply_monitoring,
    apply_policy,
)
from loopline.cli.demo_loop_data import SUITE, customers
from loopline.cli.demo_loop_pipeline import MODEL, WORKSPACES, retrain_churn, train_churn
from loopline.cli.demo_loop_story import LEGEND, Narrator
from loopline.cli.demo_loop_traffic import (
    LoadGenerator,
    wait_for,
    wait_for_log,
    wait_for_stats,
)
from loopline.cli.output import console
from loopline.core.clock import ManualClock
from loopline.core.deployments import DeploymentState, Route, Strategy
from loopline.data.prediction_writer import WriterOptions
from loopline.data.validation import Suite
from loopline.loop.rollout import RolloutController
from loopline.loop.scheduler import Duty, Scheduler
from loopline.serving.app import create_app
from loopline.serving.server import ThreadedServer

START_TIMEOUT = 30.0
PIPELINES = [retrain_churn]


@dataclass(frozen=True, slots=True)
class LoopOutcome:
    """When the loop ran (simulated), how long it took (wall), and what it served."""

    start: datetime
    shift_at: datetime
    end: datetime
    wall_seconds: float
    retrain_seconds: float
    requests: int


def next_minute() -> datetime:
    """Return the next whole minute of the wall clock: where the loop's clock starts."""
    now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def set_up(workspace: Workspace, root: Path, settings: LoopSettings) -> str:
    """Govern, snapshot, validate, train, register and deploy v1; apply monitoring."""
    policy = apply_policy(workspace, root)
    console.print(f"   applied {policy.relative_to(root)}: churn models need a card, "
                  "validated training data and accuracy >= 0.7 (>= 0.6 on the basic plan)")
    path = root / "churn-train.parquet"
    customers(settings.train_rows, settings.seed).to_parquet(path)
    snapshot = workspace.datasets.snapshot(path, "churn-train").version
    report = workspace.validate_dataset(snapshot.ref, Suite.from_yaml(SUITE))
    console.print(f"   {path.name} → {snapshot.ref}: {snapshot.rows:,} customers, validation "
                  f"{'passed' if report.passed else 'FAILED'}")
    result = workspace.pipelines.run(train_churn, {"root": str(root), "ref": snapshot.ref})
    result.raise_for_failure()
    version = workspace.models.resolve(result.result["model"])
    accuracy = version.metrics.get("accuracy")
    basic = version.metrics.get("slices", {}).get("plan=basic", {}).get("accuracy")
    console.print(f"   run {result.run.id} trained and registered {version.uri} through the "
                  f"gate: accuracy {accuracy} (basic plan {basic}), reference profile of "
                  f"{version.extra['reference_profile']['rows']:,} rows")
    workspace.deployments.create(DEPLOYMENT, [Route(MODEL, version.version, 100.0)],
                                 Strategy.REPLACE, canary=settings.canary(),
                                 description="the churn model, watched by monitor.yaml")
    steps = " → ".join(f"{step:g}%" for step in settings.canary_steps)
    console.print(f"   deployment {DEPLOYMENT}: {version.uri} at 100%; canary plan {steps}, "
                  "judged every minute")
    config = apply_monitoring(workspace, root, settings)
    console.print(f"   applied {config.name}: input-drift, accuracy-drop (for 2, playbook "
                  "recover: retrain + canary), basic-plan-accuracy")
    return version.uri


class _Loop:
    """The rounds of the loop on one workspace (see the module docstring)."""

    def __init__(self, workspace: Workspace, clock: ManualClock, settings: LoopSettings
                 ) -> None:
        self._ws = workspace
        self._clock = clock
        self._settings = settings
        self._start = clock.now()
        self._shift_at = self._start + settings.before
        self._controller = RolloutController(workspace.store, workspace.deployments)
        self._narrator = Narrator(workspace, self._start, self._shift_at)
        self._retrain_seconds = 0.0

    def run(self) -> LoopOutcome:
        """Serve round after round until the loop has recovered; return how it went."""
        began = time.perf_counter()
        config = self._ws.serving_config(poll_seconds=0.2, deployments=[DEPLOYMENT],
                                         writer_options=WriterOptions(
                                             max_age=self._settings.round))
        with ExitStack() as stack:
            server = ThreadedServer(create_app(config), start_timeout=START_TIMEOUT)
            stack.callback(server.stop)
            client = stack.enter_context(httpx.Client(base_url=server.url, timeout=30.0))
            wait_for("the model server", lambda: client.get("/v2/health/ready").status_code
                     == 200, START_TIMEOUT)
            running = stack.enter_context(Scheduler(
                self._ws.store, self._ws.pipelines, PIPELINES,
                duties=[Duty("rollouts", self._controller.tick)]))
            automation = stack.enter_context(closing(self._ws.automation(
                PIPELINES, running.execute)))
            dispatcher = stack.enter_context(self._ws.dispatcher())
            add_loop_duties(self._ws, running, automation, dispatcher)
            generator = LoadGenerator(client, self._clock, self._settings)
            console.print(f"   serving on {server.url}; simulated clock starts at "
                          f"{self._start:%H:%M} UTC, the shift comes at +"
                          f"{int(self._settings.before.total_seconds() // 60)}:00")
            console.print(f"   {LEGEND}", style="dim")
            index = 0
            while not self._round(index, generator, running):
                index += 1
            requests = generator.answered
        return LoopOutcome(self._start, self._shift_at, self._clock.now(),
                           time.perf_counter() - began, self._retrain_seconds, requests)

    def _round(self, index: int, generator: LoadGenerator, running: Scheduler) -> bool:
        """Serve one round, let the scheduler tick; return whether the loop has recovered."""
        if self._clock.now() - self._start > self._settings.limit:
            self._narrator.give_up(self._settings.limit)
        shifted = self._clock.now() >= self._shift_at
        if shifted and self._clock.now() - self._settings.round < self._shift_at:
            self._narrator.shift()
        report = generator.round(index, shifted)
        wait_for_log(self._ws, report)
        self._settle_canary(generator)
        revision = self._ws.deployments.get(DEPLOYMENT).revision
        swaps = generator.table_swaps()
        self._tick(running)
        if self._ws.deployments.get(DEPLOYMENT).revision != revision:
            wait_for("the server to route by the deployment's new revision",
                     lambda: generator.table_swaps() > swaps)
        return self._narrator.update(report)

    def _settle_canary(self, generator: LoadGenerator) -> None:
        """Before a canary window is judged, wait for the servers' stats to hold all of it."""
        deployment = self._ws.deployments.get(DEPLOYMENT)
        if deployment.state is DeploymentState.ROLLING_OUT and \
                self._controller.window_of(deployment, self._clock.now()) is not None:
            wait_for_stats(self._ws, self._start, generator.answered)

    def _tick(self, running: Scheduler) -> None:
        """Tick the scheduler; when it started a run, wait for it and tick again."""
        running.tick()
        while running.in_flight:
            began = time.perf_counter()
            running.wait()
            self._retrain_seconds += time.perf_counter() - began
            running.tick()


def run_loop(root: Path, settings: LoopSettings) -> tuple[Workspace, LoopOutcome]:
    """Set up and run the loop in the workspace at ``root``; return it (open) and the outcome.

    The caller closes the workspace.

    Raises:
        LoopFailed: (``demo_loop_story``) when the loop does not recover, naming the step.
        DemoStalled: (``demo_loop_traffic``) when the server's writes do not land in time.
    """
    clock = ManualClock(next_minute())
    workspace = Workspace.open(root, clock=clock)
    WORKSPACES[str(root)] = workspace
    try:
        set_up(workspace, root, settings)
        outcome = _Loop(workspace, clock, settings).run()
    except BaseException:
        workspace.close()
        raise
    finally:
        WORKSPACES.pop(str(root), None)
    return workspace, outcome
