"""The holdout sample's stored forms: inputs and model outputs as Parquet, and scoring them.

Inputs are stored as Parquet in one of three layouts, so the worker hands a model the same
kind of object it was given at registration::

    frame   a DataFrame (string column names, index dropped)
    array   a 2-D array; columns c0, c1, ...
    vector  a 1-D array (texts for a text pipeline, say); one column c0

Outputs are what a model returns for them, one array per method (``predict``,
``predict_proba``), 1-D or 2-D. A 2-D output is stored as columns ``NAME.0``, ``NAME.1`` ...
and every output's shape goes in the file's schema metadata, so decoding needs nothing but
the bytes. Registration, the verify worker and the comparing parent all use these functions:
one codec, so both sides of a comparison went through the same conversions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopline.core.errors import IntegrityError, InvalidArgumentError
from loopline.data.parquet_io import ARROW_ERRORS
from loopline.registry.flavors import LoadedModel

FRAME, ARRAY, VECTOR = "frame", "array", "vector"
LAYOUTS = (FRAME, ARRAY, VECTOR)
OUTPUTS = ("predict", "predict_proba")
_SHAPES = b"loopline.shapes"
# Written out in full so a pyarrow upgrade changing a default does not change the bytes.
_PARQUET = {"compression": "zstd", "version": "2.6", "use_dictionary": True,
            "write_statistics": False, "data_page_version": "1.0", "store_schema": True}


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **_PARQUET)
    return bytes(sink.getvalue().to_pybytes())


def _read(data: bytes, what: str) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IntegrityError(f"the holdout {what} are not readable Parquet: {exc}") from exc


def as_sample(data: Any, field: str = "holdout") -> tuple[Any, str]:
    """Return ``data`` as a DataFrame or a 1-D/2-D array, with its layout.

    Raises:
        InvalidArgumentError: naming ``field`` when it is none of those, or a frame's
            column names are not distinct strings.
    """
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        names = list(data.columns)
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise InvalidArgumentError(field, "a DataFrame's column names must be distinct "
                                              "strings to be stored as a holdout sample")
        return data.reset_index(drop=True), FRAME
    if isinstance(data, pd.Series):
        return data.to_numpy(), VECTOR
    if isinstance(data, np.ndarray | list | tuple):
        array = np.asarray(data)
        if array.ndim in (1, 2) and array.dtype.kind in "biufUSO":
            return array, VECTOR if array.ndim == 1 else ARRAY
    raise InvalidArgumentError(field, f"a {type(data).__name__} cannot be stored as a holdout "
                                      "sample; pass a DataFrame or a 1-D or 2-D array")


def encode_inputs(sample: Any, layout: str) -> bytes:
    """Return a sample from :func:`as_sample` as Parquet.

    Raises:
        InvalidArgumentError: naming ``holdout`` when Arrow cannot type a column.
    """
    try:
        if layout == FRAME:
            return _parquet(pa.Table.from_pandas(sample, preserve_index=False))
        columns = sample.reshape(len(sample), -1).T if layout == ARRAY else [sample]
        return _parquet(pa.table({f"c{i}": pa.array(c) for i, c in enumerate(columns)}))
    except ARROW_ERRORS as exc:
        raise InvalidArgumentError("holdout", f"cannot be stored as Parquet: {exc}") from exc


def decode_inputs(data: bytes, layout: str) -> Any:
    """Return the sample stored by :func:`encode_inputs` in the same layout.

    Raises:
        IntegrityError: when ``data`` is not Parquet or the layout is unknown.
    """
    table = _read(data, "inputs")
    if layout == FRAME:
        return table.to_pandas()
    columns = [column.to_numpy() for column in table.columns]
    if layout == VECTOR and len(columns) == 1:
        return columns[0]
    if layout == ARRAY:
        return np.column_stack(columns) if columns else np.empty((table.num_rows, 0))
    raise IntegrityError(f"the holdout inputs have an unknown layout {layout!r}")


def score(model: LoadedModel, inputs: Any) -> dict[str, Any]:
    """Return the model's outputs for ``inputs``: ``predict``, and ``predict_proba`` if any.

    Exceptions from the model propagate unchanged; callers decide whose fault they are.
    """
    found = {"predict": np.asarray(model.predict(inputs))}
    if model.has_proba:
        found["predict_proba"] = np.asarray(model.predict_proba(inputs))
    return found


def encode_outputs(outputs: Mapping[str, Any]) -> bytes:
    """Return model outputs (name → 1-D or 2-D array, equal rows) as Parquet.

    Raises:
        InvalidArgumentError: naming ``holdout`` when an output is not 1-D or 2-D, the row
            counts differ, or Arrow cannot type the values.
    """
    columns: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.ndim not in (1, 2):
            raise InvalidArgumentError("holdout", f"the model's {name} returned a "
                                                  f"{array.ndim}-D result; only 1-D and 2-D "
                                                  "outputs can be recorded")
        shapes[name] = list(array.shape)
        parts = [array] if array.ndim == 1 else list(array.T)
        for index, part in enumerate(parts):
            columns[name if array.ndim == 1 else f"{name}.{index}"] = part
    if len({shape[0] for shape in shapes.values()}) > 1:
        raise InvalidArgumentError("holdout", f"the outputs have different row counts: {shapes}")
    try:
        table = pa.table({key: pa.array(part) for key, part in columns.items()})
    except ARROW_ERRORS as exc:
        raise InvalidArgumentError("holdout", f"the model's outputs cannot be stored: {exc}"
                                   ) from exc
    return _parquet(table.replace_schema_metadata({_SHAPES: json.dumps(shapes)}))


def _shapes(table: pa.Table) -> dict[str, list[int]]:
    try:
        shapes = json.loads((table.schema.metadata or {})[_SHAPES])
    except (KeyError, ValueError) as exc:
        raise IntegrityError("the holdout outputs do not record their shapes") from exc
    valid = isinstance(shapes, dict) and all(
        isinstance(name, str) and isinstance(shape, list) and 1 <= len(shape) <= 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        for name, shape in shapes.items())
    if not valid:
        raise IntegrityError("the holdout outputs record malformed shapes")
    checked: dict[str, list[int]] = shapes
    return checked


def decode_outputs(data: bytes) -> dict[str, Any]:
    """Return the outputs stored by :func:`encode_outputs`, as numpy arrays.

    Raises:
        IntegrityError: when ``data`` is not such a file.
    """
    table = _read(data, "outputs")
    found: dict[str, Any] = {}
    for name, shape in _shapes(table).items():
        names = [name] if len(shape) == 1 else [f"{name}.{i}" for i in range(shape[1])]
        if not set(names) <= set(table.column_names) or table.num_rows != shape[0]:
            raise IntegrityError(f"the holdout outputs lack the columns of {name!r}")
        parts = [table.column(key).to_numpy() for key in names]
        if len(shape) == 1:
            found[name] = parts[0]
        else:
            found[name] = np.column_stack(parts) if parts else np.empty((shape[0], 0))
    return found
