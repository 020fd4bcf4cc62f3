"""Overload and slow models: the event loop never waits on ``predict``, shadows never delay
an answer, and a full queue refuses at once with 503 instead of growing without end.

"At once" is shown without timing: the models here wait on a gate the test holds closed, so
whatever is answered before the gate opens did not wait for a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from serving_support import (
    GatedLoader,
    deploy,
    make_workspace,
    primary,
    record,
    register_constant,
    running,
    wait_until,
)

from loopline.app import Workspace
from loopline.core.deployments import Route, RouteRole, Strategy
from loopline.data.prediction_writer import WriterOptions

FAST_LOG = WriterOptions(max_age=timedelta(milliseconds=50), poll_interval=0.01)
QUEUE_ROWS = 8


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


def _logged(ws: Workspace) -> set[tuple[str, str]]:
    return {(row["request_id"], row["model_version"]) for row in ws.predictions.read().to_pylist()}


def test_a_stuck_shadow_delays_neither_the_primary_nor_liveness(ws: Workspace) -> None:
    loader = GatedLoader(ws.models, {("const", 2)})
    with running(ws, deployments=["mirrored"], loader=loader,
                 writer_options=FAST_LOG) as server, server.client() as client:
        try:
            for i in range(6):  # the shadow of the first is stuck at the gate meanwhile
                answer = client.post("/predict/mirrored", json=[record()],
                                     headers={"X-Request-Id": f"mirror-{i}"})
                assert answer.status_code == 200, answer.text
                assert answer.json()["predictions"] == [1.0]
            assert client.get("/v2/health/live").status_code == 200
            assert client.get("/v2/health/ready").status_code == 200
            wait_until(lambda: ("mirror-5", "const.v1") in _logged(ws),
                       "the primary's answers being logged")
            assert ("mirror-0", "const.v2") not in _logged(ws)  # the shadow is still stuck
        finally:
            loader.gate.set()
        wait_until(lambda: ("mirror-0", "const.v2") in _logged(ws),
                   "the shadow's outputs being logged once it could run")


@pytest.mark.parametrize("batch_max_rows", [0, 1])
def test_a_full_queue_refuses_at_once_with_503_and_the_rest_are_answered(
        ws: Workspace, batch_max_rows: int) -> None:
    loader = GatedLoader(ws.models, {("const", 1)})
    limits = httpx.Limits(max_connections=QUEUE_ROWS, max_keepalive_connections=QUEUE_ROWS)
    with running(ws, deployments=["busy"], loader=loader, max_queue_rows=QUEUE_ROWS,
                 batch_max_rows=batch_max_rows) as server, \
            server.client(timeout=60, limits=limits) as shared, \
            ThreadPoolExecutor(QUEUE_ROWS) as pool:
        scoring = server.app.state.serving.scoring
        try:
            held = [pool.submit(shared.post, "/predict/busy", json=[record()])
                    for _ in range(QUEUE_ROWS)]
            wait_until(lambda: scoring.rows_in_flight == QUEUE_ROWS, "the queue filling up")
            with server.client() as client:
                refused = [client.post("/predict/busy", json=[record()]) for _ in range(5)]
                assert client.get("/v2/health/live").status_code == 200
            assert not any(future.done() for future in held)  # still at the gate
        finally:
            loader.gate.set()
        assert [future.result().status_code for future in held] == [200] * QUEUE_ROWS
        assert [r.status_code for r in refused] == [503] * 5
        sample = refused[0]
        assert sample.headers["retry-after"] == "1"
        assert sample.json()["error"]["field"] == "max_queue_rows"
        assert str(QUEUE_ROWS) in sample.json()["error"]["problem"]
        with server.client() as client:
            assert client.get("/v2/health/ready").status_code == 200
            assert client.post("/predict/busy", json=[record()]).status_code == 200
            assert scoring.rows_in_flight == 0


def test_max_queue_rows_out_of_range_is_refused_naming_it(ws: Workspace) -> None:
    from loopline.core.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="max_queue_rows"):
        ws.serving_config(max_queue_rows=0)
