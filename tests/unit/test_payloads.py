"""Request bodies and rows: limits, JSON depth, frames, tensors, request ids, error mapping."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pandas as pd
import pytest

from loopline.core.errors import (
    BackendError,
    InvalidArgumentError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.serving.answers import RequestRefused, refusal
from loopline.serving.payloads import (
    Limits,
    frame_from_columns,
    frame_from_records,
    frame_from_rows,
    parse_json,
    too_deep,
)
from loopline.serving.protocol_mlflow import MlflowWire
from loopline.serving.protocol_v2 import V2Wire
from loopline.serving.request_ids import is_valid, request_id

LIMITS = Limits(max_body_bytes=1024, max_rows=3)


class _Model:
    """Just what the parsers read of a model."""

    uri = "models:/m/1"
    input_names = ("a", "b")
    input_types = ("FP64", "INT64")
    batchable = True

    def check(self, batch: Any) -> list[Any]:
        return []

    def predict(self, batch: Any) -> Any:
        return [0] * len(batch)


def _refusal(call: Any, status: int, field: str) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        call()
    assert (caught.value.status, caught.value.field) == (status, field)
    return caught.value


def test_parse_json_refuses_nan_infinity_and_malformed_text_with_400() -> None:
    for text in (b"[NaN]", b"[Infinity]", b"[1e999]", b"{", b"   "):
        _refusal(lambda t=text: parse_json(t, LIMITS), 400, "body")
    assert parse_json(b'{"a": [1, 2.5]}', LIMITS) == {"a": [1, 2.5]}


def test_depth_ignores_brackets_inside_strings_and_refuses_past_64() -> None:
    assert parse_json(b'[[1], {"a": "[[[[["}]', LIMITS) == [[1], {"a": "[[[[["}]
    assert parse_json(b'["\\"[[["]', LIMITS) == ['"[[[']
    assert not too_deep(orjson.loads(b"[" * 64 + b"]" * 64), 64)
    assert too_deep(orjson.loads(b"[" * 65 + b"]" * 65), 64)
    assert too_deep({"a": [1, {"b": []}]}, 3) and not too_deep({"a": [1, {"b": 2}]}, 3)
    assert not too_deep("[[[[", 1) and not too_deep(5, 0)
    error = _refusal(lambda: parse_json(b"[" * 65 + b"]" * 65, LIMITS), 422, "body")
    assert "64" in error.problem
    # Past orjson's own limit of 1024 levels: the same 422, not a 400.
    _refusal(lambda: parse_json(b"[" * 2000 + b"]" * 2000, LIMITS), 422, "body")


ADVERSARIAL = [  # bodies that made the old regex-based depth check quadratic or deep
    b"[" * 70 + b'"' + b'\\"' * 500_000,  # an unterminated string of escaped quotes
    b"[" * 70 + b'"' + b"\\" * 1_000_000,  # one of backslashes
    b"[" * 1_000_000,  # brackets only
    b"[" + b"[1]," * 250_000 + b"[1]]",  # a million brackets, valid and shallow
    b'["' + b"[" * 1_000_000 + b'"]',  # brackets inside one string
]


@pytest.mark.parametrize("body", ADVERSARIAL, ids=["quotes", "backslashes", "open", "wide",
                                                   "in-string"])
def test_megabyte_adversarial_bodies_are_judged_in_linear_time(body: bytes) -> None:
    limits = Limits(max_body_bytes=2 << 20)
    started = time.perf_counter()
    try:
        parse_json(body, limits)
    except RequestRefused as refused:
        assert refused.status in (400, 422) and refused.field == "body"
    assert time.perf_counter() - started < 5.0  # a sanity bound: quadratic took hours


def test_records_become_columns_and_mismatched_records_are_named() -> None:
    frame = frame_from_records([{"a": 1.0, "b": 2}, {"a": 2.5, "b": 3}], "records", LIMITS)
    assert list(frame.columns) == ["a", "b"] and frame["b"].dtype.kind == "i"
    _refusal(lambda: frame_from_records([{"a": 1}, {"b": 1}], "records", LIMITS), 422,
             "records[1]")
    _refusal(lambda: frame_from_records([{"a": 1}, 5], "records", LIMITS), 422, "records[1]")
    _refusal(lambda: frame_from_records({"a": 1}, "records", LIMITS), 422, "records")
    _refusal(lambda: frame_from_records([], "records", LIMITS), 422, "records")
    error = _refusal(lambda: frame_from_records([{"a": 1}] * 4, "records", LIMITS), 413,
                     "records")
    assert "3" in error.problem


def test_columns_and_rows_check_lengths_and_widths() -> None:
    assert frame_from_columns({"a": [1, 2], "b": [3, 4]}, "inputs", LIMITS).shape == (2, 2)
    _refusal(lambda: frame_from_columns({"a": [1], "b": [3, 4]}, "inputs", LIMITS), 422,
             "inputs")
    _refusal(lambda: frame_from_columns({"a": 1}, "inputs", LIMITS), 422, "inputs.a")
    assert frame_from_rows([[1, 2]], ("a", "b"), "data", LIMITS).to_dict("list") == {
        "a": [1], "b": [2]}
    _refusal(lambda: frame_from_rows([[1, 2], [1]], ("a", "b"), "data", LIMITS), 422,
             "data[1]")
    _refusal(lambda: frame_from_rows([[1]], (), "data", LIMITS), 422, "data")


def test_v2_tensors_are_typed_by_datatype_and_strings_are_never_numbers() -> None:
    wire = V2Wire()
    parsed = wire.parse({"inputs": [
        {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2.5]},
        {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]}]},
        _Model(), LIMITS)
    assert parsed.frame.dtypes.tolist() == ["float64", "int64"]
    matrix = wire.parse({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                                     "data": [[1.0, 2.0]]}]}, _Model(), LIMITS)
    assert matrix.frame.to_dict("list") == {"a": [1.0], "b": [2.0]}
    for data, datatype in ((["1"], "FP64"), ([True], "FP64"), ([1.5], "INT64"),
                           ([None], "FP64"), ([1], "BYTES")):
        _refusal(lambda d=data, t=datatype: wire.parse(
            {"inputs": [{"name": "a", "shape": [1], "datatype": t, "data": d}]}, _Model(),
            LIMITS), 422, "inputs[0].data")
    _refusal(lambda: wire.parse({"inputs": [{"name": "a", "shape": [1], "datatype": "INT64",
                                             "data": [2 ** 70]}]}, _Model(), LIMITS),
             422, "inputs[0].data")


# (datatype, the extremes it takes, values just outside, values of another type)
INT_RANGES = [
    ("INT8", [-128, 127], [-129, 128]), ("INT16", [-32768, 32767], [-32769, 32768]),
    ("INT32", [-(2 ** 31), 2 ** 31 - 1], [-(2 ** 31) - 1, 2 ** 31]),
    ("INT64", [-(2 ** 63), 2 ** 63 - 1], [-(2 ** 63) - 1, 2 ** 63]),
    ("UINT8", [0, 255], [-5, 256, 300]), ("UINT16", [0, 65535], [-1, 65536]),
    ("UINT32", [0, 2 ** 32 - 1], [-1, 2 ** 32]), ("UINT64", [0, 2 ** 63 - 1], [-1, 2 ** 64]),
]


def _one_tensor(datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "b", "shape": [len(data)], "datatype": datatype,
                        "data": data}]}


@pytest.mark.parametrize(("datatype", "inside", "outside"), INT_RANGES,
                         ids=[case[0] for case in INT_RANGES])
def test_v2_integers_outside_their_datatype_range_are_refused_naming_the_value(
        datatype: str, inside: list[int], outside: list[int]) -> None:
    parsed = V2Wire().parse(_one_tensor(datatype, inside), _Model(), LIMITS)
    assert parsed.frame["b"].tolist() == inside
    for value in outside:
        error = _refusal(lambda v=value: V2Wire().parse(_one_tensor(datatype, [0, v]),
                                                        _Model(), LIMITS),
                         422, "inputs[0].data")
        assert str(value) in error.problem and datatype in error.problem
        assert "position 1" in error.problem
    _refusal(lambda: V2Wire().parse(_one_tensor(datatype, [True]), _Model(), LIMITS),
             422, "inputs[0].data")


def test_v2_bool_takes_only_true_and_false() -> None:
    parsed = V2Wire().parse(_one_tensor("BOOL", [True, False]), _Model(), LIMITS)
    assert parsed.frame["b"].tolist() == [True, False]
    for data in ([0], [1], [2], ["true"], [None], [1.0]):
        error = _refusal(lambda d=data: V2Wire().parse(_one_tensor("BOOL", d), _Model(),
                                                       LIMITS), 422, "inputs[0].data")
        assert "BOOL" in error.problem


def test_mlflow_formats_all_become_the_same_frame() -> None:
    wire = MlflowWire()
    expected = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    bodies = [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 3], [2.0, 4]]}},
        {"dataframe_records": [{"a": 1.0, "b": 3}, {"a": 2.0, "b": 4}]},
        {"instances": [[1.0, 3], [2.0, 4]]},
        {"inputs": {"a": [1.0, 2.0], "b": [3, 4]}},
    ]
    for body in bodies:
        pd.testing.assert_frame_equal(wire.parse(body, _Model(), LIMITS).frame, expected)
    _refusal(lambda: wire.parse({"dataframe_split": {"columns": ["a", "a"], "data": []}},
                                _Model(), LIMITS), 422, "dataframe_split.columns")


def test_request_ids_keep_valid_caller_ids_and_replace_others() -> None:
    assert request_id("abc-1:2.3") == "abc-1:2.3"
    made = request_id("bad id with spaces", None)
    assert is_valid(made) and len(made) == 32
    assert request_id(None, "from-body") == "from-body"
    assert not is_valid("x" * 129) and not is_valid("") and not is_valid(7)


@pytest.mark.parametrize(("error", "status"), [
    (RequestRefused(415, "Content-Type", "json only"), 415),
    (InvalidArgumentError("x", "bad"), 422),
    (NotFoundError("deployment", "d"), 404),
    (PolicyDeniedError("no"), 403),
    (BackendError("down"), 503),
    (RuntimeError("secret stack detail"), 500),
])
def test_errors_map_to_statuses_without_leaking_internals(error: Exception,
                                                          status: int) -> None:
    response = refusal(error, "rid-1")
    assert response.status_code == status
    assert response.headers["x-request-id"] == "rid-1"
    assert b"secret stack detail" not in response.body
    if status == 503:
        assert response.headers["retry-after"]
