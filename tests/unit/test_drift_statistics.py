"""Sketch-based drift statistics against scipy on the raw data, within their stated bounds.

Tolerances tested (module docstring of ``loopline.monitoring.drift_tests``):
* KS: ``D_sketch <= D_raw <= D_sketch + max_b min(p_b, q_b)`` always (hypothesis), so the
  sketch's p-value is never below ``ks_2samp(method="asymp")``'s; on unit-scale normal data
  ``|D_sketch - D_raw| <= 0.01`` (p-values then differ by what ``kstwo.sf`` makes of that).
* Wasserstein-1: ``|W_sketch - W_raw| <= a * (E|X_ref| + E|X_cur|)`` whenever no store
  pooled values (hypothesis); pooled positives move at most to the pooled bucket; the
  normalised score within 0.01 of scipy's over ``np.std(reference)`` on normal data.
* PSI: equal (1e-9) to the raw-data PSI with bins cut at the edge buckets' upper bounds.
* chi-square and Jensen-Shannon: equal (1e-9) to scipy's on the raw counts.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from loopline.data.sketches import MIN_INDEXABLE, CategoryCounter, QuantileSketch
from loopline.monitoring.drift_tests import (
    PSI_EPSILON,
    category_histogram,
    chi_square,
    jensen_shannon,
    ks,
    numeric_histogram,
    psi,
    wasserstein,
)

ALPHA = 0.01
values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=200)


def _histogram(reference: Any, current: Any, max_buckets: int = 2048) -> Any:
    return numeric_histogram(QuantileSketch.of(reference, ALPHA, max_buckets),
                             QuantileSketch.of(current, ALPHA, max_buckets))


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_sketch_ks_statistic_is_within_its_bound_of_the_raw_statistic(
        reference: list[float], current: list[float]) -> None:
    found = ks(_histogram(reference, current))
    raw = stats.ks_2samp(reference, current, method="asymp")
    assert found.statistic <= raw.statistic + 1e-12
    assert raw.statistic <= found.statistic + found.details["statistic_error_bound"] + 1e-12
    assert found.score >= raw.pvalue - 1e-12  # conservative: never more alarms than raw


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_sketch_wasserstein_is_within_alpha_of_the_mean_magnitudes(
        reference: list[float], current: list[float]) -> None:
    histogram = _histogram(reference, current)
    found = wasserstein(histogram)
    if histogram.pooled:  # a store outgrew its window: no bound is claimed
        assert found.details["score_error_bound"] is None and found.details["pooled"]
        return
    raw = stats.wasserstein_distance(reference, current)
    bound = ALPHA * (np.mean(np.abs(reference)) + np.mean(np.abs(current)))
    slack = 2 * MIN_INDEXABLE + 1e-9 * max(raw, 1.0)  # |x| < MIN_INDEXABLE counts as 0
    assert abs(found.statistic - raw) <= bound + slack
    assert found.details["score_error_bound"] * found.details["normaliser"] >= bound * 0.99 - slack


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-3, 1e6), min_size=1, max_size=100),
       st.lists(st.floats(1e-3, 1e6), min_size=1, max_size=100))
def test_pooling_positives_moves_them_at_most_to_the_pooled_bucket(
        reference: list[float], current: list[float]) -> None:
    histogram = _histogram(reference, current, max_buckets=8)
    raw = stats.wasserstein_distance(reference, current)
    gamma = (1 + ALPHA) / (1 - ALPHA)
    top = max(max(reference), max(current)) * gamma
    pooled_value = top * gamma ** -7  # the window's lowest bucket's upper bound, or above
    bound = ALPHA * (np.mean(np.abs(reference)) + np.mean(np.abs(current)))
    assert abs(wasserstein(histogram).statistic - raw) <= bound + 2 * pooled_value + 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_on_unit_scale_normal_data_ks_and_wasserstein_agree_with_scipy_closely(
        seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=3000)
    current = rng.normal(0.05 * seed, 1 + 0.05 * seed, size=2000)
    histogram = _histogram(reference, current)
    found = ks(histogram)
    raw = stats.ks_2samp(reference, current, method="asymp")
    assert abs(found.statistic - raw.statistic) <= 0.01
    assert found.score >= raw.pvalue
    assert found.score == pytest.approx(stats.kstwo.sf(found.statistic, 1200), abs=1e-12)
    assert found.details["effective_n"] == round(3000 * 2000 / 5000)
    moved = wasserstein(histogram)
    expected = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert abs(moved.score - expected) <= 0.01
    assert moved.details["score_error_bound"] <= 0.05


def test_ks_bound_is_wide_and_honest_when_buckets_are_coarse_for_the_spread() -> None:
    rng = np.random.default_rng(7)
    reference, current = rng.normal(1000, 1, 2000), rng.normal(1000.5, 1, 2000)
    found = ks(_histogram(reference, current))
    raw = stats.ks_2samp(reference, current, method="asymp").statistic
    assert found.details["statistic_error_bound"] > 0.2  # 2 % buckets hold the sample
    assert found.statistic <= raw <= found.statistic + found.details["statistic_error_bound"]


def test_numeric_psi_equals_raw_psi_with_bins_cut_at_the_edge_buckets() -> None:
    rng = np.random.default_rng(3)
    reference, current = rng.lognormal(0, 1, 5000), rng.lognormal(0.2, 1.1, 4000)
    histogram = _histogram(reference, current)
    found = psi(histogram)
    gamma = (1 + ALPHA) / (1 - ALPHA)
    keys = np.rint(np.log(histogram.values * (gamma + 1) / 2) / math.log(gamma))
    cumulative = np.cumsum(histogram.reference) / histogram.reference.sum()
    cuts = np.unique(np.searchsorted(cumulative, np.arange(1, 10) / 10))
    edges = gamma ** keys[cuts]  # each edge bucket's upper bound, inclusive
    p = np.bincount(np.searchsorted(edges, reference), minlength=edges.size + 1) / 5000
    q = np.bincount(np.searchsorted(edges, current), minlength=edges.size + 1) / 4000
    p, q = np.maximum(p, PSI_EPSILON), np.maximum(q, PSI_EPSILON)
    assert found.score == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=1e-9)
    assert found.details["bins"] == 10


def _counts(words: list[str]) -> dict[str, int]:
    return dict(Counter(words))


def test_chi_square_and_jensen_shannon_equal_scipy_on_raw_counts_with_unseen_values() -> None:
    rng = np.random.default_rng(11)
    reference = list(rng.choice(["a", "b", "c", "d"], 700, p=[0.4, 0.3, 0.2, 0.1]))
    current = list(rng.choice(["a", "b", "c", "e"], 500, p=[0.25, 0.25, 0.25, 0.25]))
    histogram = category_histogram(CategoryCounter.of(_counts(reference)),
                                   CategoryCounter.of(_counts(current)))
    assert histogram.labels == ("a", "b", "c", "d", "e")
    table = np.array([[reference.count(v) for v in histogram.labels],
                      [current.count(v) for v in histogram.labels]])
    expected = stats.chi2_contingency(table, correction=False)
    found = chi_square(histogram)
    assert found.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert found.score == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert found.details["dof"] == 4
    distance = jensen_shannon(histogram)
    assert distance.score == pytest.approx(
        jensenshannon(table[0] / 700, table[1] / 500, base=2), abs=1e-12)


def test_two_valued_chi_square_equals_the_pooled_two_proportion_z_test() -> None:
    histogram = category_histogram({"false": 120, "true": 80}, {"false": 90, "true": 110})
    pooled = (80 + 110) / 400
    z = (110 / 200 - 80 / 200) / math.sqrt(pooled * (1 - pooled) * (2 / 200))
    assert chi_square(histogram).score == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_one_category_in_both_samples_is_no_evidence() -> None:
    found = chi_square(category_histogram({"a": 10}, {"a": 30}))
    assert (found.score, found.statistic) == (1.0, 0.0)
    assert jensen_shannon(category_histogram({"a": 10}, {"a": 30})).score == 0.0


def test_sampled_counters_compare_only_values_exact_in_both_and_pool_the_rest() -> None:
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(300)]
    reference = CategoryCounter.of(_counts(list(rng.choice(words, 5000))), 100, 50)
    current = CategoryCounter.of(_counts(list(rng.choice(words, 5000))), 100, 50)
    assert reference.sampled and current.sampled
    histogram = category_histogram(reference, current)
    assert histogram.n == 5000 and histogram.m == 5000  # pooled: totals are exact
    kept = set(histogram.labels) - {"\x00other"}
    assert kept and all(histogram.reference[histogram.labels.index(v)]
                        == reference.counts[v] for v in kept)
    assert jensen_shannon(histogram).score < 0.1


def test_sketches_of_other_accuracies_are_refused() -> None:
    from loopline.core.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as refused:
        numeric_histogram(QuantileSketch.of([1.0], 0.01), QuantileSketch.of([1.0], 0.02))
    assert refused.value.field == "sketch"
