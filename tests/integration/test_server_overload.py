"""Overload and slow models: the event loop never waits on ``predict``, shadows never delay
an answer, and a full queue refuses at once with 503 instead of growing without end."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from serving_support import (
    SlowLoader,
    deploy,
    make_workspace,
    primary,
    record,
    register_constant,
    running,
)

from loopline.app import Workspace
from loopline.core.deployments import Route, RouteRole, Strategy
from loopline.data.prediction_writer import WriterOptions

FAST_LOG = WriterOptions(max_age=timedelta(milliseconds=50), poll_interval=0.01)
SHADOW_SECONDS = 0.3
FAST = 0.15


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A workspace with two constant versions, the second mirrored as a shadow."""
    workspace = make_workspace(tmp_path_factory.mktemp("overload"))
    try:
        one = register_constant(workspace, "const", 1.0)
        two = register_constant(workspace, "const", 2.0)
        deploy(workspace, "mirrored", [primary(one), Route("const", two.version, 100.0,
                                                           RouteRole.SHADOW)],
               Strategy.SHADOW)
        deploy(workspace, "busy", [primary(one)])
        yield workspace
    finally:
        workspace.close()


def _timed(call: object) -> float:
    started = time.perf_counter()
    response = call()  # type: ignore[operator]
    assert response.status_code == 200
    return time.perf_counter() - started


def test_a_slow_shadow_delays_neither_the_primary_nor_liveness(ws: Workspace) -> None:
    loader = SlowLoader(ws.models, {("const", 2): SHADOW_SECONDS})
    with running(ws, deployments=["mirrored"], loader=loader,
                 writer_options=FAST_LOG) as server, server.client() as client:
        rids = [f"mirror-{i}" for i in range(6)]
        primary_seconds = [_timed(lambda rid=rid: client.post(
            "/predict/mirrored", json=[record()], headers={"X-Request-Id": rid}))
            for rid in rids]
        live_seconds = [_timed(lambda: client.get("/v2/health/live")) for _ in range(6)]
        assert statistics.median(primary_seconds) < FAST, primary_seconds
        assert statistics.median(live_seconds) < FAST, live_seconds
        deadline = time.monotonic() + 10
        while True:  # the shadows still run, off the request path, and are logged
            logged = {(row["request_id"], row["model_version"])
                      for row in ws.predictions.read().to_pylist()}
            if ("mirror-0", "const.v2") in logged or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ("mirror-0", "const.v2") in logged and ("mirror-0", "const.v1") in logged


@pytest.mark.parametrize("batch_max_rows", [0, 1])
def test_a_full_queue_refuses_at_once_with_503_and_the_rest_are_answered(
        ws: Workspace, batch_max_rows: int) -> None:
    loader = SlowLoader(ws.models, {("const", 1): 0.05})
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with running(ws, deployments=["busy"], loader=loader, max_queue_rows=8,
                 batch_max_rows=batch_max_rows) as server, \
            server.client(timeout=30, limits=limits) as shared:

        def one(_: int) -> tuple[int, float, httpx.Response]:
            started = time.perf_counter()
            response = shared.post("/predict/busy", json=[record()])
            return response.status_code, time.perf_counter() - started, response

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(400)))
        codes = [code for code, _, _ in results]
        assert set(codes) == {200, 503}, codes
        refused = [(seconds, r) for code, seconds, r in results if code == 503]
        assert statistics.median(seconds for seconds, _ in refused) < FAST
        sample = refused[0][1]
        assert sample.headers["retry-after"] == "1"
        assert sample.json()["error"]["field"] == "max_queue_rows"
        assert "8" in sample.json()["error"]["problem"]
        with server.client() as client:
            assert client.get("/v2/health/ready").status_code == 200
            assert client.post("/predict/busy", json=[record()]).status_code == 200
            assert server.app.state.serving.scoring.rows_in_flight == 0


def test_max_queue_rows_out_of_range_is_refused_naming_it(ws: Workspace) -> None:
    from loopline.core.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="max_queue_rows"):
        ws.serving_config(max_queue_rows=0)
