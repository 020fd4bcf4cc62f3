"""One normal form for tables, and the content hash defined on it.

Two sources with the same rows in the same order normalise to the same schema and hash to the
same identity, whatever the file was called, its format, its row-group layout or batch sizes.
The hash is SHA-256 over an injective byte encoding of each column (validity, fixed-width
little-endian values, length-prefixed bytes), never over file bytes, and every stream is
concatenated row after row, so where batches are cut does not matter.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.canonical import canonical_json
from loopline.core.datasets import ColumnSchema

HASH_FORMAT = "loopline.columns.v2"
TIME_UNIT = "us"  # every timestamp, time and duration is stored and hashed in microseconds
CANONICAL_NAN = np.frombuffer(np.float64("nan").tobytes(), dtype=np.uint64)[0]


def normalise_type(arrow_type: pa.DataType) -> pa.DataType:
    """Map equivalent Arrow types to one (dictionaries decoded, strings, microsecond times)."""
    if pa.types.is_dictionary(arrow_type):
        return normalise_type(arrow_type.value_type)
    if pa.types.is_large_string(arrow_type) or str(arrow_type) == "string_view":
        return pa.string()
    if pa.types.is_large_binary(arrow_type) or str(arrow_type) == "binary_view":
        return pa.binary()
    if pa.types.is_timestamp(arrow_type):
        # CSV reads seconds, pandas writes nanoseconds, Parquet cannot store seconds: one unit
        # (microseconds; nanoseconds are truncated) keeps one instant one value.
        return pa.timestamp(TIME_UNIT, "UTC" if arrow_type.tz is not None else None)
    if pa.types.is_time(arrow_type):
        return pa.time64(TIME_UNIT)
    if pa.types.is_duration(arrow_type):
        return pa.duration(TIME_UNIT)
    if pa.types.is_date64(arrow_type):
        return pa.date32()
    return arrow_type


def normalise_schema(schema: pa.Schema) -> pa.Schema:
    """Return ``schema`` with normalised types and no metadata (pandas' included)."""
    return pa.schema([pa.field(f.name, normalise_type(f.type), nullable=True) for f in schema])


def columns_of(schema: pa.Schema) -> tuple[ColumnSchema, ...]:
    """Describe a schema's columns as (name, type) records."""
    return tuple(ColumnSchema(f.name, str(f.type)) for f in schema)


class _ColumnHasher:
    """Three running SHA-256 streams for one column: validity, fixed-width part, bytes part."""

    def __init__(self) -> None:
        self.validity = hashlib.sha256()
        self.values = hashlib.sha256()
        self.data = hashlib.sha256()

    def update(self, column: pa.Array) -> None:
        valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.uint8)
        self.validity.update(valid.tobytes())
        fixed, data = _encode(column)
        self.values.update(fixed)
        if data:
            self.data.update(data)

    def digest(self) -> bytes:
        return self.validity.digest() + self.values.digest() + self.data.digest()


def _encode(column: pa.Array) -> tuple[bytes, bytes]:
    """Return (fixed-width bytes, variable bytes) encoding the column's values, nulls as zero.

    Strings and binaries give their lengths as the fixed part and their bytes as the other, so
    the pair identifies the sequence of values exactly.
    """
    kind = column.type
    if pa.types.is_temporal(kind):
        column = column.view(pa.int64() if kind.bit_width == 64 else pa.int32())
        kind = column.type
    if pa.types.is_boolean(kind):
        return _fixed(pc.fill_null(column, False), "u1"), b""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = np.asarray(pc.fill_null(column, pa.scalar(0, type=kind))
                            .to_numpy(zero_copy_only=False))
        if values.dtype.kind == "f":
            # One NaN whatever its payload; -0.0 stays apart from 0.0, as Parquet keeps it.
            values = values.astype("<f8").view("<u8").copy()
            values[np.isnan(values.view("<f8"))] = CANONICAL_NAN
            return values.tobytes(), b""
        return values.astype(values.dtype.newbyteorder("<")).tobytes(), b""
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return _variable(column)
    texts = pa.array([None if v is None else json.dumps(v, sort_keys=True, default=str)
                      for v in column.to_pylist()], pa.string())
    return _variable(texts)


def _fixed(column: pa.Array, dtype: str) -> bytes:
    return np.asarray(column.to_numpy(zero_copy_only=False)).astype(dtype).tobytes()


def _variable(column: pa.Array) -> tuple[bytes, bytes]:
    filled = pc.fill_null(column, pa.scalar(b"" if pa.types.is_binary(column.type) else "",
                                            type=column.type))
    lengths = np.asarray(pc.binary_length(filled).to_numpy(zero_copy_only=False), dtype="<i8")
    offsets_buffer, data_buffer = filled.buffers()[1], filled.buffers()[2]
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[filled.offset:
                                                           filled.offset + len(filled) + 1]
    if data_buffer is None or len(offsets) == 0:
        return lengths.tobytes(), b""
    return lengths.tobytes(), data_buffer.to_pybytes()[offsets[0]:offsets[-1]]


class RowHasher:
    """Hashes normalised batches; the result does not depend on where batches are cut."""

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = canonical_json([[f.name, str(f.type)] for f in schema]).encode()
        self._columns = [_ColumnHasher() for _ in schema]
        self.rows = 0

    def update(self, batch: pa.RecordBatch) -> None:
        """Fold the rows of ``batch`` into the hash, in order."""
        if batch.num_rows == 0:
            return
        for hasher, column in zip(self._columns, batch.columns, strict=True):
            hasher.update(column)
        self.rows += batch.num_rows

    def hexdigest(self) -> str:
        """Return the content hash of every row seen so far."""
        total = hashlib.sha256(HASH_FORMAT.encode() + b"\0" + self._schema)
        total.update(self.rows.to_bytes(8, "little"))
        for hasher in self._columns:
            total.update(hasher.digest())
        return total.hexdigest()


