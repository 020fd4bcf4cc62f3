"""The closed loop's load generator for ``loopline demo``: requests, labels, and the waits.

One ``round`` sends the settings' requests to the real server over loopback HTTP, one at a
time (bounded: never more than one in flight), moving the demo's clock forward between them
so their timestamps spread over the round; then it posts the labels of most of them to
``POST /feedback``, as a team's ground truth would arrive. The customers come from
``demo_loop_data.customers`` with a seed per round, shifted once the shift has started.

The clock is a ``ManualClock``: simulated minutes pass in a fraction of a real second. The
server's background work keeps real time, so before the scheduler looks at what was served
the demo waits (a few seconds at most) for it to land: the round's prediction-log segment,
the serving stats of a canary window that is due, and the routing table after a
deployment change. A real deployment gets the same guarantee from time itself (the
rollout controller's settle period is longer than the stats flush period).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import numpy as np

from loopline.app import Workspace
from loopline.cli.demo_loop_config import DEPLOYMENT, LoopSettings
from loopline.cli.demo_loop_data import FEATURES, LABEL, customers
from loopline.core.clock import ManualClock
from loopline.core.predictions import PredictionWindow
from loopline.monitoring.health import health

WAIT_SECONDS = 30.0
_SWAPS = re.compile(r"^loopline_table_swaps_total\s+([0-9.eE+]+)$", re.MULTILINE)


class DemoStalled(RuntimeError):
    """Something the demo waits for did not happen in time (the server is unwell)."""


def wait_for(what: str, ready: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    """Poll ``ready`` until it is true.

    Raises:
        DemoStalled: naming ``what`` when ``seconds`` pass first.
    """
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise DemoStalled(f"gave up waiting for {what} after {seconds:g} s")
        time.sleep(0.05)


@dataclass(slots=True)
class RoundReport:
    """What one round sent and got back."""

    start: datetime
    end: datetime
    requests: int = 0
    errors: int = 0
    labelled: int = 0
    by_version: Counter[str] = field(default_factory=Counter)


class LoadGenerator:
    """Sends the loop's traffic and labels (see the module docstring)."""

    def __init__(self, client: httpx.Client, clock: ManualClock, settings: LoopSettings
                 ) -> None:
        self._client = client
        self._clock = clock
        self._settings = settings
        self._choices = np.random.default_rng(settings.seed)
        self.answered = 0  # requests answered so far, errors included

    def round(self, index: int, shifted: bool) -> RoundReport:
        """Send one round's requests and labels; return what happened."""
        settings = self._settings
        frame = customers(settings.requests * settings.rows, settings.seed + index, shifted)
        report = RoundReport(self._clock.now(), self._clock.now() + settings.round)
        labels = []
        for number in range(settings.requests):
            chunk = frame.iloc[number * settings.rows:(number + 1) * settings.rows]
            response = self._client.post(f"/predict/{DEPLOYMENT}", json={
                "records": chunk[list(FEATURES)].to_dict("records")})
            report.requests += 1
            if response.status_code != 200:
                report.errors += 1
            else:
                report.by_version[response.headers.get("x-model-version", "?")] += 1
                if self._choices.random() < settings.label_share:
                    labels.append({"request_id": response.json()["request_id"],
                                   "label": chunk[LABEL].tolist()})
            # to the request's place in the round, so the round ends exactly on its grid
            due = report.start + settings.round * (number + 1) / settings.requests
            self._clock.advance(due - self._clock.now())
        self.answered += report.requests
        if labels:
            answer = self._client.post("/feedback", json=labels)
            answer.raise_for_status()
            report.labelled = len(labels)
        return report

    def table_swaps(self) -> float:
        """Return how many routing tables the server has swapped in."""
        found = _SWAPS.search(self._client.get("/metrics").text)
        return float(found.group(1)) if found else 0.0


def wait_for_log(workspace: Workspace, report: RoundReport) -> None:
    """Wait until the round's answered requests are in the prediction log."""
    window = PredictionWindow(deployment=DEPLOYMENT, start=report.start, end=report.end)
    wanted = report.requests - report.errors
    wait_for("the round's predictions in the log",
             lambda: workspace.predictions.read(window).num_rows >= wanted)


def wait_for_stats(workspace: Workspace, since: datetime, answered: int) -> None:
    """Wait until the serving stats since ``since`` count every request answered since."""
    def counted() -> bool:
        end = workspace.store.clock.now() + timedelta(minutes=1)
        return health(workspace.store, DEPLOYMENT, None, since, end).overall.requests \
            >= answered

    wait_for("the serving stats of the canary window", counted)
