"""A canary on a real model server: a canary failing every request rolls back by itself.

The server (uvicorn in a thread) runs over a workspace on a ManualClock: its stats recorder
takes the store's clock, so requests land in the buckets the test's clock says. Each
simulated 10-second bucket the test sends requests, advances the clock, flushes the server's
stats and ticks the rollout controller, which judges the canary on what the server counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from serving_support import (
    RunningServer,
    deploy,
    primary,
    record,
    register_constant,
    running,
)

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import (
    AnalysisPolicy,
    CanaryPlan,
    DeploymentState,
    RolloutVerdict,
    RouteRole,
)
from loopline.core.ports import ModelLoader, ServableModel
from loopline.loop.rollout import DEFAULT_SETTLE, FAIL, RolloutController

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # on the 10-second bucket grid
BUCKET = timedelta(seconds=10)
INTERVAL = timedelta(seconds=20)
PER_BUCKET = 30
PLAN = CanaryPlan((50.0, 100.0), AnalysisPolicy(interval=INTERVAL, min_samples=20,
                                                failures_to_rollback=1))


class _Broken:
    """A servable whose ``predict`` raises on every call; everything else is the real one's."""

    def __init__(self, model: ServableModel) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, batch: Any) -> Any:
        raise RuntimeError(f"{self._model.uri} is broken")


class _BreakingLoader:
    """Loads through the registry, but the versions in ``broken`` fail every prediction."""

    def __init__(self, loader: ModelLoader, broken: set[str]) -> None:
        self._loader = loader
        self._broken = broken

    def servable(self, name: str, version: int) -> ServableModel:
        model = self._loader.servable(name, version)
        return _Broken(model) if model.uri in self._broken else model  # type: ignore[return-value]


@pytest.fixture
def clocked_ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "ws", clock=ManualClock(T0), overrides={
        "db_url": f"sqlite:///{tmp_path / 'meta.db'}"})
    try:
        yield workspace
    finally:
        workspace.close()


def _flush_stats(server: RunningServer) -> None:
    """Write what the server counted so far (the recorder flushes every 5 s by itself)."""
    recorder = server.app.state.serving._stats  # no public handle on the recorder yet
    assert recorder is not None, "the server records no stats"
    assert recorder.flush()


def _wait_for_only(server: RunningServer, uri: str) -> None:
    """Wait until the server has swapped in a table where only ``uri`` answers."""
    deadline = time.monotonic() + 5
    with server.client() as client:
        while True:
            answers = {client.post("/predict/churn", json={"records": [record()]}
                                   ).headers["x-model-version"] for _ in range(20)}
            if answers == {uri}:
                return
            assert time.monotonic() < deadline, f"still answered by {answers}"
            time.sleep(0.05)


def _bucket(server: RunningServer, clock: ManualClock) -> dict[str, list[int]]:
    """Send PER_BUCKET requests; return the status codes per answering version."""
    statuses: dict[str, list[int]] = {}
    with server.client() as client:
        for _ in range(PER_BUCKET):
            response = client.post("/predict/churn", json={"records": [record()]})
            statuses.setdefault(response.headers["x-model-version"], []).append(
                response.status_code)
    return statuses


def test_a_canary_failing_every_request_on_a_real_server_is_rolled_back_by_itself(
        clocked_ws: Workspace) -> None:
    ws = clocked_ws
    clock = ws.store.clock
    assert isinstance(clock, ManualClock)
    stable = register_constant(ws, "churn", 0.0)
    canary = register_constant(ws, "churn", 1.0)
    deploy(ws, "churn", [primary(stable)])
    ws.deployments.start_canary("churn", ("churn", canary.version), PLAN)
    controller = RolloutController(ws.store, ws.deployments, clock)
    loader = _BreakingLoader(ws.models, {canary.uri})
    seen: list[tuple[datetime, RolloutVerdict]] = []
    served: dict[str, list[int]] = {}
    with running(ws, loader=loader, deployments=["churn"]) as server:
        while ws.deployments.get("churn").state is DeploymentState.ROLLING_OUT:
            assert clock.now() < T0 + 4 * INTERVAL, "the canary was never judged"
            for uri, statuses in _bucket(server, clock).items():
                served.setdefault(uri, []).extend(statuses)
            now = clock.advance(BUCKET)
            _flush_stats(server)
            seen += [(now, verdict) for verdict in controller.tick()]
        _wait_for_only(server, stable.uri)  # the server swaps back within a poll
        after = _bucket(server, clock)

    assert set(served[canary.uri]) == {500}
    assert set(served[stable.uri]) == {200}
    [(judged_at, verdict)] = seen
    assert verdict.verdict == FAIL
    assert (verdict.window_start, verdict.window_end) == (T0, T0 + INTERVAL)
    assert judged_at - verdict.window_end < DEFAULT_SETTLE + BUCKET
    numbers = verdict.numbers
    assert numbers["canary"]["model_version"] == canary.uri
    assert numbers["canary"]["error_rate"] == 1.0
    assert numbers["canary"]["requests"] == numbers["canary"]["errors"] > 0
    assert numbers["primary"]["error_rate"] == 0.0
    assert numbers["canary"]["requests"] + numbers["primary"]["requests"] == \
        2 * PER_BUCKET  # two whole buckets of what the server answered
    assert "canary_errors_at_min_samples" in numbers["decided_by"]  # errors decided it
    early = next(c for c in numbers["checks"] if c["name"] == "canary_errors_at_min_samples")
    assert (early["observed"], early["passed"]) == (numbers["canary"]["errors"], False)
    deployment = ws.deployments.get("churn")
    assert deployment.state is DeploymentState.ROLLED_BACK
    assert [(r.uri, r.weight, r.role) for r in deployment.routes] == \
        [(stable.uri, 100.0, RouteRole.PRIMARY)]
    [stored] = ws.deployments.verdicts("churn")
    assert stored.numbers["canary"] == numbers["canary"]
    assert after == {stable.uri: [200] * PER_BUCKET}
