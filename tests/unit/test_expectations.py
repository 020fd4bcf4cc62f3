"""The expectation catalogue: every expectation passes and fails on purpose, suites load from
YAML with errors naming the field path, and the report reads well."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline.core.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    ValidationFailedError,
)
from loopline.core.validation import ExpectationResult, ValidationReport
from loopline.data.custom_checks import register_check, registered_checks, unregister_check
from loopline.data.validation import Suite, evaluate


def table() -> pa.Table:
    return pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "amount": pa.array([10.0, 20.5, None, 99.0], pa.float64()),
        "city": pa.array(["Oslo", "Lima", "Oslo", None]).dictionary_encode(),
        "email": pa.array(["a@x.org", "b@y.com", "not-an-email", None]),
        "active": pa.array([True, False, True, True]),
        "seen": pa.array([datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3, 4)],
                         pa.timestamp("us", tz="UTC")),
    })


def run_one(expectation: dict[str, Any], data: pa.Table | None = None,
            **kwargs: Any) -> ExpectationResult:
    suite = Suite.from_dict({"name": "s", "expectations": [expectation]})
    return evaluate(suite, table() if data is None else data, **kwargs).results[0]


PASS_FAIL: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"type": "column_exists", "column": "id"}, {"type": "column_exists", "column": "nope"}),
    ({"type": "column_type", "column": "id", "dtype": "integer"},
     {"type": "column_type", "column": "id", "dtype": "string"}),
    ({"type": "column_type", "column": "amount", "dtype": "float64"},
     {"type": "column_type", "column": "amount", "dtype": "float32"}),
    ({"type": "column_type", "column": "seen", "dtype": "timestamp[us, tz=UTC]"},
     {"type": "column_type", "column": "seen", "dtype": "timestamp[ns]"}),
    ({"type": "column_type", "column": "city", "dtype": "string"},
     {"type": "column_type", "column": "active", "dtype": "numeric"}),
    ({"type": "null_rate_at_most", "column": "amount", "max": 0.25},
     {"type": "null_rate_at_most", "column": "amount", "max": 0.2}),
    ({"type": "values_between", "column": "amount", "min": 10, "max": 99},
     {"type": "values_between", "column": "amount", "min": 10, "max": 99,
      "max_inclusive": False}),
    ({"type": "values_between", "column": "seen", "min": "2024-01-01T00:00:00+00:00"},
     {"type": "values_between", "column": "seen", "max": date(2024, 1, 3)}),
    ({"type": "values_in_set", "column": "city", "values": ["Oslo", "Lima"]},
     {"type": "values_in_set", "column": "city", "values": ["Oslo"]}),
    ({"type": "values_in_set", "column": "active", "values": [True, False]},
     {"type": "values_in_set", "column": "active", "values": [False]}),
    ({"type": "values_unique", "column": "id"}, {"type": "values_unique", "column": "city"}),
    ({"type": "values_unique", "columns": ["city", "email"]},
     {"type": "values_unique", "columns": ["active"]}),
    ({"type": "values_match_regex", "column": "email", "regex": "^[a-z@.-]+$"},
     {"type": "values_match_regex", "column": "email", "regex": r"\.org$"}),
    ({"type": "row_count_between", "min": 4, "max": 4},
     {"type": "row_count_between", "min": 5}),
]


@pytest.mark.parametrize(("passing", "failing"), PASS_FAIL,
                         ids=[f"{p['type']}-{i}" for i, (p, _) in enumerate(PASS_FAIL)])
def test_each_expectation_passes_and_fails_on_purpose(
        passing: dict[str, Any], failing: dict[str, Any]) -> None:
    good, bad = run_one(passing), run_one(failing)
    assert good.passed, good.message
    assert not bad.passed, bad.message
    assert good.observed, "something is observed even when it passes"
    assert bad.observed and bad.message


def test_null_rate_is_observed_with_counts() -> None:
    result = run_one({"type": "null_rate_at_most", "column": "amount", "max": 0.0})
    assert result.observed == {"null_rate": 0.25, "nulls": 1, "rows": 4}
    assert result.message == "null rate 0.25 (1 of 4) is above 0.0"
    assert result.column == "amount"
    assert result.arguments == {"max": 0.0}


def test_values_between_records_offending_count_examples_and_extremes() -> None:
    result = run_one({"type": "values_between", "column": "amount", "min": 0, "max": 50})
    assert not result.passed
    assert result.observed == {"checked": 3, "unexpected": 1, "unexpected_fraction": 0.333333,
                               "examples": [99.0], "min": 10.0, "max": 99.0}


def test_mostly_lets_a_share_of_values_fail() -> None:
    base = {"type": "values_between", "column": "amount", "max": 50}
    assert run_one({**base, "mostly": 0.6}).passed  # 2 of 3 non-null values inside
    assert not run_one({**base, "mostly": 0.7}).passed
    regex = {"type": "values_match_regex", "column": "email", "regex": "@"}
    assert run_one({**regex, "mostly": 0.66}).passed
    assert not run_one(regex).passed


def test_nan_is_a_value_outside_any_range() -> None:
    data = pa.table({"x": pa.array([1.0, float("nan")])})
    result = run_one({"type": "values_between", "column": "x", "min": 0}, data)
    assert not result.passed
    assert result.observed["examples"] == ["NaN"]


def test_a_bound_of_the_wrong_kind_fails_with_a_clear_message() -> None:
    result = run_one({"type": "values_between", "column": "city", "min": 3})
    assert not result.passed
    assert "bound 3 is a number but the column is string" in result.message
    result = run_one({"type": "values_between", "column": "id", "min": "2024-01-01"})
    assert "is a date/time but the column is int64" in result.message


def test_values_in_set_reports_the_most_frequent_offenders() -> None:
    data = pa.table({"c": ["a", "b", "b", "c", None]})
    result = run_one({"type": "values_in_set", "column": "c", "values": ["a"]}, data)
    assert result.observed["unexpected"] == 3
    assert result.observed["examples"] == ["b", "c"]
    assert result.message == "3 of 4 non-null values (75.00%) are not in the allowed set"


def test_allowed_values_of_another_type_fail_rather_than_match_loosely() -> None:
    result = run_one({"type": "values_in_set", "column": "id", "values": ["1", "2"]})
    assert not result.passed
    assert "do not fit column 'id' of type int64" in result.message


def test_uniqueness_over_several_columns_counts_repeated_combinations() -> None:
    data = pa.table({"a": [1, 1, 1, 2, None], "b": ["x", "x", "y", "x", None]})
    unique_a = run_one({"type": "values_unique", "column": "a"}, data)
    assert unique_a.observed["duplicate_rows"] == 3
    pair = run_one({"type": "values_unique", "columns": ["a", "b"]}, data)
    assert not pair.passed
    assert pair.observed == {"checked": 4, "duplicate_rows": 2, "duplicate_keys": 1,
                             "examples": [{"key": {"a": 1, "b": "x"}, "count": 2}]}
    assert run_one({"type": "values_unique", "columns": ["a", "b"]},
                   data.slice(1)).passed


def test_regex_on_a_non_string_column_fails_naming_the_type() -> None:
    result = run_one({"type": "values_match_regex", "column": "id", "regex": "1"})
    assert not result.passed
    assert result.message == "column 'id' is int64, not a string column"


@pytest.fixture
def checks() -> Iterator[None]:
    @register_check("total_at_least")
    def total_at_least(data: pa.Table, column: str, minimum: float) -> tuple[bool, dict[str, Any]]:
        total = sum(v for v in data.column(column).to_pylist() if v is not None)
        return total >= minimum, {"total": total}

    @register_check("explodes")
    def explodes(data: pa.Table) -> tuple[bool, dict[str, Any]]:
        raise ZeroDivisionError("division by zero in the check")

    @register_check("returns_junk")
    def returns_junk(data: pa.Table) -> Any:
        return "yes"

    yield
    for name in ("total_at_least", "explodes", "returns_junk"):
        unregister_check(name)


@pytest.mark.usefixtures("checks")
def test_custom_check_passes_and_fails_with_its_arguments_and_column() -> None:
    base = {"type": "custom", "check": "total_at_least", "column": "amount"}
    good = run_one({**base, "arguments": {"minimum": 100}})
    assert good.passed and good.observed == {"total": 129.5}
    assert good.arguments == {"check": "total_at_least", "arguments": {"minimum": 100}}
    bad = run_one({**base, "arguments": {"minimum": 1000}})
    assert not bad.passed and bad.message == "custom check 'total_at_least' failed"


@pytest.mark.usefixtures("checks")
def test_a_custom_check_that_raises_becomes_a_failed_result_not_a_crash() -> None:
    suite = Suite.from_dict({"name": "s", "expectations": [
        {"type": "custom", "check": "explodes"},
        {"type": "custom", "check": "returns_junk"},
        {"type": "custom", "check": "never_registered"},
        {"type": "row_count_between", "min": 1},
    ]})
    results = evaluate(suite, table()).results
    assert [r.passed for r in results] == [False, False, False, True]
    assert results[0].message == ("custom check 'explodes' raised ZeroDivisionError: "
                                  "division by zero in the check")
    assert results[0].observed == {"error": "ZeroDivisionError",
                                   "detail": "division by zero in the check"}
    assert "must return (passed: bool, observed: dict), not str" in results[1].message
    assert "@register_check('never_registered')" in results[2].message


def test_checks_can_be_given_explicitly_instead_of_registered() -> None:
    suite = Suite.from_dict({"name": "s", "expectations": [{"type": "custom", "check": "c"}]})
    report = evaluate(suite, table(), checks={"c": lambda t: (t.num_rows == 4, {})})
    assert report.passed


@pytest.mark.usefixtures("checks")
def test_another_function_under_a_registered_name_is_refused() -> None:
    with pytest.raises(AlreadyExistsError, match="check 'explodes' already exists"):
        register_check("explodes")(lambda t: (True, {}))
    with pytest.raises(InvalidArgumentError, match="invalid check"):
        register_check("bad name!")
    assert "explodes" in registered_checks()


PREVIOUS: dict[str, Any] = {"rows": 100, "columns": {
    "id": {"kind": "numeric", "null_rate": 0.0, "min": 1, "max": 100},
    "amount": {"kind": "numeric", "null_rate": 0.1, "min": 0.0, "max": 50.0},
    "seen": {"kind": "datetime", "null_rate": 0.0, "min": "2024-01-01T00:00:00+00:00",
             "max": "2024-01-11T00:00:00+00:00"},
    "city": {"kind": "categorical", "null_rate": 0.0, "min": None, "max": None},
}}


def changed(**columns: dict[str, Any]) -> dict[str, Any]:
    merged = {name: {**stats, **columns.get(name, {})}
              for name, stats in PREVIOUS["columns"].items()}
    merged.update({name: stats for name, stats in columns.items() if name not in merged})
    return {"rows": 100, "columns": merged}


def compare(expectation: dict[str, Any], current: Mapping[str, Any],
            previous: Mapping[str, Any] | None = PREVIOUS) -> ExpectationResult:
    return run_one(expectation, current_profile=current, previous_profile=previous)


def test_schema_unchanged_names_added_removed_and_retyped_columns() -> None:
    assert compare({"type": "schema_unchanged"}, PREVIOUS).passed
    current = changed(amount={"kind": "text"}, extra={"kind": "numeric"})
    del current["columns"]["city"]
    result = compare({"type": "schema_unchanged"}, current)
    assert not result.passed
    assert result.observed == {"added": ["extra"], "removed": ["city"],
                               "retyped": {"amount": {"previous": "numeric", "current": "text"}}}
    assert result.message == ("schema changed: added ['extra']; removed ['city']; "
                              "retyped amount (numeric -> text)")
    assert compare({"type": "schema_unchanged", "allow_added": True},
                   changed(extra={"kind": "numeric"})).passed


def test_null_rate_shift_is_an_absolute_change() -> None:
    rule = {"type": "null_rate_shift_at_most", "max_shift": 0.05}
    assert compare(rule, changed(amount={"null_rate": 0.15})).passed
    result = compare(rule, changed(amount={"null_rate": 0.4}))
    assert not result.passed
    assert result.observed["violations"] == {
        "amount": {"previous": 0.1, "current": 0.4, "shift": 0.3}}
    assert not compare({**rule, "column": "amount"}, changed(amount={"null_rate": 0.2})).passed
    assert compare({**rule, "column": "id"}, changed(amount={"null_rate": 0.2})).passed


def test_range_within_previous_allows_the_tolerance_and_no_more() -> None:
    rule = {"type": "range_within_previous", "column": "amount", "tolerance": 0.1}
    assert compare(rule, changed(amount={"min": -5.0, "max": 55.0})).passed
    result = compare(rule, changed(amount={"max": 56.0}))
    assert not result.passed
    assert result.observed["violations"]["amount"]["allowed_max"] == 55.0
    assert not compare({**rule, "tolerance": 0.0}, changed(amount={"max": 50.5})).passed


def test_range_within_previous_compares_dates_as_instants_over_every_column() -> None:
    rule = {"type": "range_within_previous", "tolerance": 0.5}
    assert compare(rule, changed(seen={"max": "2024-01-16T00:00:00+00:00"})).passed
    result = compare(rule, changed(seen={"max": "2024-02-01T00:00:00+00:00"}))
    assert not result.passed
    assert result.observed["compared"] == 3  # city has no range
    assert result.observed["violations"]["seen"]["allowed_max"] == "2024-01-16T00:00:00+00:00"


def test_profile_checks_pass_when_there_is_no_previous_snapshot() -> None:
    result = compare({"type": "schema_unchanged"}, PREVIOUS, previous=None)
    assert result.passed
    assert "no previous profile" in result.message


def test_profile_checks_without_a_current_profile_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="current_profile"):
        run_one({"type": "schema_unchanged"})
    with pytest.raises(InvalidArgumentError, match="previous_profile"):
        compare({"type": "schema_unchanged"}, PREVIOUS, previous={"rows": 1})


def test_an_unknown_column_fails_its_expectation_without_hiding_the_others() -> None:
    suite = Suite.from_dict({"name": "s", "expectations": [
        {"type": "null_rate_at_most", "column": "amountt", "max": 0.5},
        {"type": "values_unique", "column": "id"},
    ]})
    first, second = evaluate(suite, table()).results
    assert not first.passed
    assert first.message.startswith("column 'amountt' is missing from the table (it has: id,")
    assert first.observed == {"missing_columns": ["amountt"]}
    assert second.passed


def test_check_columns_refuses_an_unknown_column_naming_the_field_path() -> None:
    suite = Suite.from_dict({"name": "s", "expectations": [
        {"type": "column_exists", "column": "maybe"},
        {"type": "values_unique", "column": "id"},
        {"type": "values_unique", "columns": ["id", "nope"]},
    ]})
    with pytest.raises(InvalidArgumentError, match=r"expectations\[2\]\.columns: column 'nope'"):
        suite.check_columns(table().schema)
    suite.check_columns(["id", "nope"])


@pytest.mark.parametrize(("text", "field", "problem"), [
    ("name: s\nexpectations:\n  - {type: row_count_between, min: 1}\n"
     "  - {type: column_exists, column: a}\n  - {type: null_rate_at_most, column: a, max: 2}",
     "expectations[2].max", "less than or equal to 1"),
    ("name: s\nexpectations: [{type: no_such_check}]", "expectations[0].type",
     "unknown expectation type 'no_such_check'"),
    ("name: s\nexpectations: [{column: a}]", "expectations[0].type", "is required"),
    ("name: s\nexpectations: [{type: null_rate_at_most, max: 0.1}]", "expectations[0].column",
     "is required"),
    ("name: s\nexpectations: [{type: values_match_regex, column: a, regex: '(unclosed'}]",
     "expectations[0].regex", "not a valid regular expression"),
    ("name: s\nexpectations: [{type: values_between, column: a, min: big}]",
     "expectations[0].min", "must be a number or an ISO date/time"),
    ("name: s\nexpectations: [{type: values_between, column: a}]", "expectations[0]",
     "give min, max or both"),
    ("name: s\nexpectations: [{type: values_unique, column: a, columns: [b]}]",
     "expectations[0]", "give either column or columns"),
    ("name: s\nexpectations: [{type: column_exists, column: a, colour: red}]",
     "expectations[0].colour", "not a known field"),
    ("name: s\nexpectations: [{type: values_between, column: a, min: 0, mostly: 0}]",
     "expectations[0].mostly", "greater than 0"),
    ("name: 'bad name'\nexpectations: []", "name", "must be 1-128 characters"),
    ("expectations: []", "name", "is required"),
    ("name: s\nexpectations: [{type: column_exists", "suite", "is not valid YAML"),
    ("- just a list", "suite", "must be a mapping"),
])
def test_bad_suites_are_refused_naming_the_field_path(text: str, field: str,
                                                     problem: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Suite.from_yaml(text)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_suites_load_from_files_and_round_trip(tmp_path: Path) -> None:
    text = """
