"""What changed between two dataset versions: schema, row counts, and statistics that moved.

Pure: works from the versions' stored schemas and profiles, never from their rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopline.core.datasets import DatasetVersion

# Statistics compared per column when both profiles have them.
COMPARED = ("null_rate", "min", "max", "mean", "count")
RELATIVE_THRESHOLD = 0.01


@dataclass(frozen=True, slots=True)
class StatChange:
    """One statistic of one column that moved between the versions."""

    column: str
    statistic: str
    before: Any
    after: Any
    relative_change: float | None


@dataclass(frozen=True, slots=True)
class DatasetDiff:
    """The differences between ``before`` and ``after``."""

    before: str
    after: str
    rows_before: int
    rows_after: int
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()
    changes: tuple[StatChange, ...] = field(default=())

    @property
    def same_content(self) -> bool:
        """True when nothing at all changed."""
        return not (self.added or self.removed or self.retyped or self.changes) \
            and self.rows_before == self.rows_after


def diff_versions(before: DatasetVersion, after: DatasetVersion,
                  threshold: float = RELATIVE_THRESHOLD) -> DatasetDiff:
    """Compare two versions; numeric statistics count as moved past ``threshold`` (relative)."""
    old = {c.name: c.type for c in before.columns}
    new = {c.name: c.type for c in after.columns}
    retyped = tuple((name, old[name], new[name]) for name in old
                    if name in new and old[name] != new[name])
    changes: list[StatChange] = []
    if before.content_hash != after.content_hash:
        old_cols = before.profile.get("columns", {})
        new_cols = after.profile.get("columns", {})
        for name in (n for n in new if n in old):
            changes.extend(_column_changes(name, old_cols.get(name, {}),
                                           new_cols.get(name, {}), threshold))
    return DatasetDiff(
        before=before.ref, after=after.ref, rows_before=before.rows, rows_after=after.rows,
        added=tuple(n for n in new if n not in old), removed=tuple(n for n in old if n not in new),
        retyped=retyped, changes=tuple(changes))


def _column_changes(name: str, old: dict[str, Any], new: dict[str, Any],
                    threshold: float) -> list[StatChange]:
    found = []
    for stat in COMPARED:
        if stat not in old or stat not in new or old[stat] == new[stat]:
            continue
        relative = _relative(old[stat], new[stat])
        if relative is None or abs(relative) >= threshold:
            found.append(StatChange(name, stat, old[stat], new[stat], relative))
    return found


def _relative(before: Any, after: Any) -> float | None:
    numeric = (int, float)
    if isinstance(before, bool) or not isinstance(before, numeric) \
            or not isinstance(after, numeric):
        return None
    if before == 0:
        return None if after == 0 else float("inf")
    return (after - before) / abs(before)
