"""Quantile sketch and category counter: accuracy, exact merges, determinism, round trips."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.core.errors import InvalidArgumentError
from loopline.data.sketches import MIN_INDEXABLE, CategoryCounter, QuantileSketch

finite_floats = st.floats(-1e12, 1e12, allow_nan=False, allow_subnormal=False)
words = st.text(alphabet="abcdeé", max_size=3)


def _pairs(values: list[str]) -> list[tuple[str, int]]:
    return [(value, 1) for value in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(finite_floats, min_size=1, max_size=300), st.floats(0.0, 1.0))
def test_quantile_is_within_relative_error_of_the_true_value_of_that_rank(
        values: list[float], q: float) -> None:
    sketch = QuantileSketch.of(values, alpha=0.01, max_buckets=100_000)
    expected = float(np.quantile(np.array(values), q, method="lower"))
    estimate = sketch.quantile(q)
    assert estimate is not None
    if abs(expected) < MIN_INDEXABLE:
        assert estimate == 0.0
    else:
        assert abs(estimate - expected) <= 0.01 * abs(expected) * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite_floats, max_size=200), st.data())
def test_merged_sketches_equal_the_sketch_of_the_union_even_when_collapsed(
        values: list[float], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(values)))
    whole = QuantileSketch.of(values, max_buckets=8)
    halves = QuantileSketch.of(values[:cut], max_buckets=8).merge(
        QuantileSketch.of(values[cut:], max_buckets=8))
    assert halves == whole
    first, second = sorted(data.draw(st.lists(st.integers(0, len(values)), min_size=2,
                                              max_size=2)))
    parts = [QuantileSketch.of(chunk, max_buckets=8)
             for chunk in (values[:first], values[first:second], values[second:])]
    assert parts[2].merge(parts[0]).merge(parts[1]) == whole
    assert parts[1].merge(parts[2].merge(parts[0])) == whole


def test_collapse_keeps_at_most_max_buckets_per_store_and_the_exact_count() -> None:
    values = np.concatenate([np.geomspace(1e-6, 1e6, 5000), -np.geomspace(1e-6, 1e6, 5000)])
    sketch = QuantileSketch.of(values, alpha=0.01, max_buckets=64)
    assert sketch.count == 10_000
    assert sketch.bucket_count <= 2 * 64
    top = sketch.quantile(1.0)
    assert top is not None and abs(top - 1e6) <= 0.01 * 1e6


def test_sketch_ignores_nan_and_clamps_infinities_into_the_outer_buckets() -> None:
    sketch = QuantileSketch.of([1.0, math.nan, math.inf, -math.inf, 0.0])
    assert sketch.count == 4
    highest, lowest = sketch.quantile(1.0), sketch.quantile(0.0)
    assert highest is not None and lowest is not None
    assert math.isfinite(highest) and highest > 1e300
    assert math.isfinite(lowest) and lowest < -1e300


def test_empty_sketch_has_no_quantile_and_a_zero_count() -> None:
    sketch = QuantileSketch.of([])
    assert sketch.count == 0
    assert sketch.quantile(0.5) is None


def test_quantile_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="q"):
        QuantileSketch.of([1.0]).quantile(1.5)


def test_sketches_with_different_accuracy_refuse_to_merge() -> None:
    with pytest.raises(InvalidArgumentError, match="alpha"):
        QuantileSketch.of([1.0], alpha=0.01).merge(QuantileSketch.of([1.0], alpha=0.02))


@settings(max_examples=100, deadline=None)
@given(st.lists(finite_floats, max_size=200), st.integers(1, 50))
def test_sketch_round_trips_through_json_to_an_equal_sketch(
        values: list[float], max_buckets: int) -> None:
    sketch = QuantileSketch.of(values, max_buckets=max_buckets)
    again = QuantileSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert again == sketch
    assert again.quantile(0.5) == sketch.quantile(0.5)


def test_malformed_sketch_dict_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="sketch"):
        QuantileSketch.from_dict({"alpha": 0.01})


def test_sketch_profiles_a_million_values_in_well_under_a_second() -> None:
    import time

    values = np.random.default_rng(1).lognormal(0, 3, 1_000_000)
    started = time.perf_counter()
    QuantileSketch.of(values)
    assert time.perf_counter() - started < 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(words, max_size=120), st.data(), st.integers(1, 6))
def test_merged_counters_equal_the_counter_of_the_union_past_the_cap(
        values: list[str], data: st.DataObject, sample_size: int) -> None:
    cap = sample_size + data.draw(st.integers(0, 4))
    whole = CategoryCounter.of(_pairs(values), cap, sample_size)
    first, second = sorted(data.draw(st.lists(st.integers(0, len(values)), min_size=2,
                                              max_size=2)))
    parts = [CategoryCounter.of(_pairs(chunk), cap, sample_size)
             for chunk in (values[:first], values[first:second], values[second:])]
    assert parts[0].merge(parts[1]).merge(parts[2]) == whole
    assert parts[2].merge(parts[1].merge(parts[0])) == whole


@settings(max_examples=100, deadline=None)
@given(st.lists(words, max_size=120), st.permutations(range(4)))
def test_counter_is_the_same_whatever_the_batch_order(
        values: list[str], order: list[int]) -> None:
    batches = [values[index::4] for index in range(4)]
    forward = [CategoryCounter.of(_pairs(batch), 5, 2) for batch in batches]
    shuffled = [forward[index] for index in order]
    left = forward[0].merge(forward[1]).merge(forward[2]).merge(forward[3])
    right = shuffled[0].merge(shuffled[1]).merge(shuffled[2]).merge(shuffled[3])
    assert left == right
    assert left.to_dict() == right.to_dict()


@settings(max_examples=100, deadline=None)
@given(st.lists(words, max_size=150))
def test_sampled_counter_keeps_exact_counts_and_exact_total(values: list[str]) -> None:
    counter = CategoryCounter.of(_pairs(values), cap=4, sample_size=3)
    truth = Counter(values)
    assert counter.total == len(values)
    assert counter.sampled == (len(truth) > 4)
    assert len(counter.counts) <= (3 if counter.sampled else 4)
    for value, count in counter.counts.items():
        assert truth[value] == count


def test_distinct_estimate_is_close_for_many_values_and_exact_below_the_cap() -> None:
    many = CategoryCounter.of({f"v{index}": 1 for index in range(50_000)}, 10_000, 1_024)
    assert many.sampled
    assert abs(many.distinct() - 50_000) / 50_000 < 0.1
    few = CategoryCounter.of({"a": 3, "b": 1}, 10, 5)
    assert few.distinct() == 2.0 and not few.sampled


def test_top_breaks_count_ties_by_value() -> None:
    counter = CategoryCounter.of([("b", 2), ("a", 2), ("c", 5), ("d", 1)])
    assert counter.top(3) == [("c", 5), ("a", 2), ("b", 2)]


def test_sample_larger_than_cap_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="sample_size"):
        CategoryCounter(cap=3, sample_size=4)


def test_counters_with_different_caps_refuse_to_merge() -> None:
    with pytest.raises(InvalidArgumentError, match="cap"):
        CategoryCounter.of([("a", 1)], 10, 5).merge(CategoryCounter.of([("a", 1)], 11, 5))


@settings(max_examples=100, deadline=None)
@given(st.lists(words, max_size=80))
def test_counter_round_trips_through_json_to_an_equal_counter(values: list[str]) -> None:
    counter = CategoryCounter.of(_pairs(values), 4, 2)
    assert CategoryCounter.from_dict(json.loads(json.dumps(counter.to_dict()))) == counter
