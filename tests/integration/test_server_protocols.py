"""The model server end to end on a real uvicorn server: V2, MLflow, native, shadows, A/B,
feedback, metrics and readiness."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from serving_support import (
    RunningServer,
    deploy,
    make_workspace,
    primary,
    record,
    register_constant,
    running,
)

from loopline.app import Workspace
from loopline.core.deployments import Route, RouteRole, Strategy
from loopline.core.models import ModelVersion
from loopline.core.predictions import PredictionWindow
from loopline.data.prediction_log import ReadOptions
from loopline.data.prediction_writer import WriterOptions

FAST_LOG = WriterOptions(max_age=timedelta(milliseconds=50), poll_interval=0.01)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One workspace with two constant models (0 and 1) and a few deployments."""
    workspace = make_workspace(tmp_path_factory.mktemp("serving"))
    try:
        zero = register_constant(workspace, "const", 0.0)
        one = register_constant(workspace, "const", 1.0)
        deploy(workspace, "main", [primary(zero)])
        deploy(workspace, "mirrored", [primary(zero), Route("const", one.version, 100.0,
                                                            RouteRole.SHADOW)],
               Strategy.SHADOW)
        deploy(workspace, "split", [Route("const", zero.version, 50.0),
                                    Route("const", one.version, 50.0, RouteRole.CANARY)],
               Strategy.AB, sticky_key="header:x-user")
        deploy(workspace, "split-field", [Route("const", zero.version, 50.0),
                                          Route("const", one.version, 50.0, RouteRole.CANARY)],
               Strategy.AB, sticky_key="field:user")
        yield workspace
    finally:
        workspace.close()


@pytest.fixture(scope="module")
def versions(ws: Workspace) -> tuple[ModelVersion, ModelVersion]:
    """The constant-0 and constant-1 versions."""
    zero, one = ws.models.versions("const")
    return zero, one


@pytest.fixture(scope="module")
def server(ws: Workspace) -> Iterator[RunningServer]:
    """One server for the whole module."""
    with running(ws, writer_options=FAST_LOG) as started:
        yield started


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """A client of the module's server."""
    with server.client() as opened:
        yield opened


def _has_ids(response: httpx.Response) -> None:
    assert response.headers["x-request-id"]
    assert response.headers["x-model-version"]


