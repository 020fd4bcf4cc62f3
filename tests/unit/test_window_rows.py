"""The prediction log's requests expanded to rows: every logged shape, labels, bad bodies."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from loopline.core.canonical import canonical_json
from loopline.core.errors import InvalidArgumentError
from loopline.monitoring.window_rows import (
    LABEL,
    MODEL_VERSION,
    PREDICTION,
    REQUEST_ID,
    TIME,
    expand_predictions,
)
from loopline.serving.payloads import Limits
from loopline.serving.protocol_mlflow import MlflowWire
from loopline.serving.protocol_native import NativeWire
from loopline.serving.protocol_v2 import V2Wire

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
ROWS = [{"x": 1.5, "n": 2, "color": "red"}, {"x": 2.5, "n": 3, "color": "blue"}]
COLUMNS = {"x": [1.5, 2.5], "n": [2, 3], "color": ["red", "blue"]}


def _log(*requests: tuple[Any, Any], labels: list[Any] | None = None) -> pa.Table:
    """A prediction-log table of (inputs, outputs) requests, JSON-encoded."""
    count = len(requests)
    data: dict[str, Any] = {
        "request_id": [f"req-{i}" for i in range(count)],
        "time": pa.array([T0 + dt.timedelta(seconds=i) for i in range(count)],
                         pa.timestamp("us", tz="UTC")),
        "deployment": ["main"] * count,
        "model_version": [f"m.v{i % 2 + 1}" for i in range(count)],
        "inputs": [canonical_json(inputs) for inputs, _ in requests],
        "outputs": [canonical_json(outputs) for _, outputs in requests],
        "latency_ms": [1.0] * count,
    }
    if labels is not None:
        data["label"] = [None if label is None else canonical_json(label) for label in labels]
    return pa.table(data)


SHAPES = {
    "native-list": ROWS,
    "native-records": {"records": ROWS},
    "dataframe_records": {"dataframe_records": ROWS},
    "dataframe_split": {"dataframe_split": {"columns": ["x", "n", "color"],
                                            "data": [[1.5, 2, "red"], [2.5, 3, "blue"]]}},
    "instances-records": {"instances": ROWS},
    "inputs-columns": {"inputs": COLUMNS},
    "instances-columns": {"instances": COLUMNS},
    "v2-tensors": COLUMNS,
    "v2-nested-tensors": {"x": [[1.5], [2.5]], "n": [[2], [3]], "color": [["red"], ["blue"]]},
}


@pytest.mark.parametrize("inputs", list(SHAPES.values()), ids=list(SHAPES))
def test_every_logged_shape_expands_to_the_same_rows(inputs: Any) -> None:
    rows = expand_predictions(_log((inputs, [0.1, 0.9])))
    assert rows.column_names[:3] == [REQUEST_ID, TIME, MODEL_VERSION]
    assert sorted(rows.column_names[3:6]) == ["color", "n", "x"]
    assert rows.column_names[6:] == [PREDICTION, LABEL] == ["__prediction", "__label"]
    assert rows.column("x").to_pylist() == [1.5, 2.5]
    assert rows.column("n").type == pa.int64() and rows.column("n").to_pylist() == [2, 3]
    assert rows.column("color").to_pylist() == ["red", "blue"]
    assert rows.column(PREDICTION).to_pylist() == [0.1, 0.9]
    assert rows.column(REQUEST_ID).to_pylist() == ["req-0", "req-0"]
    assert rows.column(TIME).to_pylist() == [T0, T0]
    assert rows.column(LABEL).null_count == 2  # the table has no label column


def test_requests_of_mixed_shapes_keep_their_order_and_pad_missing_columns() -> None:
    table = _log((ROWS, [0, 1]), ({"z": [7]}, [1]), ([{"x": 9.0, "w": "new"}], [0]),
                 ({"dataframe_split": {"columns": ["x"], "data": [[4.0], [5.0]]}}, [1, 1]))
    rows = expand_predictions(table)
    assert rows.num_rows == 6
    assert rows.column(REQUEST_ID).to_pylist() == ["req-0", "req-0", "req-1", "req-2",
                                                   "req-3", "req-3"]
    assert rows.column(MODEL_VERSION).to_pylist() == ["m.v1", "m.v1", "m.v2", "m.v1",
                                                      "m.v2", "m.v2"]
    assert rows.column("x").to_pylist() == [1.5, 2.5, None, 9.0, 4.0, 5.0]
    assert rows.column("z").to_pylist() == [None, None, 7, None, None, None]
    assert rows.column("w").to_pylist() == [None, None, None, "new", None, None]
    assert rows.column(PREDICTION).type == pa.int64()


def test_records_that_name_other_keys_fill_the_missing_cells_with_null() -> None:
    rows = expand_predictions(_log(([{"a": 1}, {"b": 2}, {"a": 3, "b": 4}], [0, 0, 0])))
    assert rows.column("a").to_pylist() == [1, None, 3]
    assert rows.column("b").to_pylist() == [None, 2, 4]


def test_labels_split_over_a_requests_rows_and_a_scalar_labels_a_one_row_request() -> None:
    table = _log((ROWS, [0, 1]), ([ROWS[0]], [1]), ([ROWS[1]], [0]), ([ROWS[0]], [1]),
                 labels=[[1, 0], 1, None, [0]])
    rows = expand_predictions(table)
    assert rows.column(LABEL).to_pylist() == [1, 0, 1, None, 0]
    assert rows.column(LABEL).type == pa.int64()


def test_non_scalar_or_mixed_values_become_json_text() -> None:
    table = _log(([{"v": 1, "tags": [1, 2]}], [[0.2, 0.8]]),
                 ([{"v": "one", "tags": None}], [{"p": 1}]), labels=["cat", 2])
    rows = expand_predictions(table)
    assert rows.column(PREDICTION).to_pylist() == ['[0.2,0.8]', '{"p":1}']
    assert rows.column("tags").to_pylist() == ["[1,2]", None]
    assert rows.column("v").to_pylist() == ["1", '"one"']
    assert rows.column(LABEL).to_pylist() == ['"cat"', "2"]


def test_an_empty_log_expands_to_an_empty_window() -> None:
    rows = expand_predictions(_log())
    assert rows.num_rows == 0
    assert rows.column_names == [REQUEST_ID, TIME, MODEL_VERSION, PREDICTION, LABEL]


def _refused(table: pa.Table) -> InvalidArgumentError:
    with pytest.raises(InvalidArgumentError) as refused:
        expand_predictions(table)
    return refused.value


BAD_INPUTS = {
    "not-json": "{nope",
    "scalar": 3,
    "empty-list": [],
    "list-of-rows": [[1.0, 2.0]],
    "mixed-records": [{"x": 1}, [1]],
    "unequal-columns": {"x": [1, 2], "n": [1]},
    "column-not-a-list": {"x": 1},
    "empty-columns": {"x": []},
    "no-columns": {},
    "split-duplicate-names": {"dataframe_split": {"columns": ["x", "x"], "data": [[1, 2]]}},
    "split-short-row": {"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2], [3]]}},
    "split-no-data": {"dataframe_split": {"columns": ["x"], "data": []}},
}


@pytest.mark.parametrize("inputs", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_a_body_that_cannot_be_read_is_refused_naming_inputs_and_the_request(
        inputs: Any) -> None:
    table = _log((ROWS, [0, 1]), (inputs, [0]))
    if isinstance(inputs, str):  # not JSON at all: the text as logged
        texts = [*table.column("inputs").to_pylist()[:1], inputs]
        table = table.set_column(table.schema.get_field_index("inputs"), "inputs",
                                 pa.array(texts))
    refused = _refused(table)
    assert refused.field == "inputs" and "'req-1'" in refused.problem


@pytest.mark.parametrize(("outputs", "labels", "field"), [
    ([0], None, "outputs"),
    ([0, 1, 2], None, "outputs"),
    ({"predictions": [0, 1]}, None, "outputs"),
    ([0, 1], [[1, 0, 1]], "label"),
    ([0, 1], [1], "label"),
], ids=["too-few", "too-many", "not-a-list", "label-too-long", "scalar-label-two-rows"])
def test_predictions_or_labels_that_do_not_match_the_rows_are_refused(
        outputs: Any, labels: list[Any] | None, field: str) -> None:
    refused = _refused(_log((ROWS, outputs), labels=labels))
    assert refused.field == field and "'req-0'" in refused.problem


def test_undecodable_outputs_or_labels_are_refused_naming_them() -> None:
    table = _log((ROWS, [0, 1]))
    outputs = table.set_column(table.schema.get_field_index("outputs"), "outputs",
                               pa.array(["[0,"]))
    assert _refused(outputs).field == "outputs"
    labelled = table.append_column("label", pa.array(["{bad"]))
    assert _refused(labelled).field == "label"


def test_inputs_named_like_the_logs_columns_keep_their_names() -> None:
    inputs = [{"time": 1, "label": "gold", "prediction": 0.5, "request_id": "a",
               "model_version": 3}, {"time": 2, "label": "blue", "prediction": 0.7,
                                     "request_id": "b", "model_version": 4}]
    rows = expand_predictions(_log((inputs, [1, 0]), labels=[[0, 1]]))
    assert rows.column("time").to_pylist() == [1, 2]
    assert rows.column("label").to_pylist() == ["gold", "blue"]
    assert rows.column("prediction").to_pylist() == [0.5, 0.7]
    assert rows.column("request_id").to_pylist() == ["a", "b"]
    assert rows.column("model_version").to_pylist() == [3, 4]
    assert rows.column(LABEL).to_pylist() == [0, 1]
    assert rows.column(PREDICTION).to_pylist() == [1, 0]
    assert rows.column(REQUEST_ID).to_pylist() == ["req-0", "req-0"]
    assert rows.column(TIME).to_pylist() == [T0, T0]
    assert rows.column(MODEL_VERSION).to_pylist() == ["m.v1", "m.v1"]


def test_an_input_column_named_like_a_window_column_is_refused() -> None:
    refused = _refused(_log(([{"__time": 1, "x": 2}], [0])))
    assert refused.field == "inputs" and "['__time']" in refused.problem


def test_only_the_input_columns_asked_for_are_built() -> None:
    table = _log((ROWS, [0, 1]), ({"z": [7]}, [1]), ([{"x": 9.0, "w": "new"}], [0]))
    rows = expand_predictions(table, columns=["x", "z", "absent"])
    assert rows.column_names == [REQUEST_ID, TIME, MODEL_VERSION, "x", "z", PREDICTION,
                                 LABEL]
    assert rows.column("x").to_pylist() == [1.5, 2.5, None, 9.0]
    assert rows.column("z").to_pylist() == [None, None, 7, None]
    none = expand_predictions(table, columns=[])
    assert none.column_names == [REQUEST_ID, TIME, MODEL_VERSION, PREDICTION, LABEL]
    assert none.column(PREDICTION).to_pylist() == [0, 1, 1, 0]


def test_a_table_without_the_log_columns_is_refused() -> None:
    assert _refused(pa.table({"request_id": ["a"]})).field == "table"


# -- what each protocol logs reads back by column ----------------------------------------------

MODEL: Any = SimpleNamespace(input_names=("x", "n", "color"))
ONE_COLUMN: Any = SimpleNamespace(input_names=("x",))


def _logged_rows(inputs: Any) -> pa.Table:
    return expand_predictions(_log((inputs, [0] * 2)))


@pytest.mark.parametrize("body", [
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
                {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [[2], [3]]},
                {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]}]},
    {"inputs": [{"name": "m", "shape": [2, 3], "datatype": "BYTES",
                 "data": ["1.5", "2", "red", "2.5", "3", "blue"]}]},
    {"inputs": [{"name": "m", "shape": [2, 3], "datatype": "BYTES",
                 "data": [["1.5", "2", "red"], ["2.5", "3", "blue"]]}]},
], ids=["tensor-per-column", "matrix-flat", "matrix-nested"])
def test_what_v2_logs_expands_to_named_columns(body: dict[str, Any]) -> None:
    parsed = V2Wire().parse(body, MODEL, Limits())
    rows = _logged_rows(parsed.inputs)
    assert sorted(rows.column_names[3:6]) == ["color", "n", "x"]
    assert rows.column("color").to_pylist() == ["red", "blue"]
    assert [float(v) for v in rows.column("x").to_pylist()] == [1.5, 2.5]
    assert [int(v) for v in rows.column("n").to_pylist()] == [2, 3]


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["x", "n", "color"], "data": [[1.5, 2, "red"],
                                                                  [2.5, 3, "blue"]]}},
    {"dataframe_records": ROWS},
    {"instances": ROWS},
    {"instances": [[1.5, 2, "red"], [2.5, 3, "blue"]]},
    {"inputs": COLUMNS},
], ids=["dataframe_split", "dataframe_records", "instances-records", "instances-rows",
        "inputs-columns"])
def test_what_mlflow_logs_expands_to_named_columns(body: dict[str, Any]) -> None:
    parsed = MlflowWire().parse(body, MODEL, Limits())
    assert len(parsed.inputs) == 1
    rows = _logged_rows(parsed.inputs)
    assert rows.column("x").to_pylist() == [1.5, 2.5]
    assert rows.column("color").to_pylist() == ["red", "blue"]


def test_mlflow_scalars_for_a_one_column_model_are_logged_under_its_column() -> None:
    parsed = MlflowWire().parse({"instances": [1.5, 2.5]}, ONE_COLUMN, Limits())
    assert parsed.inputs == {"dataframe_split": {"columns": ["x"], "data": [[1.5], [2.5]]}}
    assert _logged_rows(parsed.inputs).column("x").to_pylist() == [1.5, 2.5]


@pytest.mark.parametrize("body", [{"records": ROWS}, ROWS], ids=["records", "list"])
def test_what_the_native_endpoint_logs_expands_to_named_columns(body: Any) -> None:
    parsed = NativeWire().parse(body, MODEL, Limits())
    assert _logged_rows(parsed.inputs).column("n").to_pylist() == [2, 3]
