"""Profiles: kinds, nulls and NaN, merges equal to the profile of the union, dict round trips."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.data.profiling import (
    ColumnKind,
    Profile,
    ProfileOptions,
    Profiler,
    profile_batches,
    profile_table,
)

SMALL = ProfileOptions(categorical_threshold=3, category_cap=4, sample_size=2, top_k=2,
                       max_buckets=16, datetime_max_buckets=16)

ints = st.none() | st.integers(-10**12, 10**12)
floats = st.none() | st.just(math.nan) | st.floats(-1e9, 1e9)
stamps = st.none() | st.integers(-10**15, 4 * 10**15)
words = st.none() | st.sampled_from(["a", "b", "c", "", "é"]) | st.text(max_size=4)


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 40) -> pa.Table:
    rows = draw(st.integers(0, max_rows))

    def column(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(strategy, min_size=rows, max_size=rows))

    return pa.table({
        "i": pa.array(column(ints), pa.int64()),
        "f": pa.array(column(floats), pa.float64(), from_pandas=False),
        "b": pa.array(column(st.none() | st.booleans()), pa.bool_()),
        "t": pa.array(column(stamps), pa.timestamp("us", tz="UTC")),
        "s": pa.array(column(words), pa.string()),
        "d": pa.array(column(words), pa.string()).dictionary_encode(),
        "l": pa.array(column(st.none() | st.lists(st.integers(0, 3), max_size=2)),
                      pa.list_(pa.int64())),
    })


def _split(profile: Profile) -> tuple[dict[str, Any], dict[str, float]]:
    """The exact part of a profile's dict, and its float sums (order-dependent)."""
    exact = json.loads(json.dumps(profile.to_dict()))
    sums = {}
    for name, column in exact["columns"].items():
        column.pop("mean", None)
        if "sum" in column:
            sums[name] = column.pop("sum")
    return exact, sums


def _assert_same_profile(actual: Profile, expected: Profile) -> None:
    actual_exact, actual_sums = _split(actual)
    expected_exact, expected_sums = _split(expected)
    assert actual_exact == expected_exact
    assert actual_sums == pytest.approx(expected_sums, rel=1e-9, abs=1e-3)


@settings(max_examples=120, deadline=None)
@given(tables(), st.data())
def test_merged_profiles_of_two_parts_equal_the_profile_of_the_whole(
        table: pa.Table, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, table.num_rows))
    whole = profile_table(table, SMALL)
    merged = profile_table(table.slice(0, cut), SMALL).merge(profile_table(table.slice(cut), SMALL))
    _assert_same_profile(merged, whole)


@settings(max_examples=120, deadline=None)
@given(tables(), st.data())
def test_merged_profiles_of_three_parts_in_another_order_equal_the_whole(
        table: pa.Table, data: st.DataObject) -> None:
    first, second = sorted(data.draw(st.lists(st.integers(0, table.num_rows), min_size=2,
                                              max_size=2)))
    parts = [profile_table(table.slice(start, stop - start), SMALL)
             for start, stop in ((0, first), (first, second), (second, table.num_rows))]
    _assert_same_profile(parts[2].merge(parts[0]).merge(parts[1]), profile_table(table, SMALL))


@settings(max_examples=60, deadline=None)
@given(tables(max_rows=60), st.integers(1, 7))
def test_streamed_batches_profile_like_the_whole_table_with_default_options(
        table: pa.Table, batch_rows: int) -> None:
    streamed = profile_batches(iter(table.to_batches(max_chunksize=batch_rows)),
                               schema=table.schema)
    _assert_same_profile(streamed, profile_table(table))


@settings(max_examples=80, deadline=None)
@given(tables())
def test_profile_round_trips_through_json_exactly(table: pa.Table) -> None:
    profile = profile_table(table, SMALL)
    text = json.dumps(profile.to_dict(), allow_nan=False)
    again = Profile.from_dict(json.loads(text))
    assert again == profile
    assert again.to_dict() == profile.to_dict()