def _logged(ws: Workspace, request_id: str, rows: int = 1, feedback: bool = False,
            timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait until the prediction log holds ``rows`` rows of ``request_id``."""
    deadline = time.monotonic() + timeout
    while True:
        table = ws.predictions.read(PredictionWindow(), ReadOptions(with_feedback=feedback))
        found = [row for row in table.to_pylist() if row["request_id"] == request_id]
        if len(found) >= rows and (not feedback or all(r["label"] for r in found)):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{request_id}: {found}")
        time.sleep(0.05)


# -- V2 ----------------------------------------------------------------------------------------

def test_v2_health_and_server_metadata_answer_when_ready(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert "main" in ready.json()["deployments"]
    assert client.get("/v2").json()["name"] == "loopline"


def test_v2_model_metadata_lists_the_signature_inputs(
        client: httpx.Client, versions: tuple[ModelVersion, ModelVersion]) -> None:
    response = client.get("/v2/models/main")
    assert response.status_code == 200
    body = response.json()
    assert body["versions"] == [versions[0].uri]
    assert [(i["name"], i["datatype"]) for i in body["inputs"]] == [
        ("x", "FP64"), ("n", "INT64"), ("color", "BYTES")]
    assert response.headers["x-model-version"] == versions[0].uri


def test_v2_model_ready_is_404_for_an_unknown_deployment(client: httpx.Client) -> None:
    assert client.get("/v2/models/main/ready").json() == {"name": "main", "ready": True}
    missing = client.get("/v2/models/nothing/ready")
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "deployment"
    _has_ids(missing)


def test_v2_infer_with_one_tensor_per_column_answers_the_standard_shape(
        client: httpx.Client, versions: tuple[ModelVersion, ModelVersion]) -> None:
    response = client.post("/v2/models/main/infer", json={"id": "req-v2-1", "inputs": [
        {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
        {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
        {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "main"
    assert body["model_version"] == versions[0].uri
    assert body["id"] == "req-v2-1" == response.headers["x-request-id"]
    assert body["outputs"] == [{"name": "predict", "shape": [2], "datatype": "FP64",
                                "data": [0.0, 0.0]}]


def test_v2_infer_takes_one_2d_tensor_for_a_model_of_numeric_columns(
        ws: Workspace, server: RunningServer, client: httpx.Client) -> None:
    import pandas as pd
    from sklearn.dummy import DummyRegressor

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [3.0, 4.0, 5.0]})
    version = ws.models.register(DummyRegressor(strategy="constant", constant=7.0).fit(
        frame, [7.0] * 3), "numeric", input_example=frame)
    deploy(ws, "numeric", [primary(version)])
    deadline = time.monotonic() + 10
    while client.get("/v2/models/numeric/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = client.post("/v2/models/numeric/infer", json={"inputs": [
        {"name": "input-0", "shape": [3, 2], "datatype": "FP64",
         "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [7.0, 7.0, 7.0]
    wrong = client.post("/v2/models/numeric/infer", json={"inputs": [
        {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "inputs[0].shape"


# -- MLflow ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["x", "n", "color"], "data": [[1.0, 2, "red"],
                                                                  [2.0, 3, "blue"]]}},
    {"dataframe_records": [record(), record(2.0, 3, "blue")]},
    {"instances": [record(), record(2.0, 3, "blue")]},
    {"instances": [[1.0, 2, "red"], [2.0, 3, "blue"]]},
    {"inputs": {"x": [1.0, 2.0], "n": [2, 3], "color": ["red", "blue"]}},
], ids=["dataframe_split", "dataframe_records", "instances-records", "instances-rows",
        "inputs-columns"])
def test_invocations_answers_each_mlflow_format(
        client: httpx.Client, body: dict[str, Any],
        versions: tuple[ModelVersion, ModelVersion]) -> None:
    response = client.post("/invocations", json=body,
                           headers={"X-Loopline-Deployment": "main"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [0.0, 0.0]
    assert response.headers["x-model-version"] == versions[0].uri == \
        response.json()["model_version"]


def test_invocations_without_a_deployment_header_names_the_header_when_several_serve(
        client: httpx.Client) -> None:
    response = client.post("/invocations", json={"dataframe_records": [record()]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "X-Loopline-Deployment"
    _has_ids(response)


# -- native ------------------------------------------------------------------------------------

def test_predict_answers_records_with_the_version_and_the_callers_request_id(
        client: httpx.Client, versions: tuple[ModelVersion, ModelVersion]) -> None:
    response = client.post("/predict/main", json={"records": [record()]},
                           headers={"X-Request-Id": "caller-42"})
    assert response.status_code == 200
    assert response.json() == {"predictions": [0.0], "model_version": versions[0].uri,
                               "request_id": "caller-42"}
    assert response.headers["x-request-id"] == "caller-42"
    as_list = client.post("/predict/main", json=[record(), record()])
    assert as_list.json()["predictions"] == [0.0, 0.0]


def test_prediction_and_feedback_join_in_the_log(ws: Workspace, client: httpx.Client) -> None:
    answered = client.post("/predict/main", json={"records": [record(3.0)]},
                           headers={"X-Request-Id": "joined-1"})
    assert answered.status_code == 200
    labelled = client.post("/feedback", json={"request_id": "joined-1", "label": 1})
    assert labelled.status_code == 200 and labelled.json()["accepted"] == 1
    row = _logged(ws, "joined-1", feedback=True)[0]
    assert row["deployment"] == "main" and row["model_version"] == "const.v1"
    assert orjson.loads(row["inputs"]) == [record(3.0)]
    assert orjson.loads(row["outputs"]) == [0.0]
    assert orjson.loads(row["label"]) == 1


def test_feedback_without_a_request_id_is_refused_naming_it(client: httpx.Client) -> None:
    response = client.post("/feedback", json=[{"label": 1}])
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "feedback[0].request_id"


# -- shadows and A/B ---------------------------------------------------------------------------

def test_a_shadow_answer_is_logged_under_its_version_and_never_returned(
        ws: Workspace, client: httpx.Client,
        versions: tuple[ModelVersion, ModelVersion]) -> None:
    response = client.post("/predict/mirrored", json={"records": [record()]},
                           headers={"X-Request-Id": "mirror-1"})
    assert response.json()["predictions"] == [0.0]
    assert response.headers["x-model-version"] == versions[0].uri
    rows = {row["model_version"]: orjson.loads(row["outputs"])
            for row in _logged(ws, "mirror-1", rows=2)}
    assert rows == {"const.v1": [0.0], "const.v2": [1.0]}


def test_a_sticky_header_always_gets_the_same_version_and_keys_split_evenly(
        client: httpx.Client) -> None:
    def version_for(key: str) -> str:
        answer = client.post("/predict/split", json={"records": [record()]},
                             headers={"x-user": key})
        assert answer.status_code == 200
        prediction = answer.json()["predictions"][0]
        version = answer.headers["x-model-version"]
        assert prediction == (0.0 if version.endswith("/1") else 1.0)  # one version answered
        return version

    assert len({version_for("user-7") for _ in range(10)}) == 1
    seen = [version_for(f"user-{i}") for i in range(300)]
    share = seen.count("models:/const/1") / len(seen)
    assert 0.4 <= share <= 0.6, share


def test_a_sticky_field_assigns_the_same_arm_and_is_not_sent_to_the_model(
        client: httpx.Client) -> None:
    answers = {client.post("/predict/split-field", json={"records": [
        {**record(), "user": "alice"}]}).headers["x-model-version"] for _ in range(8)}
    assert len(answers) == 1


# -- metrics and readiness ---------------------------------------------------------------------

def test_metrics_count_requests_per_deployment_and_version(client: httpx.Client) -> None:
    client.post("/predict/main", json={"records": [record()]})
    text = client.get("/metrics").text
    assert 'loopline_requests_total{code="200",deployment="main",' \
           'model_version="models:/const/1"}' in text
    assert "loopline_request_seconds_bucket" in text
    assert "loopline_prediction_log_dropped" in text


class _SlowLoader:
    """A loader that waits for ``release`` before loading."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()

    def servable(self, name: str, version: int) -> Any:
        self.release.wait(20)
        return self.inner.servable(name, version)


def test_readiness_is_503_until_the_first_routing_table_is_loaded(
        tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    try:
        deploy(workspace, "late", [primary(register_constant(workspace, "late", 0.0))])
        loader = _SlowLoader(workspace.models)
        with running(workspace, wait_ready=False, loader=loader,
                     writer_options=FAST_LOG) as server, server.client() as client:
            assert client.get("/v2/health/live").status_code == 200
            assert client.get("/v2/health/ready").status_code == 503
            early = client.post("/predict/late", json={"records": [record()]})
            assert early.status_code == 503 and early.headers["retry-after"]
            loader.release.set()
            server.wait_ready()
            assert client.post("/predict/late", json={"records": [record()]}).status_code \
                == 200
    finally:
        workspace.close()


# -- the registry's servable models ------------------------------------------------------------

def test_the_registry_serves_checked_versions_and_refuses_quarantined_ones(
        tmp_path: Path) -> None:
    import pandas as pd

    from loopline.core.errors import PolicyDeniedError

    workspace = make_workspace(tmp_path)
    try:
        version = register_constant(workspace, "served", 3.0)
        servable = workspace.models.servable("served", version.version)
        assert servable.uri == version.uri and servable.batchable
        assert servable.input_names == ("x", "n", "color")
        frame = pd.DataFrame([{"n": 1, "x": 1.0, "color": "red"}])  # columns out of order
        assert servable.check(frame) == []
        assert servable.predict(frame).tolist() == [3.0]
        found = servable.check(pd.DataFrame([{"x": 1.0, "color": "green", "z": 1}]))
        assert {(v["column"], v["kind"], v["severity"]) for v in found} == {
            ("n", "missing", "error"), ("z", "extra", "error"),
            ("color", "category", "warning")}
        workspace.models.set_status(version.uri, "quarantined")
        with pytest.raises(PolicyDeniedError, match="quarantined"):
            workspace.models.servable("served", version.version)
    finally:
        workspace.close()


# -- review fixes: bounded metric labels, header names, signature errors, long names -----------

def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_random_deployment_names_do_not_grow_the_metrics(client: httpx.Client) -> None:
    client.post("/predict/warm-up-unknown", json=[record()])  # the fixed "unknown" series
    client.post("/invocations", json={"dataframe_records": [record()]},
                headers={"X-Loopline-Deployment": "warm-up-unknown"})
    before = _series(client.get("/metrics").text)
    for i in range(60):
        assert client.post(f"/predict/random-{i}", json=[record()]).status_code == 404
        assert client.post("/invocations", json={"dataframe_records": [record()]},
                           headers={"X-Loopline-Deployment": f"hdr-{i}"}).status_code == 404
        assert client.post("/invocations", json={"dataframe_records": [record()]},
                           headers={"X-Loopline-Deployment": "z" * 300 + str(i)}
                           ).status_code == 422
    text = client.get("/metrics").text
    assert _series(text) == before
    assert "random-" not in text and "hdr-" not in text and "zzz" not in text
    assert 'deployment="unknown"' in text


def test_an_invalid_deployment_header_is_refused_naming_the_header(
        client: httpx.Client) -> None:
    response = client.post("/invocations", json={"dataframe_records": [record()]},
                           headers={"X-Loopline-Deployment": "no/such name"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "X-Loopline-Deployment"


def test_requests_the_routed_signature_refuses_count_as_errors_of_that_version(
        tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from loopline.store.serving_stats import window_rows

    workspace = make_workspace(tmp_path)
    try:
        version = register_constant(workspace, "strict", 0.0)
        deploy(workspace, "strict", [primary(version)])
        with running(workspace, writer_options=FAST_LOG) as server, \
                server.client() as client:
            for _ in range(3):  # an unseen category: refused by the version's signature
                assert client.post("/predict/strict", json=[record(color="green")]
                                   ).status_code == 422
            for _ in range(2):  # malformed JSON: refused before routing, not the version's
                assert client.post("/predict/strict", content=b"[{",
                                   headers={"content-type": "application/json"}
                                   ).status_code == 400
            assert client.post("/predict/strict", json=[record()]).status_code == 200
        rows = window_rows(workspace.store.engine, "strict", datetime(2000, 1, 1, tzinfo=UTC),
                           datetime(2100, 1, 1, tzinfo=UTC))  # the stats flush at shutdown
        assert (sum(r.requests for r in rows), sum(r.errors for r in rows)) == (4, 3)
    finally:
        workspace.close()


def test_a_long_model_name_still_gets_a_valid_distinct_log_name() -> None:
    from loopline.core.names import validate_name
    from loopline.serving.scoring import log_version

    short = log_version(Route("const", 3, 100.0))
    first = log_version(Route("m" * 127 + "a", 12, 100.0))
    second = log_version(Route("m" * 127 + "b", 12, 100.0))
    assert short == "const.v3"
    assert len(first) <= 128 and validate_name(first) and first.endswith(".v12")
    assert first != second
