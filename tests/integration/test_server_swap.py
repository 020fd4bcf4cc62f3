"""Swapping a deployment's primary under steady load: no request fails, and every answer
comes wholly from one of the two versions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serving_support import (
    RunningServer,
    SlowLoader,
    deploy,
    make_workspace,
    primary,
    record,
    register_constant,
    running,
)

from loopline.app import Workspace
from loopline.core.models import ModelVersion

CLIENTS = 4
SWAPS = 4
SWAP_PAUSE = 0.25
MAX_SECONDS = 30.0


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A workspace with a constant-0 and a constant-1 version of one model."""
    workspace = make_workspace(tmp_path_factory.mktemp("swap"))
    try:
        register_constant(workspace, "const", 0.0)
        register_constant(workspace, "const", 1.0)
        yield workspace
    finally:
        workspace.close()


def _load(server: RunningServer, deployment: str, stop: threading.Event,
          answers: list[tuple[int, str, Any]], errors: list[Exception]) -> None:
    """Send requests one after another until ``stop``, keeping (status, version, answer)."""
    try:
        with server.client() as client:
            while not stop.is_set():
                response = client.post(f"/predict/{deployment}", json={"records": [record()]})
                body = response.json()
                answers.append((response.status_code, response.headers["x-model-version"],
                                body.get("predictions")))
    except (httpx.HTTPError, ValueError) as exc:  # a dropped connection, a non-JSON answer
        errors.append(exc)


def _wait_for(server: RunningServer, deployment: str, uri: str) -> None:
    deadline = time.monotonic() + 10
    with server.client() as client:
        while client.post(f"/predict/{deployment}", json={"records": [record()]}
                          ).headers.get("x-model-version") != uri:
            assert time.monotonic() < deadline, f"{uri} never answered"
            time.sleep(0.02)


@pytest.mark.parametrize("batch_rows", [0, 16], ids=["inline", "micro-batched"])
def test_swapping_the_primary_under_load_loses_no_request(ws: Workspace,
                                                          batch_rows: int) -> None:
    zero, one = ws.models.versions("const")
    name = f"swap-{batch_rows}"
    deploy(ws, name, [primary(zero)])
    expected: dict[str, float] = {zero.uri: 0.0, one.uri: 1.0}
    answers: list[tuple[int, str, Any]] = []
    errors: list[Exception] = []
    stop = threading.Event()
    with running(ws, deployments=[name], batch_max_rows=batch_rows) as server:
        threads = [threading.Thread(target=_load, args=(server, name, stop, answers, errors))
                   for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            versions: list[ModelVersion] = [one, zero] * (SWAPS // 2)
            for target in versions:
                time.sleep(SWAP_PAUSE)
                ws.deployments.update(name, [primary(target)], reason="swap under load")
                _wait_for(server, name, target.uri)
            time.sleep(SWAP_PAUSE)
        finally:
            stop.set()
            for thread in threads:
                thread.join(MAX_SECONDS)
        assert time.monotonic() - started < MAX_SECONDS
    assert not errors, errors
    assert len(answers) > 50
    assert {status for status, _, _ in answers} == {200}
    for _, version, predictions in answers:
        assert predictions == [expected[version]], (version, predictions)
    assert {version for _, version, _ in answers} == set(expected)


def test_shutdown_drops_readiness_first_finishes_in_flight_requests_and_flushes_the_log(
        ws: Workspace) -> None:
    zero = ws.models.versions("const")[0]
    deploy(ws, "draining", [primary(zero)])
    results: list[httpx.Response] = []
    # batch_max_rows=1: each request scored alone in the worker thread, so the event loop
    # answers readiness while the slow prediction runs
    slow = SlowLoader(ws.models, {(zero.name, zero.version): 0.6})
    with running(ws, deployments=["draining"], loader=slow, batch_max_rows=1,
                 drain_seconds=0.3) as server:

        def slow_request() -> None:
            with server.client() as client:
                results.append(client.post("/predict/draining", json={"records": [record()]},
                                           headers={"X-Request-Id": "in-flight-1"}))

        in_flight = threading.Thread(target=slow_request)
        in_flight.start()
        time.sleep(0.15)  # the request is being scored now
        server.server.begin_shutdown()
        with server.client() as client:
            assert client.get("/v2/health/ready").status_code == 503
        in_flight.join(10)
    assert [r.status_code for r in results] == [200]
    rows = ws.predictions.read().to_pylist()  # no waiting: shutdown flushed the log
    assert "in-flight-1" in {row["request_id"] for row in rows}


def _threads(prefix: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(prefix))


@pytest.mark.parametrize("batch_max_rows", [0, 8])
def test_replacing_the_version_six_times_keeps_only_the_live_workers(
        ws: Workspace, batch_max_rows: int) -> None:
    deploy(ws, f"churn-{batch_max_rows}", [primary(ws.models.versions("const")[0])])
    versions = [register_constant(ws, f"churn{batch_max_rows}", float(i)) for i in range(6)]
    prefix = "loopline-batch" if batch_max_rows else "loopline-predict"
    before = _threads(prefix)
    with running(ws, deployments=[f"churn-{batch_max_rows}"],
                 batch_max_rows=batch_max_rows) as server:
        scoring = server.app.state.serving.scoring
        for version in versions:
            ws.deployments.replace(f"churn-{batch_max_rows}", version.name, version.version)
            _wait_for(server, f"churn-{batch_max_rows}", version.uri)
        deadline = time.monotonic() + 5
        while (scoring.runners != (versions[-1].uri,) or _threads(prefix) > before + 1) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert scoring.runners == (versions[-1].uri,)
        assert _threads(prefix) <= before + 1
