"""A window's rows profiled batch by batch against a reference: batches of any shape (missing
columns, all-null columns of Arrow's null type, integers then floats) merge into the
reference's columns; a column of another kind is skipped with the reason."""

from __future__ import annotations

import pyarrow as pa

from loopline.data.profiling import Profile, profile_table
from loopline.monitoring.window_profiles import WindowProfiler
from loopline.monitoring.window_rows import PREDICTION

REFERENCE = profile_table(pa.table({
    "x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"], "flag": [True, False, True],
    "blob": pa.array([[1], [2], [3]])}))
OUTPUTS = profile_table(pa.table({"prediction": [0, 1, 1]}))


def test_batches_of_any_shape_merge_into_the_references_columns() -> None:
    profiler = WindowProfiler(REFERENCE, OUTPUTS)
    profiler.update(pa.table({"x": [1, 2], "c": ["a", "b"], "flag": [True, True],
                              PREDICTION: [0, 1]}))
    profiler.update(pa.table({"x": pa.nulls(2), "c": pa.nulls(2), PREDICTION: [1, 1]}))
    profiler.update(pa.table({"x": [2.5, 3.5], "c": ["b", "b"], "flag": [False, True],
                              PREDICTION: [0.5, 1.0]}))
    found = profiler.result()
    assert found.rows == 6 and found.present == {"x", "c", "flag"}
    assert found.skipped == {"blob": "other columns have no drift test"}
    assert found.inputs is not None and found.outputs is not None
    assert found.inputs.names == ("x", "c", "flag")
    whole = profile_table(pa.table({
        "x": [1.0, 2.0, None, None, 2.5, 3.5], "c": ["a", "b", None, None, "b", "b"],
        "flag": [True, True, None, None, False, True]}))
    assert found.inputs.to_dict() == whole.to_dict()
    assert found.outputs.to_dict() == profile_table(pa.table(
        {"prediction": [0.0, 1.0, 1.0, 1.0, 0.5, 1.0]})).to_dict()
    assert found.outputs_skipped is None


def test_a_column_of_another_kind_is_skipped_from_then_on_with_the_reason() -> None:
    profiler = WindowProfiler(REFERENCE, None)
    profiler.update(pa.table({"x": ["1", "2"], "c": ["a", "b"], PREDICTION: [0, 1]}))
    profiler.update(pa.table({"x": [1.0, 2.0], "c": [True, False], PREDICTION: ["a", "b"]}))
    found = profiler.result()
    assert found.skipped == {
        "blob": "other columns have no drift test",
        "x": "kinds differ: the reference is numeric, the current window string",
        "c": "kinds differ: the reference is categorical, the current window boolean"}
    assert found.outputs is None and found.outputs_skipped is None  # no output reference
    outputs = WindowProfiler(Profile(), OUTPUTS)
    outputs.update(pa.table({PREDICTION: ["yes", "no"]}))
    assert outputs.result().outputs_skipped == (
        "kinds differ: the reference is numeric, the current window string")
    assert outputs.result().outputs is None and outputs.result().inputs is None