name: orders
description: what the orders table must satisfy
expectations:
  - {type: column_type, column: amount, dtype: numeric}
  - {type: values_between, column: amount, min: 0, max: 100, mostly: 0.99}
  - {type: values_in_set, column: city, values: [Oslo, Lima]}
  - {type: custom, check: total_at_least, column: amount, arguments: {minimum: 1}}
  - {type: range_within_previous, column: amount, tolerance: 0.2}
"""
    path = tmp_path / "orders.yaml"
    path.write_text(text)
    suite = Suite.from_yaml(path)
    assert suite == Suite.from_yaml(str(path)) == Suite.from_yaml(text)
    assert Suite.from_yaml(suite.to_yaml()) == suite
    assert [e.kind for e in suite.expectations][:2] == ["column_type", "values_between"]
    with pytest.raises(NotFoundError, match="suite file"):
        Suite.from_yaml(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("name: s\nexpectations: [{type: column_exists}]")
    with pytest.raises(InvalidArgumentError, match=r"expectations\[0\]\.column: is required in "):
        Suite.from_yaml(bad)


def test_summary_reads_as_a_report_and_failure_raises_it() -> None:
    suite = Suite.from_dict({"name": "orders", "expectations": [
        {"type": "column_exists", "column": "id"},
        {"type": "null_rate_at_most", "column": "amount", "max": 0.1},
    ]})
    report = evaluate(suite, table(), dataset_version_id="v1")
    assert not report.passed and len(report.failures) == 1
    assert report.summary() == (
        "Validation of suite 'orders' on dataset version v1: FAILED (1 of 2 expectations failed)\n"
        "  [ok  ] 0. column_exists(id): column 'id' is present\n"
        "  [FAIL] 1. null_rate_at_most(amount, max=0.1): null rate 0.25 (1 of 4) is above 0.1\n"
        "           observed: null_rate=0.25, nulls=1, rows=4")
    with pytest.raises(ValidationFailedError) as caught:
        report.raise_for_failure()
    assert caught.value.failures == 1 and caught.value.suite == "orders"
    assert str(caught.value) == report.summary()


def test_an_empty_or_passing_suite_does_not_raise() -> None:
    report = evaluate(Suite(name="empty"), table())
    assert report.passed and report.results == ()
    report.raise_for_failure()
    assert ValidationReport("s", "", ()).summary().endswith(": PASSED")


@given(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), max_size=60),
       st.integers(-500, 500), st.integers(0, 500))
def test_values_between_counts_exactly_the_values_outside(
        values: list[int | None], low: int, width: int) -> None:
    data = pa.table({"x": pa.array(values, pa.int64())})
    result = run_one({"type": "values_between", "column": "x", "min": low,
                      "max": low + width}, data)
    present = [v for v in values if v is not None]
    outside = [v for v in present if not low <= v <= low + width]
    assert result.observed["checked"] == len(present)
    assert result.observed["unexpected"] == len(outside)
    assert result.passed == (not outside)
    assert set(result.observed["examples"]) <= set(outside)
