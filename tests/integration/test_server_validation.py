"""Every class of bad input gets its 4xx naming the field and the problem, and the server
stays healthy after hundreds of them."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
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

MAX_ROWS = 5
MAX_BYTES = 4096
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server over one deployment, ``main``, with small limits."""
    workspace = make_workspace(tmp_path_factory.mktemp("validation"))
    try:
        deploy(workspace, "main", [primary(register_constant(workspace, "const", 0.0))])
        with running(workspace, max_rows=MAX_ROWS, max_body_bytes=MAX_BYTES) as started:
            yield started
    finally:
        workspace.close()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """A client of the module's server."""
    with server.client() as opened:
        yield opened


def _refused(response: httpx.Response, status: int, field: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["field"] == field, body
    for word in words:
        assert word in body["error"]["problem"], body
    assert body["request_id"] == response.headers["x-request-id"]
    assert "x-model-version" in response.headers


# (name, records, status, field, words in the problem)
BAD_RECORDS: list[tuple[str, list[dict[str, Any]], int, str, tuple[str, ...]]] = [
    ("unknown column", [{**record(), "extra": 1}], 422, "extra", ("not in the model",)),
    ("missing column", [{"x": 1.0, "n": 2}], 422, "color", ("missing",)),
    ("wrong type", [record(x="abc")], 422, "x", ("dtype",)),  # type: ignore[arg-type]
    ("NaN as text", [record(x="NaN")], 422, "x", ("dtype",)),  # type: ignore[arg-type]
    ("null where none was seen", [record(x=None)], 422, "x", ("null",)),  # type: ignore[arg-type]
    ("unseen category", [record(color="green")], 422, "color", ("categories",)),
    ("integer beyond int64", [record(n=2 ** 63)], 422, "n", ("64-bit",)),
    ("integer beyond 64 bits", [record(n=2 ** 70)], 422, "n", ("2**53",)),
    ("whole float beyond 2**53 next to a null", [record(n=2 ** 60 + 1), record(n=None)],  # type: ignore[arg-type]
     422, "n", ("lost digits",)),
    ("too many rows", [record()] * (MAX_ROWS + 1), 413, "records", (str(MAX_ROWS),)),
    ("no rows", [], 422, "records", ("no rows",)),
    ("records naming other columns", [record(), {"x": 1.0, "n": 1, "colour": "red"}], 422,
     "records[1]", ("columns",)),
]


@pytest.mark.parametrize(("records", "status", "field", "words"),
                         [case[1:] for case in BAD_RECORDS], ids=[c[0] for c in BAD_RECORDS])
def test_bad_records_are_refused_naming_the_field(
        client: httpx.Client, records: list[dict[str, Any]], status: int, field: str,
        words: tuple[str, ...]) -> None:
    _refused(client.post("/predict/main", json={"records": records}), status, field, *words)


BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, str, tuple[str, ...]]] = [
    ("malformed JSON", b'{"records": [', JSON, 400, "body", ("not valid JSON",)),
    ("NaN literal", b'{"records": [{"x": NaN, "n": 1, "color": "red"}]}', JSON, 400, "body",
     ("not valid JSON",)),
    ("overflowing number", b'{"records": [{"x": 1e999, "n": 1, "color": "red"}]}', JSON, 400,
     "body", ("infinity",)),
    ("empty body", b"", JSON, 400, "body", ("empty",)),
    ("wrong content type", b'{"records": []}', {"content-type": "text/plain"}, 415,
     "Content-Type", ("application/json",)),
    ("too deep", b"[" * 65 + b"]" * 65, JSON, 422, "body", ("64",)),
    ("too large", b'{"records": "' + b"a" * MAX_BYTES + b'"}', JSON, 413, "body",
     (str(MAX_BYTES),)),
    ("not records", b'{"rows": []}', JSON, 422, "records", ("required",)),
]


