"""The rollout controller: judges each canary between steps and lets the deployment move.

On every ``tick`` it looks at each ``rolling_out`` deployment and, when an analysis interval
has elapsed, compares what the canary and the primary served over the window (``analyse``),
then hands the verdict to the deployment service, which stores it with its numbers and
promotes to the next step, rolls back, or only records it (see ``DeploymentControl``).

Windows cover whole stats buckets and are fixed by stored state, not by when the controller
happens to run (``window_of``):

- the servers count requests in ``bucket``-long buckets on a grid of whole multiples since
  the epoch (10 s, ``store.serving_stats.BUCKET_SECONDS``) and flush them every 5 s
  (``FLUSH_SECONDS``). A window's start and end sit on that grid, so it never takes part of a
  bucket;
- a window starts at the end of the deployment's latest *decisive* verdict (pass or fail) or,
  before one, at the first bucket boundary at or after the step's start. An inconclusive
  verdict (too few requests) moves nothing: the next window starts where it started and
  grows, so a low-traffic canary's requests accumulate until ``min_samples`` is reached —
  up to ``max_intervals`` intervals (12 by default), after which it slides, keeping the
  latest ones, so week-old traffic never decides and the window query stays bounded;
- it ends at the last boundary ``start + n * length`` (``length``: ``policy.interval``
  rounded up to whole buckets) with ``end + settle <= now``, and only when that end is past
  the latest stored verdict's end (a window is judged once). ``settle`` defaults to one
  bucket plus one flush period (15 s, ``DEFAULT_SETTLE``): by then every server has written
  the final counts of the window's last bucket.

Serving stats are kept ``keep_stats`` (14 days by default, and never less than the longest
window a rolling-out deployment can be judged over): at most once an hour a tick deletes
each deployment's older buckets.

Ticking at least once a bucket, a decisive window is one interval long and the next starts
exactly at its end; a controller stopped for a while judges its backlog (up to
``max_intervals`` intervals of it) as one window.
Because a judged window holds only buckets that were complete, reading the same window again
later (``data.serving_windows.window``) gives the verdict's numbers back, whatever arrived since
for later buckets; a controller that crashed between judging and storing judges the same
window again, and two controllers compute the same windows (the service ignores a repeated
or stale verdict). A server whose flush lags by more than ``settle`` (the store was away)
can still add to a judged window; raise ``settle`` where that matters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from loopline.data.serving_windows import EMPTY, grid_ceil, window
from loopline.loop.rollout_analysis import FAIL, INCONCLUSIVE, PASS, analyse
from loopline.store import MetadataStore
from loopline.store.serving_stats import (
    BUCKET_SECONDS,
    FLUSH_SECONDS,
    latest_verdict_end,
    prune_stats,
)

__all__ = ["BUCKET", "DEFAULT_SETTLE", "FAIL", "INCONCLUSIVE", "PASS", "DeploymentControl",
           "RolloutController", "WindowRules", "analyse"]

log = logging.getLogger(__name__)
MAX_SETTLE = timedelta(hours=1)
BUCKET = timedelta(seconds=BUCKET_SECONDS)
DEFAULT_SETTLE = BUCKET + timedelta(seconds=FLUSH_SECONDS)
DECISIVE = (PASS, FAIL)
MAX_WINDOW_INTERVALS = 12
DEFAULT_KEEP_STATS = timedelta(days=14)
PRUNE_EVERY = timedelta(hours=1)


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


@dataclass(frozen=True, slots=True)
class WindowRules:
    """How the controller cuts windows and keeps serving stats.

    ``settle`` is how long after a window's end it is judged (None: ``DEFAULT_SETTLE``, one
    bucket plus one stats flush period); ``bucket`` is the servers' stats bucket length
    (``StatsRecorder(bucket_seconds=...)``; windows sit on its grid); ``max_intervals`` is
    the most analysis intervals one window spans; serving stats older than ``keep_stats``
    are deleted (``RolloutController.prune``).
    """

    settle: timedelta | None = None
    bucket: timedelta = BUCKET
    max_intervals: int = MAX_WINDOW_INTERVALS
    keep_stats: timedelta = DEFAULT_KEEP_STATS

    def checked(self) -> WindowRules:
        """Return the rules with ``settle`` filled in, when every value is in range.

        Raises:
            InvalidArgumentError: when ``settle`` is negative or longer than an hour,
                ``bucket`` is not from 1 second to 1 hour, ``max_intervals`` not from 1 to
                1,000, or ``keep_stats`` shorter than an hour.
        """
        settle = DEFAULT_SETTLE if self.settle is None else self.settle
        if not timedelta(0) <= settle <= MAX_SETTLE:
            raise InvalidArgumentError("settle", "must be from 0 to 1 hour")
        if not timedelta(seconds=1) <= self.bucket <= MAX_SETTLE:
            raise InvalidArgumentError("bucket", "must be from 1 second to 1 hour")
        if isinstance(self.max_intervals, bool) or not 1 <= self.max_intervals <= 1000:
            raise InvalidArgumentError("max_intervals", f"{self.max_intervals!r} must be "
                                                        "from 1 to 1,000")
        if self.keep_stats < PRUNE_EVERY:
            raise InvalidArgumentError("keep_stats", "must be at least an hour")
        return replace(self, settle=settle)


class RolloutController:
    """Judges the canaries of rolling-out deployments on the injected clock (see ``WindowRules``).

    Raises:
        InvalidArgumentError: when ``rules`` holds a value out of range.
    """

    def __init__(self, store: MetadataStore, deployments: DeploymentControl,
                 clock: Clock | None = None, rules: WindowRules | None = None) -> None:
        checked = (rules or WindowRules()).checked()
        self._settle: timedelta = checked.settle or timedelta(0)
        self._bucket = checked.bucket
        self._max_intervals = checked.max_intervals
        self._keep_stats = checked.keep_stats
        self._pruned_at: datetime | None = None
        self._store = store
        self._deployments = deployments
        self._clock: Clock = clock or store.clock
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
        self.prune(now)
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

    def prune(self, now: datetime, force: bool = False) -> int:
        """Delete serving stats older than ``keep_stats``, at most once an hour unless forced.

        A rolling-out deployment keeps at least the longest window it can be judged over.
        Returns how many rows went; a failure is logged and retried on the next tick.
        """
        if not force and self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return 0
        self._pruned_at = now
        deleted = 0
        for deployment in self._deployments.list():
            keep = self._keep_stats
            if deployment.canary is not None:
                span = self._max_intervals * self._length(deployment.canary.analysis)
                keep = max(keep, span + self._settle + self._bucket)
            try:
                deleted += prune_stats(self._store, deployment.name, now - keep)
            except LooplineError as exc:
                self._pruned_at = None
                log.warning("serving stats of %s not pruned: %s", deployment.name,
                            exc.message)
        return deleted

    def _length(self, policy: AnalysisPolicy) -> timedelta:
        """Return the policy's interval rounded up to whole buckets."""
        return self._bucket * max(1, -(-policy.interval // self._bucket))

    def window_of(self, deployment: Deployment, now: datetime,
                  ) -> tuple[datetime, datetime] | None:
        """Return the deployment's window to judge at ``now`` (None: none is due yet).

        See the module docstring: whole buckets, from the latest decisive verdict's end (or
        the step's first bucket boundary) but at most ``max_intervals`` intervals long,
        ending ``settle`` or more before ``now``.

        Raises:
            BackendError: when the database fails.
        """
        if deployment.canary is None or deployment.step_started_at is None:
            return None
        bucket = self._bucket
        length = self._length(deployment.canary.analysis)
        start = deployment.step_started_at
        decisive = latest_verdict_end(self._store.engine, deployment.name, DECISIVE)
        if decisive is not None and decisive > start:
            start = decisive
        start = grid_ceil(start, bucket)
        whole = (now - self._settle - start) // length
        if whole < 1:
            return None
        end = start + whole * length
        start = max(start, end - self._max_intervals * length)
        judged = latest_verdict_end(self._store.engine, deployment.name)
        if judged is not None and judged >= end:
            return None  # judged already (inconclusive): wait for the window to grow
        return start, end

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
