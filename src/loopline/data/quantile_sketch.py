"""A mergeable relative-error quantile sketch (DDSketch style); pure numpy, no I/O.

Values fall into log-spaced buckets: bucket ``k`` of the positive store holds ``x`` with
``gamma**(k-1) < x <= gamma**k``, ``gamma = (1 + alpha) / (1 - alpha)``, and a quantile read
back from an uncollapsed bucket is within relative error ``alpha`` of the true value of that
rank. Negative values go to a second store keyed by ``|x|``; values with
``|x| < MIN_INDEXABLE`` count as zero; infinities are clamped into the outermost bucket.

Rule kept: the sketch is a pure function of the multiset of values inserted. Each store keeps
a window of at most ``max_buckets`` consecutive keys. The positive store collapses its lowest
keys into ``K - max_buckets + 1`` where ``K`` is its highest key; the negative store collapses
its highest ``|x|`` keys likewise. So in both cases it is the lowest *values* that lose
accuracy. Because the window only ever moves one way as data arrives, collapsing twice equals
collapsing once (``max(max(k, f1), f2) == max(k, f2)`` for ``f1 <= f2``), hence
``merge(collapse(a), collapse(b)) == collapse(a + b)`` exactly, whatever the batching or order.
"""

from __future__ import annotations

import base64
import math
import sys
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from loopline.core.errors import InvalidArgumentError

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BUCKETS = 2048
MIN_INDEXABLE = sys.float_info.min

IntArray = npt.NDArray[np.int64]


def _frozen(array: npt.ArrayLike) -> IntArray:
    out = np.ascontiguousarray(array, dtype=np.int64)
    out.flags.writeable = False
    return out


_EMPTY = _frozen(np.zeros(0, dtype=np.int64))


class _Store:
    """Sorted unique bucket keys with positive counts; immutable once built."""

    __slots__ = ("counts", "keys")

    def __init__(self, keys: IntArray = _EMPTY, counts: IntArray = _EMPTY) -> None:
        self.keys = _frozen(keys)
        self.counts = _frozen(counts)

    @classmethod
    def from_keys(cls, keys: IntArray) -> _Store:
        """Count raw (unsorted, repeated) keys with one bincount."""
        if keys.size == 0:
            return cls()
        low = int(keys.min())
        binned = np.bincount(keys - low)
        present = np.flatnonzero(binned)
        return cls(present + low, binned[present])

    def combined(self, other: _Store) -> _Store:
        if other.keys.size == 0:
            return self
        if self.keys.size == 0:
            return other
        keys, inverse = np.unique(np.concatenate([self.keys, other.keys]), return_inverse=True)
        counts = np.zeros(keys.size, dtype=np.int64)
        np.add.at(counts, inverse, np.concatenate([self.counts, other.counts]))
        return _Store(keys, counts)

    def collapse_lowest(self, max_buckets: int) -> _Store:
        if self.keys.size == 0 or int(self.keys[-1] - self.keys[0]) < max_buckets:
            return self
        floor = int(self.keys[-1]) - max_buckets + 1
        cut = int(np.searchsorted(self.keys, floor, side="right"))
        keys = np.concatenate([[floor], self.keys[cut:]])
        counts = np.concatenate([[int(self.counts[:cut].sum())], self.counts[cut:]])
        return _Store(keys, counts)

    def collapse_highest(self, max_buckets: int) -> _Store:
        if self.keys.size == 0 or int(self.keys[-1] - self.keys[0]) < max_buckets:
            return self
        ceiling = int(self.keys[0]) + max_buckets - 1
        cut = int(np.searchsorted(self.keys, ceiling, side="left"))
        keys = np.concatenate([self.keys[:cut], [ceiling]])
        counts = np.concatenate([self.counts[:cut], [int(self.counts[cut:].sum())]])
        return _Store(keys, counts)

    def total(self) -> int:
        return int(self.counts.sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Store):
            return NotImplemented
        return np.array_equal(self.keys, other.keys) and np.array_equal(self.counts, other.counts)

    def to_dict(self) -> dict[str, Any]:
        """Dense counts from the lowest key, as base64 of zlib of the narrowest unsigned ints."""
        if self.keys.size == 0:
            return {"offset": 0, "width": 1, "counts": ""}
        dense = np.zeros(int(self.keys[-1] - self.keys[0]) + 1, dtype=np.uint64)
        dense[self.keys - self.keys[0]] = self.counts
        width = next(w for w in (1, 2, 4, 8) if int(dense.max()) < 256**w)
        raw = dense.astype(f"<u{width}").tobytes()
        text = base64.b64encode(zlib.compress(raw, 9)).decode("ascii")
        return {"offset": int(self.keys[0]), "width": width, "counts": text}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Store:
        if not data["counts"]:
            return cls()
        raw = zlib.decompress(base64.b64decode(data["counts"]))
        dense = np.frombuffer(raw, dtype=f"<u{int(data['width'])}").astype(np.int64)
        present = np.flatnonzero(dense)
        return cls(present + int(data["offset"]), dense[present])


