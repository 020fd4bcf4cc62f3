"""Slices: equality, list membership, inclusive ranges, conditions combined; nulls outside;
bad columns and conditions refused naming ``slices.<name>.<column>``; training-metric keys."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import SliceSpec
from loopline.monitoring.slices import slice_key, slice_mask

ROWS = pa.table({
    "color": ["red", "blue", None, "red", "green", "blue"],
    "age": [17, 18, 40, 65, 66, None],
    "score": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5],
    "flag": [True, False, True, None, False, True],
    "empty": pa.nulls(6),
})


def selected(where: dict[str, Any]) -> list[bool]:
    mask = slice_mask(ROWS, SliceSpec("s", where))
    values: list[bool] = mask.to_pylist()
    return values


def test_an_equality_selects_the_equal_rows_and_never_a_null() -> None:
    assert selected({"color": "red"}) == [True, False, False, True, False, False]
    assert selected({"flag": True}) == [True, False, True, False, False, True]


def test_a_list_selects_rows_holding_one_of_its_values() -> None:
    assert selected({"color": ["blue", "green"]}) == [False, True, False, False, True, True]
    assert selected({"age": [17, 66]}) == [True, False, False, False, True, False]


def test_a_range_is_inclusive_at_both_ends_and_either_end_may_be_absent() -> None:
    assert selected({"age": {"min": 18, "max": 65}}) == [False, True, True, True, False, False]
    assert selected({"age": {"min": 65}}) == [False, False, False, True, True, False]
    assert selected({"age": {"max": 17}}) == [True, False, False, False, False, False]
    assert selected({"score": {"min": 1, "max": 3.5}}) == [False, True, True, True, False,
                                                           False]


def test_every_condition_must_hold() -> None:
    assert selected({"color": ["red", "blue"], "age": {"min": 18}}) == [
        False, True, False, True, False, False]


def test_an_all_null_column_matches_no_row() -> None:
    assert selected({"empty": "x"}) == [False] * 6


def test_an_empty_table_gives_an_empty_mask() -> None:
    assert slice_mask(ROWS.slice(0, 0), SliceSpec("s", {"color": "red"})).to_pylist() == []


@pytest.mark.parametrize(("where", "column", "words"), [
    ({"colour": "red"}, "colour", "not a column"),
    ({"color": "red", "size": 3}, "size", "not a column"),
    ({"age": "old"}, "age", "cannot be compared"),
    ({"color": [1, 2]}, "color", "cannot be compared"),
    ({"age": {"min": 1, "over": 3}}, "age", "'over'"),
    ({"age": {"min": None}}, "age", "needs a 'min' or a 'max'"),
    ({"color": []}, "color", "empty list"),
    ({"color": None}, "color", "a value, a list or a range"),
])
def test_a_slice_the_rows_cannot_answer_is_refused_naming_slice_and_column(
        where: dict[str, Any], column: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        slice_mask(ROWS, SliceSpec("adults", where))
    assert caught.value.field == f"slices.adults.{column}"
    assert words in caught.value.problem


def test_a_single_equality_is_keyed_as_the_registry_writes_slices_else_by_name() -> None:
    assert slice_key(SliceSpec("reds", {"color": "red"})) == "color=red"
    assert slice_key(SliceSpec("young", {"age": 17})) == "age=17"
    assert slice_key(SliceSpec("cool", {"color": ["blue", "green"]})) == "cool"
    assert slice_key(SliceSpec("adults", {"age": {"min": 18}})) == "adults"
    assert slice_key(SliceSpec("both", {"color": "red", "age": 17})) == "both"