@pytest.mark.parametrize(("body", "headers", "status", "field", "words"),
                         [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies_are_refused_naming_the_problem(
        client: httpx.Client, body: bytes, headers: dict[str, str], status: int, field: str,
        words: tuple[str, ...]) -> None:
    _refused(client.post("/predict/main", content=body, headers=headers), status, field,
             *words)


def test_a_chunked_body_over_the_limit_is_refused_while_reading(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"records": "'
        for _ in range(10):
            yield b"a" * 1024
        yield b'"}'

    _refused(client.post("/predict/main", content=chunks(), headers=JSON), 413, "body",
             str(MAX_BYTES))


def test_an_out_of_range_value_is_answered_and_counted(client: httpx.Client) -> None:
    response = client.post("/predict/main", json={"records": [record(x=1000.0)]})
    assert response.status_code == 200
    assert 'loopline_signature_warnings_total{column="x",deployment="main"' in \
        client.get("/metrics").text


BAD_TENSORS: list[tuple[str, dict[str, Any], int, str]] = [
    ("strings for FP64", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64",
                                      "data": ["1.0"]}]}, 422, "inputs[0].data"),
    ("shape and data disagree", {"inputs": [{"name": "x", "shape": [3], "datatype": "FP64",
                                             "data": [1.0]}]}, 422, "inputs[0].data"),
    ("unknown datatype", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP128",
                                      "data": [1.0]}]}, 422, "inputs[0].datatype"),
    ("no inputs", {"inputs": []}, 422, "inputs"),
    ("too many rows", {"inputs": [{"name": "x", "shape": [MAX_ROWS + 1], "datatype": "FP64",
                                   "data": [1.0] * (MAX_ROWS + 1)}]}, 413, "inputs[0].shape"),
    ("missing columns", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64",
                                     "data": [1.0]}]}, 422, "n"),
]


@pytest.mark.parametrize(("body", "status", "field"), [case[1:] for case in BAD_TENSORS],
                         ids=[c[0] for c in BAD_TENSORS])
def test_bad_v2_tensors_are_refused_naming_the_tensor_field(
        client: httpx.Client, body: dict[str, Any], status: int, field: str) -> None:
    _refused(client.post("/v2/models/main/infer", json=body), status, field)


def test_unknown_deployments_models_and_paths_are_404(client: httpx.Client) -> None:
    _refused(client.post("/predict/nothing", json={"records": [record()]}), 404, "deployment")
    _refused(client.post("/v2/models/nothing/infer", json={"inputs": []}), 404, "deployment")
    _refused(client.get("/v2/models/nothing"), 404, "deployment")
    _refused(client.get("/no/such/path"), 404, "path")


def test_mlflow_bodies_without_exactly_one_format_are_refused(client: httpx.Client) -> None:
    _refused(client.post("/invocations", json={"records": [record()]}), 422, "body", "one of")
    _refused(client.post("/invocations", json={"instances": [record()],
                                               "inputs": [record()]}), 422, "body")


def test_the_server_stays_healthy_after_hundreds_of_bad_requests(
        client: httpx.Client) -> None:
    sends: list[Callable[[], httpx.Response]] = []
    for _, records, *_ in BAD_RECORDS:
        sends.append(partial(client.post, "/predict/main", json={"records": records}))
    for _, body, headers, *_ in BAD_BODIES:
        sends.append(partial(client.post, "/predict/main", content=body, headers=headers))
    for _, tensors, *_ in BAD_TENSORS:
        sends.append(partial(client.post, "/v2/models/main/infer", json=tensors))
    bad = itertools.cycle(sends)
    statuses = [next(bad)().status_code for _ in range(200)]
    assert all(400 <= status < 500 for status in statuses), statuses
    assert client.get("/v2/health/ready").status_code == 200
    good = client.post("/predict/main", json={"records": [record()]})
    assert good.status_code == 200 and good.json()["predictions"] == [0.0]


