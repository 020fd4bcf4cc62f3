"""The mergeable sketches profiles are built from, in one place to import them from.

``QuantileSketch`` (relative-error quantiles, ``quantile_sketch.py``) and ``CategoryCounter``
(exact-then-sampled category counts, ``category_sketch.py``). Both are immutable, pure
functions of the multiset they summarise, and merge exactly.
"""

from __future__ import annotations

from loopline.data.category_sketch import CategoryCounter, stable_hash
from loopline.data.quantile_sketch import MIN_INDEXABLE, QuantileSketch

__all__ = ["MIN_INDEXABLE", "CategoryCounter", "QuantileSketch", "stable_hash"]
