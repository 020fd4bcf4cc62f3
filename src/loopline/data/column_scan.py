"""Profile one Arrow column of one batch with vectorised pyarrow/numpy work; keeps no rows.

Kinds come from the Arrow type: integers, floats and decimals (as float64) are numeric;
booleans boolean; timestamps and dates datetime (epoch microseconds, sub-microsecond parts
truncated); strings, large strings, string views and dictionaries of strings are strings
(categorical or text, decided when read); dictionaries of other types take their value type;
everything else (lists, structs, maps, binary, durations, times, the null type) is ``other``,
profiled by count and nulls only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from loopline.data.category_sketch import CategoryCounter
from loopline.data.column_profile import ColumnProfile, Family, ProfileOptions
from loopline.data.quantile_sketch import QuantileSketch


def family_of(arrow_type: pa.DataType) -> Family:
    """Return the stored family of a column of ``arrow_type`` (see the module docstring)."""
    types = pa.types
    if types.is_dictionary(arrow_type):
        return family_of(arrow_type.value_type)
    if types.is_integer(arrow_type) or types.is_floating(arrow_type) or types.is_decimal(
            arrow_type):
        return Family.NUMERIC
    if types.is_boolean(arrow_type):
        return Family.BOOLEAN
    if types.is_timestamp(arrow_type) or types.is_date(arrow_type):
        return Family.DATETIME
    if (types.is_string(arrow_type) or types.is_large_string(arrow_type)
            or types.is_string_view(arrow_type)):
        return Family.STRING
    return Family.OTHER


def scan_column(name: str, column: Any, options: ProfileOptions) -> ColumnProfile:
    """Profile ``column`` (a pyarrow Array or ChunkedArray) named ``name``."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    family = family_of(column.type)
    nulls = int(column.null_count)
    present = pc.drop_null(column) if nulls else column
    if family is Family.NUMERIC:
        return _numeric(name, present, nulls, options)
    if family is Family.DATETIME:
        return _datetime(name, present, nulls, options)
    if family is Family.STRING:
        return _string(name, present, nulls, options)
    count = len(present)
    if family is Family.BOOLEAN:
        trues = pc.sum(present).as_py() if count else 0
        return ColumnProfile(name, family, count=count, nulls=nulls, true_count=int(trues or 0))
    return ColumnProfile(name, Family.OTHER, count=len(column) - nulls, nulls=nulls)


def _to_numpy(values: Any) -> npt.NDArray[Any]:
    if isinstance(values, pa.ChunkedArray):
        return np.asarray(values.to_numpy())
    return np.asarray(values.to_numpy(zero_copy_only=False))


def _numeric(name: str, present: Any, nulls: int, options: ProfileOptions) -> ColumnProfile:
    if pa.types.is_decimal(present.type) or pa.types.is_floating(present.type):
        present = pc.cast(present, pa.float64())
    data = _to_numpy(present)
    nan_count = 0
    low: int | float | None = None
    high: int | float | None = None
    if data.dtype.kind == "f":
        nan_mask = np.isnan(data)
        nan_count = int(np.count_nonzero(nan_mask))
        finite = data[~nan_mask] if nan_count else data
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
    else:
        finite = data
        if finite.size:
            low, high = int(finite.min()), int(finite.max())
    # a sum past float range is inf (or NaN when both signs overflow), not an error
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.sum(finite, dtype=np.float64))
    return ColumnProfile(
        name, Family.NUMERIC, count=int(data.size), nulls=nulls, nan_count=nan_count,
        min=low, max=high, sum=total,
        values=QuantileSketch.of(finite, options.alpha, options.max_buckets))


def _datetime(name: str, present: Any, nulls: int, options: ProfileOptions) -> ColumnProfile:
    timezone = getattr(present.type, "tz", None)
    micros = pc.cast(pc.cast(present, pa.timestamp("us", timezone), safe=False), pa.int64())
    data = _to_numpy(micros).astype(np.int64, copy=False)
    low = int(data.min()) if data.size else None
    high = int(data.max()) if data.size else None
    return ColumnProfile(
        name, Family.DATETIME, count=int(data.size), nulls=nulls, min=low, max=high,
        sum=float(np.sum(data, dtype=np.float64)), timezone=timezone,
        values=QuantileSketch.of(data, options.datetime_alpha, options.datetime_max_buckets))


def _string(name: str, present: Any, nulls: int, options: ProfileOptions) -> ColumnProfile:
    if not pa.types.is_string(present.type) and not pa.types.is_large_string(present.type):
        present = pc.cast(present, pa.large_string())
    lengths = _to_numpy(pc.utf8_length(present))
    counted = pc.value_counts(present)
    # value_counts yields each value once, so the pairs form a mapping as they are.
    pairs = dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(),
                     strict=True))
    return ColumnProfile(
        name, Family.STRING, count=int(lengths.size), nulls=nulls,
        lengths=QuantileSketch.of(lengths, options.alpha, options.max_buckets),
        categories=CategoryCounter.of(pairs, options.category_cap, options.sample_size),
        categorical_threshold=options.categorical_threshold, top_k=options.top_k)
