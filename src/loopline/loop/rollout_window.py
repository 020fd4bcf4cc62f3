"""The rollout analysis's serving-stats window: kept names for ``data.serving_windows``.

The merge moved to the data layer so health monitoring uses the same implementation; import
from ``loopline.data.serving_windows`` in new code.
"""

from __future__ import annotations

from loopline.data.serving_windows import EMPTY, grid_ceil, grid_floor, merge_rows, p99, window

__all__ = ["EMPTY", "grid_ceil", "grid_floor", "merge_rows", "p99", "window"]