def test_kinds_are_inferred_from_arrow_types() -> None:
    table = pa.table({
        "int8": pa.array([1, 2], pa.int8()), "float32": pa.array([1.5, 2.5], pa.float32()),
        "decimal": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)),
        "flag": [True, False], "day": pa.array([dt.date(2024, 1, 1)] * 2, pa.date32()),
        "stamp": pa.array([1, 2], pa.timestamp("ns")),
        "word": ["x", "y"], "big": pa.array(["x", "y"], pa.large_string()),
        "dict": pa.array(["x", "x"]).dictionary_encode(),
        "list": [[1], [2]], "struct": [{"a": 1}, {"a": 2}], "bytes": [b"a", b"b"],
        "nothing": pa.nulls(2),
    })
    kinds = {column.name: column.kind for column in profile_table(table).columns}
    assert kinds == {
        "int8": ColumnKind.NUMERIC, "float32": ColumnKind.NUMERIC, "decimal": ColumnKind.NUMERIC,
        "flag": ColumnKind.BOOLEAN, "day": ColumnKind.DATETIME, "stamp": ColumnKind.DATETIME,
        "word": ColumnKind.CATEGORICAL, "big": ColumnKind.CATEGORICAL,
        "dict": ColumnKind.CATEGORICAL, "list": ColumnKind.OTHER, "struct": ColumnKind.OTHER,
        "bytes": ColumnKind.OTHER, "nothing": ColumnKind.OTHER,
    }


def test_strings_past_the_distinct_threshold_are_text_and_become_so_on_merge() -> None:
    options = ProfileOptions(categorical_threshold=3, category_cap=3, sample_size=2)
    left = profile_table(pa.table({"s": ["a", "b", "a"]}), options)
    right = profile_table(pa.table({"s": ["c", "d"]}), options)
    assert left.column("s").kind is ColumnKind.CATEGORICAL
    assert left.merge(right).column("s").kind is ColumnKind.TEXT
    assert left.merge(right).to_dict()["columns"]["s"]["distinct_exact"] is False


def test_nan_is_counted_apart_from_nulls_and_kept_out_of_the_range() -> None:
    table = pa.table({"f": pa.array([1.0, math.nan, None, 3.0], from_pandas=False)})
    column = profile_table(table).to_dict()["columns"]["f"]
    assert (column["count"], column["nulls"], column["nan_count"]) == (3, 1, 1)
    assert (column["min"], column["max"], column["mean"]) == (1.0, 3.0, 2.0)
    assert column["null_rate"] == 0.25


