"""A category counter that merges exactly: exact counts up to a cap, then a bottom-k sample.

Pure: no I/O. Rule kept: the counter is a pure function of the multiset of values counted,
so equal inputs in any batch order or merge tree give equal counters.

* While at most ``cap`` distinct values have been seen, every value's count is exact.
* Past the cap the counter keeps the ``sample_size`` values with the smallest stable 64-bit
  hash (BLAKE2b, 8 bytes, of the UTF-8 value; ties broken by the value) with their exact
  counts, plus the exact total. A value in the bottom-k of a union is in the bottom-k of every
  part that contains it, so merged counts stay exact. The k-th smallest hash gives the KMV
  distinct-count estimate ``(k - 1) / (h_k / 2**64)``.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from loopline.core.errors import InvalidArgumentError

DEFAULT_CAP = 10_000
DEFAULT_SAMPLE_SIZE = 1_024
_HASH_SPACE = float(2**64)


def stable_hash(value: str) -> int:
    """Return the 64-bit BLAKE2b hash of ``value``'s UTF-8 bytes, the same in every process."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big")


class CategoryCounter:
    """Counts of string values; immutable, mergeable exactly, deterministic.

    Build one with ``CategoryCounter.of(pairs)``; ``a.merge(b)`` returns a new counter.
    Raises ``InvalidArgumentError`` when ``cap`` or ``sample_size`` is below 1, or when
    ``sample_size`` exceeds ``cap``.
    """

    __slots__ = ("_cap", "_counts", "_sample_size", "_sampled", "_total")

    def __init__(self, cap: int = DEFAULT_CAP, sample_size: int = DEFAULT_SAMPLE_SIZE) -> None:
        if cap < 1 or sample_size < 1:
            raise InvalidArgumentError("cap", f"cap ({cap}) and sample_size ({sample_size}) "
                                       "must be at least 1")
        if sample_size > cap:
            raise InvalidArgumentError("sample_size",
                                       f"{sample_size} must not exceed the cap ({cap})")
        self._cap = int(cap)
        self._sample_size = int(sample_size)
        self._counts: dict[str, int] = {}
        self._sampled = False
        self._total = 0

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, int]] | Mapping[str, int], cap: int = DEFAULT_CAP,
           sample_size: int = DEFAULT_SAMPLE_SIZE) -> CategoryCounter:
        """Count ``(value, count)`` pairs (a value may repeat; counts add up) or a mapping."""
        counter = cls(cap, sample_size)
        counts: dict[str, int] = {}
        if isinstance(pairs, Mapping):
            counts = {value: int(count) for value, count in pairs.items() if count > 0}
        else:
            for value, count in pairs:
                if count > 0:
                    counts[value] = counts.get(value, 0) + int(count)
        counter._total = sum(counts.values())
        counter._counts = counts
        return counter._bounded(sampled=False)

    def _bounded(self, sampled: bool) -> CategoryCounter:
        """Switch to (or stay in) the bottom-k sample when past the cap."""
        self._sampled = sampled or len(self._counts) > self._cap
        if self._sampled and len(self._counts) > self._sample_size:
            kept = heapq.nsmallest(self._sample_size, self._counts,
                                   key=lambda value: (stable_hash(value), value))
            self._counts = {value: self._counts[value] for value in kept}
        return self

    @property
    def cap(self) -> int:
        """The most distinct values counted exactly."""
        return self._cap

    @property
    def sample_size(self) -> int:
        """How many values the bottom-k sample keeps past the cap."""
        return self._sample_size

    @property
    def total(self) -> int:
        """The exact number of values counted."""
        return self._total

    @property
    def sampled(self) -> bool:
        """True once more than ``cap`` distinct values were seen (counts are then a sample)."""
        return self._sampled

    @property
    def counts(self) -> Mapping[str, int]:
        """Exact counts of every value, or of the sampled values once ``sampled``."""
        return dict(self._counts)

    def distinct(self) -> float:
        """Distinct values: exact below the cap, else KMV's estimate (never below cap + 1)."""
        if not self._sampled:
            return float(len(self._counts))
        k = len(self._counts)
        kth = max(stable_hash(value) for value in self._counts)
        estimate = (k - 1) / ((kth + 1) / _HASH_SPACE) if k > 1 else 0.0
        return max(estimate, float(self._cap + 1))

    def top(self, k: int) -> list[tuple[str, int]]:
        """Return the ``k`` most frequent kept values, ties broken by value (deterministic)."""
        return heapq.nsmallest(k, self._counts.items(), key=lambda item: (-item[1], item[0]))

    def merge(self, other: CategoryCounter) -> CategoryCounter:
        """Return the counter of both inputs; raises InvalidArgumentError on other parameters."""
        if (self._cap, self._sample_size) != (other._cap, other._sample_size):
            raise InvalidArgumentError(
                "category counter", f"cannot merge cap={other._cap}, sample_size="
                f"{other._sample_size} into cap={self._cap}, sample_size={self._sample_size}")
        merged = CategoryCounter(self._cap, self._sample_size)
        counts = dict(self._counts)
        for value, count in other._counts.items():
            counts[value] = counts.get(value, 0) + count
        merged._counts = counts
        merged._total = self._total + other._total
        return merged._bounded(sampled=self._sampled or other._sampled)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoryCounter):
            return NotImplemented
        return (self._cap, self._sample_size, self._sampled, self._total, self._counts) == (
            other._cap, other._sample_size, other._sampled, other._total, other._counts)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"CategoryCounter(total={self._total}, kept={len(self._counts)}, "
                f"sampled={self._sampled})")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form (values by count, then value) for ``from_dict``."""
        ordered = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        return {"cap": self._cap, "sample_size": self._sample_size, "sampled": self._sampled,
                "total": self._total, "values": [[value, count] for value, count in ordered]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryCounter:
        """Read back ``to_dict`` output; raises InvalidArgumentError when it is malformed."""
        try:
            counter = cls(int(data["cap"]), int(data["sample_size"]))
            counter._counts = {str(value): int(count) for value, count in data["values"]}
            counter._total = int(data["total"])
            counter._sampled = bool(data["sampled"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError("categories",
                                       f"not a category counter dict ({exc})") from exc
        return counter
