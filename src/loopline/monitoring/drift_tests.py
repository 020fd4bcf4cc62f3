"""Two-sample drift statistics over profiles' sketches and counters; vectorised, no raw rows.

Pure: no I/O. A numeric column is read from its ``QuantileSketch`` as buckets: bucket ``k``
holds the values ``x`` with ``gamma**(k-1) < |x| <= gamma**k`` (``gamma = (1+a)/(1-a)``,
``a`` the sketch's relative accuracy, 0.01 by default), with an exact count. The two
sketches' buckets are laid on the union of their keys (``Histogram``); each statistic is one
pass of numpy over that grid (at most a few thousand buckets, whatever the row count).

What the discretisation costs, stated as bounds and tested against scipy on raw data:

* **Kolmogorov-Smirnov.** Counts below every bucket boundary are exact, so the sketch's
  ``D`` is the raw two-sample statistic taken over the bucket boundaries only: ``D_sketch <=
  D_raw <= D_sketch + max_b min(p_b, q_b)`` where ``p_b``, ``q_b`` are the two samples' shares
  in bucket ``b`` (``details["statistic_error_bound"]``). The p-value comes from the
  asymptotic distribution of ``D`` (``scipy.stats.kstwo`` with the effective size
  ``round(n*m/(n+m))``, as ``ks_2samp(method="asymp")``), so the sketch's p-value is never
  below the raw one: the test is conservative, never flags more than the raw-data test would.
  For values of one sign spread over a range that is narrow against their magnitude (a
  ``year`` column, ``N(1000, 1)``), a 2 % bucket holds much of the sample, the bound is wide
  and the test is blunt; the bound in the details says so.
* **Wasserstein-1.** Every value is read as its bucket's representative, within relative
  error ``a`` of it, so ``|W_sketch - W_raw| <= a/(1-a) * (E|X_ref| + E|X_cur|)``; divided by
  the reference's standard deviation (itself estimated from the buckets, floored at 0.001 as
  Evidently does) for the normalised score (``details["score_error_bound"]``).
* **PSI (numeric).** The bins are cut at the buckets holding the reference's deciles; the
  score equals the raw-data PSI with the bins cut at those buckets' upper boundaries.
* **Categorical tests** (chi-square, Jensen-Shannon, PSI) use exact counts and equal scipy's
  on the raw data. A counter past its cap keeps a bottom-k sample by hash; then only the values
  whose hash is below both samples' k-th hash keep their own category (they are exact in
  both), the rest are pooled as one.

A sketch store keeps a window of ``max_buckets`` keys (about 17 orders of magnitude of
``|x|`` at the defaults). Past it the lowest *values* are pooled into the window's edge bucket:
the tiniest positives, but the largest-magnitude negatives (moved toward zero). Pooled values
lose their order, which the KS bound covers (the pooled bucket's share), and their position,
which no Wasserstein bound covers: then ``details["pooled"]`` is true and the bound is None.
"""

from __future__ import annotations

import base64
import math
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial import distance

from loopline.core.errors import InvalidArgumentError
from loopline.data.sketches import CategoryCounter, QuantileSketch, stable_hash

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PSI_BINS = 10
PSI_EPSILON = 1e-4  # the share given to an empty bin (Evidently's value)
MIN_STD = 0.001  # the floor of the Wasserstein normaliser (Evidently's value)
OTHER = "\x00other"  # the pooled category of sampled counters (a label data rarely holds)
_SIDE = 1 << 40  # codes: negatives below -_SIDE, zero at 0, positives above _SIDE