class QuantileSketch:
    """Relative-error quantile sketch over float values; immutable, mergeable, exact to merge.

    Build one with ``QuantileSketch.of(values)``; ``a.merge(b)`` returns a new sketch equal to
    the sketch of both inputs together. Raises ``InvalidArgumentError`` for an ``alpha``
    outside (0, 1) or ``max_buckets < 1``.
    """

    __slots__ = ("_alpha", "_gamma", "_log_gamma", "_max_buckets", "_negative", "_positive",
                 "_zero")

    def __init__(self, alpha: float = DEFAULT_ALPHA, max_buckets: int = DEFAULT_MAX_BUCKETS,
                 ) -> None:
        if not 0.0 < alpha < 1.0:
            raise InvalidArgumentError("alpha", f"must be between 0 and 1, got {alpha!r}")
        if max_buckets < 1:
            raise InvalidArgumentError("max_buckets", f"must be at least 1, got {max_buckets}")
        self._alpha = float(alpha)
        self._max_buckets = int(max_buckets)
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._positive = _Store()
        self._negative = _Store()
        self._zero = 0

    @classmethod
    def of(cls, values: npt.ArrayLike, alpha: float = DEFAULT_ALPHA,
           max_buckets: int = DEFAULT_MAX_BUCKETS) -> QuantileSketch:
        """Sketch an array of numbers; NaN is ignored and infinities are clamped."""
        sketch = cls(alpha, max_buckets)
        data = np.asarray(values, dtype=np.float64).ravel()
        if np.isnan(data).any():
            data = data[~np.isnan(data)]
        if data.size == 0:
            return sketch
        magnitude = np.abs(data)
        indexable = magnitude >= MIN_INDEXABLE
        sketch._zero = int(data.size - np.count_nonzero(indexable))
        positive = data > 0
        sketch._positive = _Store.from_keys(sketch._keys(magnitude[positive & indexable]))
        sketch._negative = _Store.from_keys(sketch._keys(magnitude[~positive & indexable]))
        return sketch._collapsed()

    def _keys(self, magnitude: npt.NDArray[np.float64]) -> IntArray:
        clamped = np.minimum(magnitude, sys.float_info.max)
        return np.ceil(np.log(clamped) / self._log_gamma).astype(np.int64)

    def _collapsed(self) -> QuantileSketch:
        self._positive = self._positive.collapse_lowest(self._max_buckets)
        self._negative = self._negative.collapse_highest(self._max_buckets)
        return self

    @property
    def alpha(self) -> float:
        """The relative accuracy this sketch guarantees for uncollapsed buckets."""
        return self._alpha

    @property
    def max_buckets(self) -> int:
        """The widest key window each store keeps before collapsing."""
        return self._max_buckets

    @property
    def count(self) -> int:
        """How many values the sketch holds."""
        return self._zero + self._positive.total() + self._negative.total()

    @property
    def bucket_count(self) -> int:
        """Non-empty buckets, the zero bucket included when used (a size measure)."""
        return int(self._positive.keys.size + self._negative.keys.size + (self._zero > 0))

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Return the sketch of both inputs; raises InvalidArgumentError on other parameters."""
        if (self._alpha, self._max_buckets) != (other._alpha, other._max_buckets):
            raise InvalidArgumentError(
                "sketch", f"cannot merge alpha={other._alpha}, max_buckets={other._max_buckets} "
                f"into alpha={self._alpha}, max_buckets={self._max_buckets}")
        merged = QuantileSketch(self._alpha, self._max_buckets)
        merged._zero = self._zero + other._zero
        merged._positive = self._positive.combined(other._positive)
        merged._negative = self._negative.combined(other._negative)
        return merged._collapsed()

    def quantile(self, q: float) -> float | None:
        """Estimate the value of rank ``floor(q * (count - 1))``; None when empty.

        Raises InvalidArgumentError when ``q`` is outside [0, 1].
        """
        if not 0.0 <= q <= 1.0:
            raise InvalidArgumentError("q", f"must be between 0 and 1, got {q!r}")
        total = self.count
        if total == 0:
            return None
        rank = math.floor(q * (total - 1))
        negative_total = self._negative.total()
        if rank < negative_total:
            # Most negative first: the negative store in descending |x| key order.
            cumulative = np.cumsum(self._negative.counts[::-1])
            index = int(np.searchsorted(cumulative, rank, side="right"))
            return -self._value(int(self._negative.keys[::-1][index]))
        if rank < negative_total + self._zero:
            return 0.0
        cumulative = np.cumsum(self._positive.counts)
        index = int(np.searchsorted(cumulative, rank - negative_total - self._zero, side="right"))
        return self._value(int(self._positive.keys[index]))

    def _value(self, key: int) -> float:
        try:
            return 2.0 * math.exp(key * self._log_gamma) / (self._gamma + 1.0)
        except OverflowError:
            return sys.float_info.max

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return (self._alpha == other._alpha and self._max_buckets == other._max_buckets
                and self._zero == other._zero and self._positive == other._positive
                and self._negative == other._negative)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking numpy state: not hashable

    def __repr__(self) -> str:
        return (f"QuantileSketch(alpha={self._alpha}, count={self.count}, "
                f"buckets={self.bucket_count})")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form that ``from_dict`` reads back to an equal sketch."""
        return {"alpha": self._alpha, "max_buckets": self._max_buckets, "zero": self._zero,
                "positive": self._positive.to_dict(), "negative": self._negative.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        """Read back ``to_dict`` output; raises InvalidArgumentError when it is malformed."""
        try:
            sketch = cls(float(data["alpha"]), int(data["max_buckets"]))
            sketch._zero = int(data["zero"])
            sketch._positive = _Store.from_dict(data["positive"])
            sketch._negative = _Store.from_dict(data["negative"])
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise InvalidArgumentError("sketch", f"not a quantile sketch dict ({exc})") from exc
        return sketch
