"""Helpers for the model-server tests: constant models, a workspace, a real uvicorn server.

A server runs ``loopline.serving`` on uvicorn (uvloop, httptools) in a thread, bound to a
free 127.0.0.1 port, and stops through ``should_exit`` (the graceful path: in-flight
requests finish, the lifespan flushes the prediction log).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from sklearn.dummy import DummyRegressor

from loopline.app import Workspace
from loopline.core.deployments import Route, RouteRole, Strategy
from loopline.core.models import ModelVersion
from loopline.serving.app import create_app
from loopline.serving.server import ServerOptions, ThreadedServer

START_TIMEOUT = 20.0
GATE_SECONDS = 60.0  # bounds a broken test; a passing one opens its gate at once

TRAINING = pd.DataFrame({
    "x": [0.0, 2.5, 5.0, 7.5, 10.0, 1.0],
    "n": [1, 2, 3, 4, 5, 6],
    "color": ["red", "blue", "red", "blue", "red", "blue"],
})


def register_constant(ws: Workspace, name: str, value: float) -> ModelVersion:
    """Register a model that predicts ``value`` for every row, with TRAINING's signature."""
    model = DummyRegressor(strategy="constant", constant=value).fit(
        TRAINING, [value] * len(TRAINING))
    return ws.models.register(model, name, input_example=TRAINING)


def primary(version: ModelVersion) -> Route:
    """Return a 100 % primary route to ``version``."""
    return Route(version.name, version.version, 100.0, RouteRole.PRIMARY)


def deploy(ws: Workspace, name: str, routes: Sequence[Route],
           strategy: Strategy = Strategy.REPLACE, sticky_key: str | None = None) -> None:
    """Create deployment ``name`` with ``routes``."""
    ws.deployments.create(name, routes, strategy, sticky_key=sticky_key)


def record(x: float = 1.0, n: int = 2, color: str = "red") -> dict[str, Any]:
    """Return one valid input row."""
    return {"x": x, "n": n, "color": color}


class SlowModel:
    """A served model whose ``predict`` first sleeps ``seconds``."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds
        self.uri = inner.uri
        self.input_names = inner.input_names
        self.input_types = inner.input_types
        self.output_type = inner.output_type
        self.batchable = inner.batchable

    def check(self, batch: Any) -> Any:
        return self._inner.check(batch)

    def predict(self, batch: Any) -> Any:
        time.sleep(self._seconds)
        return self._inner.predict(batch)


class SlowLoader:
    """A loader whose versions in ``delays`` ((name, version) -> seconds) predict slowly."""

    def __init__(self, inner: Any, delays: dict[tuple[str, int], float]) -> None:
        self._inner = inner
        self._delays = delays

    def servable(self, name: str, version: int) -> Any:
        model = self._inner.servable(name, version)
        delay = self._delays.get((name, version))
        return SlowModel(model, delay) if delay else model


class GatedModel(SlowModel):
    """A served model whose ``predict`` waits until ``gate`` opens (at most GATE_SECONDS).

    Tests hold the gate closed to show what the server does while a model is busy, with no
    timing assumptions: what answers while the gate is closed did not wait for the model.
    """

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        super().__init__(inner, 0.0)
        self._gate = gate

    def predict(self, batch: Any) -> Any:
        if not self._gate.wait(GATE_SECONDS):
            raise AssertionError(f"the test's gate stayed closed for {GATE_SECONDS:g} s")
        return self._inner.predict(batch)


class GatedLoader:
    """A loader whose versions in ``gated`` ((name, version)) predict only once ``gate`` opens."""

    def __init__(self, inner: Any, gated: set[tuple[str, int]]) -> None:
        self._inner = inner
        self._gated = gated
        self.gate = threading.Event()

    def servable(self, name: str, version: int) -> Any:
        model = self._inner.servable(name, version)
        return GatedModel(model, self.gate) if (name, version) in self._gated else model


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)


class RunningServer:
    """A started server: its base URL, its app and a way to stop it."""

    def __init__(self, threaded: ThreadedServer, app: Any) -> None:
        self._threaded = threaded
        self.server = threaded.server
        self.url = threaded.url
        self.app = app

    def client(self, **options: Any) -> httpx.Client:
        """Return an httpx client for this server (close it after use)."""
        return httpx.Client(base_url=self.url, timeout=options.pop("timeout", 10.0), **options)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until readiness answers 200."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if client.get("/v2/health/ready").status_code == 200:
                    return
                time.sleep(0.02)
        raise AssertionError("the server did not become ready in time")

    def stop(self) -> None:
        """Stop gracefully and wait for the thread."""
        self._threaded.stop()
        assert not self._threaded.alive, "the server did not stop"


@contextmanager
def running(ws: Workspace, wait_ready: bool = True, loader: Any = None,
            drain_seconds: float = 0.0, **options: Any) -> Iterator[RunningServer]:
    """Run the model server over ``ws`` (``options`` go to ``ws.serving_config``)."""
    options.setdefault("poll_seconds", 0.05)
    config = ws.serving_config(**options)
    if loader is not None:
        config = dataclasses.replace(config, loader=loader)
    app = create_app(config)
    handle = RunningServer(ThreadedServer(app, ServerOptions(graceful_timeout=10,
                                                        drain_seconds=drain_seconds),
                                          START_TIMEOUT), app)
    try:
        if wait_ready:
            handle.wait_ready()
        yield handle
    finally:
        handle.stop()


def make_workspace(root: Path) -> Workspace:
    """Return a new SQLite workspace in ``root``."""
    return Workspace.init(root / "ws", overrides={"db_url": f"sqlite:///{root / 'meta.db'}"})