@dataclass(frozen=True, slots=True)
class Histogram:
    """Two samples' counts on one grid.

    Numeric: ``values`` are the buckets' representative values, ascending; ``pooled`` says
    a sketch's store spans its whole key window, so it may have pooled values (see the module
    docstring). Categorical: ``labels`` name the categories (sorted) and ``values`` is empty.
    """

    reference: FloatArray
    current: FloatArray
    values: FloatArray = field(default_factory=lambda: np.zeros(0))
    labels: tuple[str, ...] = ()
    alpha: float = 0.0
    pooled: bool = False

    @property
    def n(self) -> int:
        """The reference sample's size."""
        return int(self.reference.sum())

    @property
    def m(self) -> int:
        """The current sample's size."""
        return int(self.current.sum())

    @property
    def shares(self) -> tuple[FloatArray, FloatArray]:
        """Each sample's share per bucket (the reference's, the current's)."""
        return self.reference / self.reference.sum(), self.current / self.current.sum()


@dataclass(frozen=True, slots=True)
class Statistic:
    """What one test found: ``score`` is compared with the threshold."""

    score: float
    statistic: float
    details: dict[str, Any]


# -- reading sketches ------------------------------------------------------------------------

def _store(data: Mapping[str, Any]) -> tuple[IntArray, IntArray]:
    """Return one store's (keys, counts) from ``QuantileSketch.to_dict``'s documented form."""
    if not data["counts"]:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    raw = zlib.decompress(base64.b64decode(data["counts"]))
    dense = np.frombuffer(raw, dtype=f"<u{int(data['width'])}").astype(np.int64)
    present = np.flatnonzero(dense)
    return present + int(data["offset"]), dense[present]


@dataclass(frozen=True, slots=True)
class _Buckets:
    """One sketch's stores: (keys, counts) of positive and of negative values, and zeros."""

    positive: tuple[IntArray, IntArray]
    negative: tuple[IntArray, IntArray]
    zero: int
    max_buckets: int

    @classmethod
    def of(cls, sketch: QuantileSketch) -> _Buckets:
        data = sketch.to_dict()
        return cls(_store(data["positive"]), _store(data["negative"]), int(data["zero"]),
                   sketch.max_buckets)

    def edge(self, positive: bool) -> int | None:
        """Return the key a full store pools at: its lowest (positive) or highest (negative)."""
        keys = self.positive[0] if positive else self.negative[0]
        if keys.size and int(keys[-1] - keys[0]) >= self.max_buckets - 1:
            return int(keys[0] if positive else keys[-1])
        return None

    def codes(self, floor: int | None, ceiling: int | None) -> tuple[IntArray, IntArray]:
        """Return ordered codes (see ``_SIDE``) and counts, pooled at ``floor``/``ceiling``."""
        positive, negative = self.positive[0], self.negative[0]
        if floor is not None:
            positive = np.maximum(positive, floor)
        if ceiling is not None:
            negative = np.minimum(negative, ceiling)
        codes = np.concatenate([-_SIDE - negative, [0], _SIDE + positive])
        counts = np.concatenate([self.negative[1], [self.zero], self.positive[1]])
        return codes, counts


def _representatives(codes: IntArray, alpha: float) -> FloatArray:
    """Return each code's bucket value, as the sketch reads it (within ``alpha`` of any x)."""
    gamma = (1.0 + alpha) / (1.0 - alpha)
    sign = np.sign(codes)
    keys = np.where(sign > 0, codes - _SIDE, -_SIDE - codes).astype(np.float64)
    with np.errstate(over="ignore"):
        magnitude = np.minimum(2.0 * np.exp(keys * math.log(gamma)) / (gamma + 1.0),
                               sys.float_info.max)
    values: FloatArray = np.where(sign == 0, 0.0, sign * magnitude)
    return values


def _common(edges: list[int | None], pick: Any) -> int | None:
    found = [edge for edge in edges if edge is not None]
    return int(pick(found)) if found else None


