"""Incremental datasets: batches appended as partitions, and windowed reads over them.

Each appended batch becomes one Parquet object and one index row (with the min and max of
its time column), so a window read (a time range, or the last N rows) opens only the
partitions it needs, never the whole dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.clock import Clock
from loopline.core.datasets import DatasetPartition
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ids import new_id
from loopline.core.names import validate_name
from loopline.core.ports import Authorizer, BlobStore, authorize_if_wired
from loopline.data.normalise import RowHasher, normalise_schema
from loopline.data.parquet_io import (
    ParquetSink,
    conform,
    fixed_groups,
    open_stored,
    read_stored,
)
from loopline.data.sources import open_source
from loopline.store import MetadataStore
from loopline.store.datasets import DatasetQueries, add_partition, next_partition_seq


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows to read: a half-open time range [start, end), and/or the last N rows."""

    start: datetime | None = None
    end: datetime | None = None
    last: int | None = None

    def check(self) -> None:
        """Refuse naive times, an empty range and a non-positive row count."""
        for field, value in (("start", self.start), ("end", self.end)):
            if value is not None and value.tzinfo is None:
                raise InvalidArgumentError(field, "give a timezone-aware datetime")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidArgumentError("end", "must be after start")
        if self.last is not None and self.last < 1:
            raise InvalidArgumentError("last", "must be at least 1")


class PartitionService:
    """Appends partitions to incremental datasets and reads windows of them."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, actor: str, clock: Clock,
                 authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._authorizer = authorizer
        self._blobs = blobs
        self._actor = actor
        self._clock = clock
        self._queries = DatasetQueries(store.engine)

    def append(self, name: str, source: Any, time_column: str | None = None,
               ) -> DatasetPartition:
        """Append ``source`` as the next partition of ``name``.

        Raises:
            InvalidArgumentError: for a bad name, source, schema that differs from earlier
                partitions, or a time column that is missing or not a timestamp.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        authorize_if_wired(self._authorizer, self._actor, Permission.WRITE)
        validate_name(name, "name")
        stream = open_source(source)
        schema = normalise_schema(stream.schema)
        _check_time_column(schema, time_column)
        self._check_same_schema(name, schema)
        hasher, sink = RowHasher(schema), ParquetSink(schema)
        bounds = _Bounds(time_column)
        try:
            for group in fixed_groups(conform(b, schema) for b in stream.batches):
                hasher.update(group)
                bounds.update(group)
                sink.write(group)
            path = sink.close()
        except BaseException:
            sink.discard()
            raise
        try:
            if hasher.rows == 0:
                raise InvalidArgumentError("source", "it has no rows to append")
            blob = self._blobs.put_file(path)
        finally:
            path.unlink(missing_ok=True)
        with self._store.write(self._actor) as uow:
            uow.serialise()
            partition = DatasetPartition(
                id=new_id(), dataset=name, seq=next_partition_seq(uow.session, name),
                blob_digest=blob.digest, content_hash=hasher.hexdigest(), rows=hasher.rows,
                time_column=time_column, min_time=bounds.low, max_time=bounds.high,
                created_at=self._clock.now())
            add_partition(uow.session, partition)
            uow.emit(EventType.DATASET_PARTITION_APPENDED, f"{name}#{partition.seq}",
                     {"rows": partition.rows, "id": partition.id})
        return partition

    def _check_same_schema(self, name: str, schema: pa.Schema) -> None:
        existing = self._queries.partitions(name)
        if not existing:
            return
        with open_stored(self._blobs, existing[0].blob_digest) as parquet:
            first = parquet.schema_arrow  # the footer only, not the rows
        if not normalise_schema(first).equals(schema, check_metadata=False):
            raise InvalidArgumentError(
                "source", f"its columns differ from the earlier partitions of {name!r}: "
                          f"expected {_describe(first)}, got {_describe(schema)}")

    def partitions(self, name: str) -> list[DatasetPartition]:
        """List the partitions of ``name`` in append order."""
        validate_name(name, "name")
        return list(self._queries.partitions(name))

    def read(self, name: str, window: Window | None = None) -> pa.Table:
        """Read the rows of ``name`` inside ``window`` (all rows when None), in append order.

        Raises:
            InvalidArgumentError: for a malformed window, or a time range on a dataset
                appended without a time column.
            NotFoundError: when ``name`` has no partitions.
        """
        validate_name(name, "name")
        window = window or Window()
        window.check()
        every = list(self._queries.partitions(name))
        if not every:
            raise NotFoundError("incremental dataset", name,
                                "append to it first with `loopline data append`")
        if (window.start or window.end) and any(p.time_column is None for p in every):
            raise InvalidArgumentError("window", f"{name!r} has partitions without a time column")
        parts = list(self._queries.partitions(name, window.start, window.end))
        if not parts:  # nothing in the window: no rows, but the dataset's columns
            with open_stored(self._blobs, every[0].blob_digest) as parquet:
                return parquet.schema_arrow.empty_table()
        return _read_window(self._blobs, parts, window)


def _read_window(blobs: BlobStore, parts: list[DatasetPartition], window: Window) -> pa.Table:
    tables: list[pa.Table] = []
    rows = 0
    ordered = list(reversed(parts)) if window.last is not None else parts
    for part in ordered:
        table = _filter_time(read_stored(blobs, part.blob_digest), part.time_column, window)
        tables.append(table)
        rows += table.num_rows
        if window.last is not None and rows >= window.last:
            break
    if window.last is not None:
        tables.reverse()
    result = pa.concat_tables(tables)
    if window.last is not None and result.num_rows > window.last:
        result = result.slice(result.num_rows - window.last)
    return result


def _filter_time(table: pa.Table, column: str | None, window: Window) -> pa.Table:
    if column is None or (window.start is None and window.end is None):
        return table
    mask = pc.is_valid(table[column])
    kind = table.schema.field(column).type
    if window.start is not None:
        mask = pc.and_(mask, pc.greater_equal(table[column], _instant(window.start, kind)))
    if window.end is not None:
        mask = pc.and_(mask, pc.less(table[column], _instant(window.end, kind)))
    return table.filter(mask)


def _instant(moment: datetime, kind: pa.DataType) -> pa.Scalar:
    # The caller's offset (+02:00, say) is converted: Arrow compares only equal zones.
    return pa.scalar(moment.astimezone(UTC), type=kind)


class _Bounds:
    """The min and max of a time column across batches."""

    def __init__(self, column: str | None) -> None:
        self._column = column
        self.low: datetime | None = None
        self.high: datetime | None = None

    def update(self, batch: pa.RecordBatch) -> None:
        if self._column is None:
            return
        extremes = pc.min_max(batch.column(self._column)).as_py()
        low, high = extremes["min"], extremes["max"]
        if low is not None and (self.low is None or low < self.low):
            self.low = low
        if high is not None and (self.high is None or high > self.high):
            self.high = high


def _check_time_column(schema: pa.Schema, column: str | None) -> None:
    if column is None:
        return
    if column not in schema.names:
        raise InvalidArgumentError("time_column", f"{column!r} is not a column of the source")
    kind = schema.field(column).type
    if not pa.types.is_timestamp(kind) or kind.tz is None:
        raise InvalidArgumentError("time_column",
                                   f"{column!r} must be a timezone-aware timestamp, not {kind}")


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
