"""Dataset profiles: small, mergeable summaries of tables, streamed in bounded memory.

A ``Profile`` holds no raw rows. ``profile(a).merge(profile(b))`` equals ``profile(a + b)``
(sums and means up to float rounding; everything else exactly), so a profile is both the
summary of a dataset version and the monitoring reference windows are compared with.
``Profiler`` reads record batches one at a time and keeps only per-column sketches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.data.column_profile import ColumnKind, ColumnProfile, ProfileOptions
from loopline.data.column_scan import scan_column

__all__ = ["ColumnKind", "ColumnProfile", "Profile", "ProfileOptions", "Profiler",
           "profile_batches", "profile_table"]


@dataclass(frozen=True, slots=True)
class Profile:
    """The profile of a table: its row count and one ``ColumnProfile`` per column, in order."""

    rows: int = 0
    columns: tuple[ColumnProfile, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in table order."""
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> ColumnProfile:
        """Return the profile of column ``name``; raise NotFoundError when there is none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise NotFoundError("column", name, f"profiled columns are {list(self.names)}")

    def merge(self, other: Profile) -> Profile:
        """Profile of both tables' rows, in this profile's column order.

        The empty profile (no rows, no columns) is the identity. Raises InvalidArgumentError
        naming the column when a column is in only one profile or kinds cannot merge.
        """
        if not self.columns and self.rows == 0:
            return other
        if not other.columns and other.rows == 0:
            return self
        theirs = {column.name: column for column in other.columns}
        for name in (*self.names, *theirs):
            if name not in theirs or name not in self.names:
                raise InvalidArgumentError(
                    f"column {name!r}", "is in only one of the profiles; only profiles of "
                    "tables with the same columns merge")
        merged = tuple(column.merge(theirs[column.name]) for column in self.columns)
        return Profile(rows=self.rows + other.rows, columns=merged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"rows": n, "columns": {name: {"kind", "count", ...}}}``."""
        return {"rows": self.rows,
                "columns": {column.name: column.to_dict() for column in self.columns}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Read back ``to_dict`` output exactly; raises InvalidArgumentError when malformed."""
        try:
            rows = int(data["rows"])
            items = list(data["columns"].items())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgumentError("profile", f"not a profile dict ({exc!r})") from exc
        return cls(rows=rows,
                   columns=tuple(ColumnProfile.from_dict(name, item) for name, item in items))


class Profiler:
    """Builds a ``Profile`` incrementally from record batches; memory is bounded by sketches.

    Every batch must have the columns of the first, in the same order, with types of the same
    family; otherwise ``update`` raises InvalidArgumentError naming the column. Given a
    ``schema``, a profiler that sees no batch still profiles its columns (with zero counts).
    """

    def __init__(self, options: ProfileOptions | None = None,
                 schema: pa.Schema | None = None) -> None:
        self._options = options if options is not None else ProfileOptions()
        self._rows = 0
        self._columns: dict[str, ColumnProfile] | None = None
        if schema is not None:
            self.update(schema.empty_table())

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add one record batch (or a table, read column by column) to the profile."""
        names = list(batch.schema.names)
        if len(set(names)) != len(names):
            duplicate = next(name for name in names if names.count(name) > 1)
            raise InvalidArgumentError(f"column {duplicate!r}", "appears twice in the batch")
        if self._columns is not None and names != list(self._columns):
            raise InvalidArgumentError(
                "batch", f"columns {names} differ from the first batch's {list(self._columns)}")
        parts = {name: scan_column(name, batch.column(index), self._options)
                 for index, name in enumerate(names)}
        if self._columns is None:
            self._columns = parts
        else:
            self._columns = {name: self._columns[name].merge(part)
                             for name, part in parts.items()}
        self._rows += batch.num_rows

    def result(self) -> Profile:
        """Return the profile of every row seen so far (the empty profile before any batch)."""
        columns = tuple(self._columns.values()) if self._columns is not None else ()
        return Profile(rows=self._rows, columns=columns)


def profile_batches(batches: Iterable[pa.RecordBatch], options: ProfileOptions | None = None,
                    schema: pa.Schema | None = None) -> Profile:
    """Profile a stream of record batches, holding one batch at a time.

    With no batches the profile is empty, or has ``schema``'s columns with zero counts.
    """
    profiler = Profiler(options, schema)
    for batch in batches:
        profiler.update(batch)
    return profiler.result()


def profile_table(table: pa.Table, options: ProfileOptions | None = None) -> Profile:
    """Profile an in-memory table (its columns are scanned whole, without copying rows)."""
    profiler = Profiler(options)
    profiler.update(table)
    return profiler.result()