def numeric_histogram(reference: QuantileSketch, current: QuantileSketch) -> Histogram:
    """Lay two sketches' buckets on the union of their keys.

    When either sketch pooled values at the edge of a store's window, both are pooled at the
    same edge first, so every bucket of the grid is one interval of values for both samples.

    Raises:
        InvalidArgumentError: naming ``sketch`` when the sketches' accuracies differ.
    """
    if reference.alpha != current.alpha:
        raise InvalidArgumentError("sketch", f"accuracies differ (reference alpha "
                                             f"{reference.alpha}, current {current.alpha}); "
                                             "profile both with the same options")
    mine, theirs = _Buckets.of(reference), _Buckets.of(current)
    floor = _common([mine.edge(True), theirs.edge(True)], max)
    ceiling = _common([mine.edge(False), theirs.edge(False)], min)
    ref_codes, ref_counts = mine.codes(floor, ceiling)
    cur_codes, cur_counts = theirs.codes(floor, ceiling)
    grid = np.union1d(ref_codes[ref_counts > 0], cur_codes[cur_counts > 0])
    ref = np.zeros(grid.size)
    cur = np.zeros(grid.size)
    ref_used, cur_used = ref_counts > 0, cur_counts > 0
    np.add.at(ref, np.searchsorted(grid, ref_codes[ref_used]), ref_counts[ref_used])
    np.add.at(cur, np.searchsorted(grid, cur_codes[cur_used]), cur_counts[cur_used])
    return Histogram(ref, cur, values=_representatives(grid, reference.alpha),
                     alpha=reference.alpha, pooled=floor is not None or ceiling is not None)


def _comparable(reference: CategoryCounter, current: CategoryCounter
                ) -> tuple[dict[str, int], dict[str, int]]:
    """Return counts whose categories are exact in both (see the module docstring)."""
    mine, theirs = dict(reference.counts), dict(current.counts)
    if not reference.sampled and not current.sampled:
        return mine, theirs
    cut = min(max(map(stable_hash, counts), default=0)
              for counter, counts in ((reference, mine), (current, theirs)) if counter.sampled)
    pooled = []
    for counter, counts in ((reference, mine), (current, theirs)):
        kept = {value: count for value, count in counts.items() if stable_hash(value) <= cut}
        kept[OTHER] = counter.total - sum(kept.values())
        pooled.append(kept)
    return pooled[0], pooled[1]


def category_histogram(reference: Mapping[str, int] | CategoryCounter,
                       current: Mapping[str, int] | CategoryCounter) -> Histogram:
    """Lay two samples' category counts on the sorted union of their categories."""
    if isinstance(reference, CategoryCounter) and isinstance(current, CategoryCounter):
        reference, current = _comparable(reference, current)
    elif isinstance(reference, CategoryCounter) or isinstance(current, CategoryCounter):
        raise InvalidArgumentError("categories", "give two counters or two mappings")
    labels = tuple(sorted(set(reference) | set(current)))
    ref = np.array([reference.get(label, 0) for label in labels], dtype=np.float64)
    cur = np.array([current.get(label, 0) for label in labels], dtype=np.float64)
    used = (ref > 0) | (cur > 0)
    return Histogram(ref[used], cur[used],
                     labels=tuple(label for label, keep in zip(labels, used, strict=True)
                                  if keep))


# -- numeric tests ---------------------------------------------------------------------------

def ks(histogram: Histogram) -> Statistic:
    """Run the two-sample Kolmogorov-Smirnov test on the bucket CDFs; the score is the p-value."""
    p, q = histogram.shares
    difference = np.abs(np.cumsum(p) - np.cumsum(q))
    statistic = float(min(difference.max(), 1.0))
    n, m = histogram.n, histogram.m
    effective = max(1, round(n * m / (n + m)))
    p_value = float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))
    bound = float(np.minimum(p, q).max())
    return Statistic(p_value, statistic, {"statistic": statistic, "p_value": p_value,
                                          "effective_n": effective,
                                          "statistic_error_bound": bound})


def _moments(values: FloatArray, counts: FloatArray) -> tuple[float, float, float]:
    """Return (mean, standard deviation, mean of |x|) of a bucketed sample."""
    weights = counts / counts.sum()
    mean = float(np.dot(weights, values))
    variance = float(np.dot(weights, (values - mean) ** 2))
    return mean, math.sqrt(max(variance, 0.0)), float(np.dot(weights, np.abs(values)))


