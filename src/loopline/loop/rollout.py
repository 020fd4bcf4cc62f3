"""The rollout controller: judges each canary between steps and lets the deployment move.

On every ``tick`` it looks at each ``rolling_out`` deployment and, when an analysis interval
has elapsed, compares what the canary and the primary served over the window (``analyse``),
then hands the verdict to the deployment service, which stores it with its numbers and
promotes to the next step, rolls back, or only records it (see ``DeploymentControl``).

Windows sit on a grid fixed by stored state, not by when the controller happens to run: a
window starts at the later of the step's start and the end of the deployment's latest
verdict, and ends at the last whole ``policy.interval`` after that start which has elapsed
(less ``settle``): ``[start, now)`` rounded down to whole intervals. Ticking at least once an
interval, every window is exactly one interval long; a controller stopped for a while judges
the whole backlog as one window. So a controller that crashed between judging and storing
judges the same window again (or, past another grid line, a longer one that contains it),
and two controllers compute the same grid (the service ignores a repeated or stale
verdict). ``settle`` gives the servers' stats flushes time to land before a window is judged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from loopline.core.clock import Clock
from loopline.core.deployments import (
    AnalysisPolicy,
    Deployment,
    DeploymentState,
    RolloutVerdict,
    Route,
    RouteRole,
)
from loopline.core.errors import InvalidArgumentError, LooplineError
from loopline.core.ids import new_id
from loopline.loop.rollout_analysis import FAIL, INCONCLUSIVE, PASS, analyse
from loopline.loop.rollout_window import EMPTY, window
from loopline.store import MetadataStore
from loopline.store.serving_stats import latest_verdict_end

__all__ = ["FAIL", "INCONCLUSIVE", "PASS", "DeploymentControl", "RolloutController",
           "analyse"]

log = logging.getLogger(__name__)
MAX_SETTLE = timedelta(hours=1)


class DeploymentControl(Protocol):
    """What the controller needs of the deployment service (``deploy.DeploymentService``)."""

    def list(self) -> Sequence[Deployment]:
        """Return every deployment."""
        ...

    def apply_verdict(self, verdict: RolloutVerdict) -> Deployment:
        """Store ``verdict`` and move the rollout by it; ignore a repeated or stale one."""
        ...


def _canary(deployment: Deployment) -> Route | None:
    return next((r for r in deployment.routes if r.role is RouteRole.CANARY), None)


class RolloutController:
    """Judges the canaries of rolling-out deployments on the injected clock.

    Raises:
        InvalidArgumentError: when ``settle`` is negative or longer than an hour.
    """

    def __init__(self, store: MetadataStore, deployments: DeploymentControl,
                 clock: Clock | None = None, *, settle: timedelta = timedelta(0)) -> None:
        if not timedelta(0) <= settle <= MAX_SETTLE:
            raise InvalidArgumentError("settle", "must be from 0 to 1 hour")
        self._store = store
        self._deployments = deployments
        self._clock: Clock = clock or store.clock
        self._settle = settle
        self.rolling_out = 0  # how many deployments the last tick found rolling out

    def tick(self) -> list[RolloutVerdict]:
        """Judge every rolling-out deployment whose window has elapsed; return the verdicts.

        One deployment's failure (a store blip, a gate refusing the next step) is logged and
        that window is judged again on the next tick; the others go on.

        Raises:
            BackendError: when the deployments cannot be listed.
        """
        now = self._clock.now()
        verdicts: list[RolloutVerdict] = []
        rolling = [d for d in self._deployments.list()
                   if d.state is DeploymentState.ROLLING_OUT]
        self.rolling_out = len(rolling)
        for deployment in rolling:
            try:
                verdict = self.judge(deployment, now)
                if verdict is not None:
                    self._deployments.apply_verdict(verdict)
                    verdicts.append(verdict)
            except LooplineError as exc:
                log.warning("rollout of %s: %s; judged again next tick", deployment.name,
                            exc.message)
        return verdicts

    def window_of(self, deployment: Deployment, now: datetime,
                  ) -> tuple[datetime, datetime] | None:
        """Return the deployment's window to judge at ``now`` (None: none is due yet).

        Raises:
            BackendError: when the database fails.
        """
        if deployment.canary is None or deployment.step_started_at is None:
            return None
        interval = deployment.canary.analysis.interval
        start = deployment.step_started_at
        last = latest_verdict_end(self._store.engine, deployment.name)
        if last is not None and last > start:
            start = last
        whole = (now - self._settle - start) // interval
        if whole < 1:
            return None
        return start, start + whole * interval

    def judge(self, deployment: Deployment, now: datetime) -> RolloutVerdict | None:
        """Return the verdict on the deployment's next window, None when none is due yet.

        Raises:
            InvalidArgumentError: when a stored latency sketch is malformed.
            BackendError: when the database fails.
        """
        canary = _canary(deployment)
        found = self.window_of(deployment, now)
        if canary is None or found is None or deployment.canary is None:
            return None
        start, end = found
        policy: AnalysisPolicy = deployment.canary.analysis
        served = window(self._store, deployment.name, start, end)
        primary = deployment.primary
        verdict, numbers = analyse(policy, served.get(canary.uri, EMPTY),
                                   served.get(primary.uri, EMPTY))
        for side, route in (("canary", canary), ("primary", primary)):
            numbers[side].update(model_version=route.uri, weight=route.weight)
        log.info("rollout of %s, step %d, window %s..%s: %s", deployment.name, deployment.step,
                 start.isoformat(), end.isoformat(), verdict)
        return RolloutVerdict(
            id=new_id(), deployment=deployment.name, revision=deployment.revision,
            step=deployment.step, window_start=start, window_end=end, verdict=verdict,
            numbers=numbers, decided_at=now)