def _tensors(n_datatype: str, n_data: list[Any]) -> dict[str, Any]:
    rows = len(n_data)
    return {"inputs": [
        {"name": "x", "shape": [rows], "datatype": "FP64", "data": [1.0] * rows},
        {"name": "n", "shape": [rows], "datatype": n_datatype, "data": n_data},
        {"name": "color", "shape": [rows], "datatype": "BYTES", "data": ["red"] * rows}]}


@pytest.mark.parametrize(("datatype", "value"), [("UINT8", -5), ("UINT8", 300),
                                                 ("INT8", 128), ("UINT64", -1),
                                                 ("INT64", 2 ** 63), ("UINT32", 2 ** 32)])
def test_v2_integers_outside_their_datatype_are_refused_naming_input_and_value(
        client: httpx.Client, datatype: str, value: int) -> None:
    _refused(client.post("/v2/models/main/infer", json=_tensors(datatype, [1, value])), 422,
             "inputs[1].data", str(value), datatype)
    assert client.post("/v2/models/main/infer",
                       json=_tensors(datatype, [1, 2])).status_code == 200


def test_v2_bool_refuses_numbers(client: httpx.Client) -> None:
    body = _tensors("INT64", [1])
    body["inputs"].append({"name": "flag", "shape": [1], "datatype": "BOOL", "data": [1]})
    _refused(client.post("/v2/models/main/infer", json=body), 422, "inputs[3].data", "BOOL")


def test_the_404_for_an_unknown_deployment_does_not_list_the_served_ones(
        client: httpx.Client) -> None:
    for response in (client.post("/predict/nothing", json={"records": [record()]}),
                     client.get("/v2/models/nothing"),
                     client.post("/invocations", json={"instances": [record()]},
                                 headers={"X-Loopline-Deployment": "nothing"})):
        _refused(response, 404, "deployment", "not served here")
        assert "main" not in response.json()["error"]["problem"]


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server over ``main`` that reads bodies of up to 2 MiB."""
    workspace = make_workspace(tmp_path_factory.mktemp("roomy"))
    try:
        deploy(workspace, "main", [primary(register_constant(workspace, "const", 0.0))])
        with running(workspace, max_body_bytes=2 << 20) as started:
            yield started
    finally:
        workspace.close()


MEGABYTE_BODIES = {  # each made the old regex-based depth check quadratic, or is just deep
    "escaped quotes": b"[" * 70 + b'"' + b'\\"' * (1 << 19),
    "backslashes": b"[" * 70 + b'"' + b"\\" * (1 << 20),
    "brackets": b"[" * (1 << 20),
    "brackets in a string": b'["' + b"[" * (1 << 20) + b'"]',
}


def test_megabyte_adversarial_bodies_get_a_4xx_quickly_while_liveness_answers(
        roomy_server: RunningServer) -> None:
    results: list[tuple[str, int, float]] = []

    def attack() -> None:
        with roomy_server.client(timeout=30.0) as attacker:
            for name, body in MEGABYTE_BODIES.items():
                started = time.perf_counter()
                status = attacker.post("/predict/main", content=body, headers=JSON).status_code
                results.append((name, status, time.perf_counter() - started))

    thread = threading.Thread(target=attack)
    slowest = 0.0
    with roomy_server.client(timeout=5.0) as probe:
        thread.start()
        while thread.is_alive():
            started = time.perf_counter()
            assert probe.get("/v2/health/live").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.01)
        thread.join()
        good = probe.post("/predict/main", json={"records": [record()]})
    assert [name for name, _, _ in results] == list(MEGABYTE_BODIES)
    for name, status, seconds in results:  # sanity bounds, not a benchmark
        assert 400 <= status < 500, (name, status)
        assert seconds < 5.0, (name, seconds)
    assert slowest < 2.0, slowest
    assert good.status_code == 200


def test_a_v2_integer_beyond_64_bits_is_refused_saying_json_read_it_as_float(
        client: httpx.Client) -> None:
    _refused(client.post("/v2/models/main/infer", json=_tensors("INT64", [1, 2 ** 70])), 422,
             "inputs[1].data", "beyond 64 bits", "INT64")