def wasserstein(histogram: Histogram) -> Statistic:
    """Score Wasserstein-1 between the bucket distributions over the reference's std.

    Computed on the values divided by their largest magnitude (the score does not change with
    scale), so values near the ends of the float range neither overflow nor hide a drift.
    """
    p, q = histogram.shares
    scale = float(np.abs(histogram.values).max()) or 1.0
    values = histogram.values / scale
    distance_1 = float(np.dot(np.abs(np.cumsum(p) - np.cumsum(q))[:-1], np.diff(values)))
    _, std, ref_abs = _moments(values, histogram.reference)
    _, _, cur_abs = _moments(values, histogram.current)
    norm = max(std, MIN_STD / scale)
    score = distance_1 / norm
    alpha = histogram.alpha
    bound = None if histogram.pooled else alpha / (1.0 - alpha) * (ref_abs + cur_abs) / norm
    with np.errstate(over="ignore"):  # the unscaled figures may pass the float range: inf
        statistic, std, norm = (float(np.float64(value) * scale)
                                for value in (distance_1, std, norm))
    return Statistic(score, statistic, {
        "statistic": statistic, "reference_std": std, "normaliser": norm,
        "score_error_bound": bound, "pooled": histogram.pooled})


def _decile_bins(histogram: Histogram) -> IntArray:
    """Return each bucket's bin: cut after the buckets holding the reference's deciles."""
    cumulative = np.cumsum(histogram.reference) / histogram.reference.sum()
    cuts = np.searchsorted(cumulative, np.arange(1, PSI_BINS) / PSI_BINS, side="left")
    edges = np.unique(np.minimum(cuts, histogram.reference.size - 1))
    bins: IntArray = np.searchsorted(edges, np.arange(histogram.reference.size), side="left")
    return bins


def psi(histogram: Histogram) -> Statistic:
    """Score the population stability index over deciles (numeric) or categories."""
    ref, cur = histogram.reference, histogram.current
    if histogram.values.size:
        bins = _decile_bins(histogram)
        ref = np.bincount(bins, weights=ref).astype(np.float64)
        cur = np.bincount(bins, weights=cur).astype(np.float64)
    p = np.maximum(ref / ref.sum(), PSI_EPSILON)
    q = np.maximum(cur / cur.sum(), PSI_EPSILON)
    value = float(np.sum((q - p) * np.log(q / p)))
    return Statistic(value, value, {"statistic": value, "bins": int(ref.size),
                                    "epsilon": PSI_EPSILON})


# -- categorical tests -----------------------------------------------------------------------

def chi_square(histogram: Histogram) -> Statistic:
    """Run Pearson's chi-square test of homogeneity (no continuity correction); score: p-value.

    A 2 x K contingency table of the two samples' counts, so a category seen in only one of
    them counts as evidence, not as a division by zero. With two categories it equals the
    pooled two-proportion z-test.
    """
    if histogram.reference.size < 2:
        return Statistic(1.0, 0.0, {"statistic": 0.0, "p_value": 1.0, "dof": 0,
                                    "categories": int(histogram.reference.size)})
    table = np.vstack([histogram.reference, histogram.current])
    result = stats.chi2_contingency(table, correction=False)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    return Statistic(p_value, statistic, {"statistic": statistic, "p_value": p_value,
                                          "dof": int(result.dof),
                                          "categories": int(histogram.reference.size)})


def jensen_shannon(histogram: Histogram) -> Statistic:
    """Score the Jensen-Shannon distance (base 2, in [0, 1]) between the two shares."""
    p, q = histogram.shares
    value = float(distance.jensenshannon(p, q, base=2.0))
    value = 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)
    return Statistic(value, value, {"statistic": value,
                                    "categories": int(histogram.reference.size)})


__all__ = ["MIN_STD", "OTHER", "PSI_BINS", "PSI_EPSILON", "Histogram", "Statistic",
           "category_histogram", "chi_square", "jensen_shannon", "ks", "numeric_histogram",
           "psi", "wasserstein"]
