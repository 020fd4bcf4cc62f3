"""Writing normalised batches to Parquet in fixed row groups, and reading stored Parquet back.

Row groups have a fixed size whatever batches arrive, so equal content writes equal bytes
and the artifact store deduplicates it. Reads copy the verified object to a temporary file
first, because Parquet needs to seek and the verifying reader streams.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loopline.core.errors import InvalidArgumentError
from loopline.core.ports import BlobStore

ROW_GROUP_ROWS = 131_072
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError,
                TypeError)
"""What pyarrow raises for data it cannot convert, compare or cast (caught to name a field)."""


def conform(batch: pa.RecordBatch, schema: pa.Schema, field: str = "source") -> pa.RecordBatch:
    """Cast ``batch`` to the normalised ``schema``.

    Raises:
        InvalidArgumentError: naming ``field`` when a column cannot take the schema's type.
    """
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    try:
        return pa.RecordBatch.from_arrays(
            [_cast(column, target.type) for column, target in zip(batch.columns, schema,
                                                                  strict=True)],
            schema=schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise InvalidArgumentError(field, f"a column does not fit its type: {exc}") from exc


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    if column.type == target:
        return column
    # Times are normalised to microseconds; finer parts are truncated, documented.
    safe = not pa.types.is_temporal(target)
    return pc.cast(column, target, safe=safe)


def fixed_groups(batches: Iterable[pa.RecordBatch], rows: int = ROW_GROUP_ROWS,
                 ) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches into batches of exactly ``rows`` rows (the last may be short)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending = rest.combine_chunks().to_batches() if rest.num_rows else []
            count = rest.num_rows
    if count:
        merged = pa.Table.from_batches(pending).combine_chunks().to_batches()
        yield from merged


class ParquetSink:
    """A Parquet file being written to a temporary path; ``close`` returns the path."""

    def __init__(self, schema: pa.Schema, folder: str | None = None) -> None:
        handle, name = tempfile.mkstemp(prefix="loopline-", suffix=".parquet", dir=folder)
        os.close(handle)
        self.path = Path(name)
        self._writer = pq.ParquetWriter(str(self.path), schema, compression="zstd",
                                        write_statistics=True)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch as (part of) a row group."""
        self._writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
        self.rows += batch.num_rows

    def close(self) -> Path:
        """Finish the file and return its path."""
        self._writer.close()
        return self.path

    def discard(self) -> None:
        """Close and delete the file."""
        try:
            self._writer.close()
        finally:
            self.path.unlink(missing_ok=True)


@contextmanager
def open_stored(blobs: BlobStore, digest: str) -> Iterator[Any]:
    """Yield a ``pyarrow.parquet.ParquetFile`` over the verified object ``digest``."""
    handle, name = tempfile.mkstemp(prefix="loopline-read-", suffix=".parquet")
    os.close(handle)
    path = Path(name)
    try:
        blobs.get_to_file(digest, path)
        yield pq.ParquetFile(str(path), pre_buffer=False)  # bounded streaming reads
    finally:
        path.unlink(missing_ok=True)


def read_stored(blobs: BlobStore, digest: str, columns: list[str] | None = None) -> pa.Table:
    """Read the whole Parquet object ``digest`` (or some of its columns) as a table."""
    with open_stored(blobs, digest) as parquet:
        return parquet.read(columns=columns)