def test_empty_table_profiles_every_column_with_zero_counts() -> None:
    table = pa.table({"i": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    profile = profile_table(table)
    columns = profile.to_dict()["columns"]
    assert profile.rows == 0
    assert columns["i"] == {**columns["i"], "count": 0, "nulls": 0, "null_rate": 0.0,
                            "min": None, "max": None, "mean": None}
    assert columns["s"]["kind"] == "categorical" and columns["s"]["top"] == []


def test_all_null_column_has_a_null_rate_of_one_and_no_range() -> None:
    profile = profile_table(pa.table({"i": pa.array([None, None], pa.int64())}))
    column = profile.to_dict()["columns"]["i"]
    assert (column["count"], column["nulls"], column["null_rate"]) == (0, 2, 1.0)
    assert (column["min"], column["max"], column["quantiles"]["p50"]) == (None, None, None)


def test_datetimes_show_min_and_max_as_iso_strings() -> None:
    stamps = pa.array([dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
                       dt.datetime(2023, 1, 2, tzinfo=dt.UTC)], pa.timestamp("us", tz="UTC"))
    column = profile_table(pa.table({"t": stamps})).to_dict()["columns"]["t"]
    assert column["kind"] == "datetime"
    assert column["min"] == "2023-01-02T00:00:00.000000Z"
    assert column["max"] == "2024-05-01T12:00:00.000000Z"
    assert dt.datetime.fromisoformat(column["quantiles"]["p50"]).year in (2023, 2024)


def test_categorical_columns_report_top_values_and_the_rest_as_other() -> None:
    table = pa.table({"s": ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + [None]})
    column = profile_table(table, ProfileOptions(top_k=2)).to_dict()["columns"]["s"]
    assert column["top"] == [["a", 5], ["b", 3]]
    assert column["other"] == 2 and column["distinct"] == 3 and column["nulls"] == 1


def test_merge_refuses_a_column_of_another_kind_naming_it() -> None:
    left = profile_table(pa.table({"x": [1, 2], "y": ["a", "b"]}))
    right = profile_table(pa.table({"x": ["1", "2"], "y": ["a", "b"]}))
    with pytest.raises(InvalidArgumentError, match="'x'.*numeric.*string"):
        left.merge(right)


def test_merge_refuses_a_column_missing_from_one_side_naming_it() -> None:
    left = profile_table(pa.table({"x": [1], "extra": [True]}))
    right = profile_table(pa.table({"x": [2]}))
    with pytest.raises(InvalidArgumentError, match="'extra'"):
        left.merge(right)


def test_merge_refuses_profiles_made_with_other_options_naming_the_column() -> None:
    left = profile_table(pa.table({"x": [1.0]}))
    right = profile_table(pa.table({"x": [2.0]}), ProfileOptions(alpha=0.02))
    with pytest.raises(InvalidArgumentError, match="'x'.*alpha"):
        left.merge(right)


def test_profiler_refuses_a_batch_with_other_columns() -> None:
    profiler = Profiler()
    profiler.update(pa.record_batch({"x": [1]}))
    with pytest.raises(InvalidArgumentError, match="columns"):
        profiler.update(pa.record_batch({"y": [1]}))


def test_unknown_column_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        profile_table(pa.table({"x": [1]})).column("nope")


def test_stream_of_no_batches_profiles_the_given_schema_with_zero_counts() -> None:
    schema = pa.schema({"x": pa.int64(), "s": pa.string()})
    profile = profile_batches([], schema=schema)
    assert profile.names == ("x", "s") and profile.rows == 0
    assert profile.column("s").count == 0


def test_empty_profile_is_the_identity_of_merge() -> None:
    profile = profile_table(pa.table({"x": [1, 2]}))
    assert Profile().merge(profile) == profile
    assert profile.merge(profile_batches([])) == profile


def test_profile_of_25_columns_and_100k_rows_is_under_100_kb() -> None:
    rng = np.random.default_rng(3)
    rows = 100_000
    columns: dict[str, Any] = {}
    for index in range(5):
        columns[f"normal{index}"] = rng.normal(100, 20, rows)
        columns[f"wide{index}"] = rng.lognormal(0, 3, rows)
        columns[f"count{index}"] = rng.integers(0, 10_000, rows)
        columns[f"category{index}"] = rng.choice([f"c{i}" for i in range(50)], rows)
        columns[f"free{index}"] = np.char.add("id-", rng.integers(0, 10**9, rows).astype(str))
    profile = profile_table(pa.table(columns))
    assert len(json.dumps(profile.to_dict())) < 100_000


def test_profiler_holds_no_batches_while_streaming_many() -> None:
    rng = np.random.default_rng(4)
    batch_rows = 20_000

    def batches() -> Any:
        for _ in range(50):
            yield pa.record_batch({
                "x": rng.normal(0, 1, batch_rows),
                "s": pa.array(rng.choice(["a", "b", "c"], batch_rows)),
            })

    profiler = Profiler()
    baseline = pa.total_allocated_bytes()
    peak = 0
    for batch in batches():
        profiler.update(batch)
        del batch
        peak = max(peak, pa.total_allocated_bytes() - baseline)
    assert profiler.result().rows == 50 * batch_rows
    assert peak < 2 * batch_rows * 8  # never more than about one batch's column alive


def test_a_sum_overflowing_on_both_signs_is_not_an_error() -> None:
    values = [1e308] * 100 + [-1e308] * 100  # pairwise summation meets inf + -inf
    column = profile_table(pa.table({"x": values})).column("x")
    assert column.count == 200 and column.min == -1e308 and column.max == 1e308
