"""One normal form for tables, and the content hash defined on it.

Two sources with the same rows in the same order normalise to the same schema and hash to the
same identity, whatever the file was called, its format, its row-group layout or batch sizes:
the hash is taken row by row over the normalised values, never over file bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.canonical import canonical_json
from loopline.core.datasets import ColumnSchema

HASH_FORMAT = "loopline.rows.v1"


def normalise_type(arrow_type: pa.DataType) -> pa.DataType:
    """Map equivalent Arrow types to one (dictionaries decoded, strings, UTC timestamps)."""
    if pa.types.is_dictionary(arrow_type):
        return normalise_type(arrow_type.value_type)
    if pa.types.is_large_string(arrow_type) or str(arrow_type) == "string_view":
        return pa.string()
    if pa.types.is_large_binary(arrow_type) or str(arrow_type) == "binary_view":
        return pa.binary()
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
        return pa.timestamp(arrow_type.unit, "UTC")
    return arrow_type


def normalise_schema(schema: pa.Schema) -> pa.Schema:
    """Return ``schema`` with normalised types and no metadata (pandas' included)."""
    return pa.schema([pa.field(f.name, normalise_type(f.type), nullable=True) for f in schema])


def columns_of(schema: pa.Schema) -> tuple[ColumnSchema, ...]:
    """Describe a schema's columns as (name, type) records."""
    return tuple(ColumnSchema(f.name, str(f.type)) for f in schema)


class RowHasher:
    """Hashes normalised batches row by row; the result does not depend on batch boundaries."""

    def __init__(self, schema: pa.Schema) -> None:
        self._hash = hashlib.sha256(HASH_FORMAT.encode())
        self._hash.update(canonical_json([[f.name, str(f.type)] for f in schema]).encode())
        self.rows = 0

    def update(self, batch: pa.RecordBatch) -> None:
        """Fold the rows of ``batch`` into the hash, in order."""
        if batch.num_rows == 0:
            return
        combined = np.zeros(batch.num_rows, dtype=np.uint64)
        for index, column in enumerate(batch.columns):
            column_hash = _column_hash(column)
            # A multiply-xor mix keeps column order significant, like hash_pandas_object does.
            combined = (combined * np.uint64(1_000_003)) ^ column_hash ^ np.uint64(index)
        self._hash.update(combined.tobytes())
        self.rows += batch.num_rows

    def hexdigest(self) -> str:
        """Return the content hash of every row seen so far."""
        return self._hash.hexdigest()


def _column_hash(column: pa.Array) -> np.ndarray[Any, np.dtype[np.uint64]]:
    values = _hashable_values(column)
    hashed = np.asarray(pd.util.hash_array(values, categorize=False), dtype=np.uint64)
    nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=np.uint64)
    # Nulls hash apart from any value, including NaN, the empty string and 0.
    return hashed ^ (nulls * np.uint64(0x9E3779B97F4A7C15))


def _hashable_values(column: pa.Array) -> np.ndarray[Any, Any]:
    """Return the column's values as a numpy array whose dtype depends only on the Arrow type.

    Nulls are filled with a fixed value first (their mask is hashed separately), so a batch
    with nulls and one without convert to the same dtype.
    """
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return np.asarray(pc.fill_null(column, pa.scalar(b"" if pa.types.is_binary(kind) else "",
                                                          type=kind)).to_pylist(), dtype=object)
    if pa.types.is_temporal(kind):  # hash the stored integers: same instant, same hash
        column = column.view(pa.int64() if kind.bit_width == 64 else pa.int32())
        kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        zero = False if pa.types.is_boolean(kind) else pa.scalar(0, type=kind)
        return np.asarray(pc.fill_null(column, zero).to_numpy(zero_copy_only=False))
    texts = [None if v is None else json.dumps(v, sort_keys=True, default=str)
             for v in column.to_pylist()]
    return np.asarray(["" if t is None else t for t in texts], dtype=object)
