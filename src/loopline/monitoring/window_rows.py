"""The prediction log's per-request records turned into per-row columns: a window's rows.

Pure: no I/O. One logged record is one request, which may hold several rows. Its ``inputs``
(JSON text) is the request body in the shape its protocol logged:

    [{col: value}, ...]                                 native /predict (the records)
    {"records": [{col: value}, ...]}                    native, as sent
    {"dataframe_records": [{col: value}, ...]}          MLflow
    {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                                                        MLflow; V2 with one 2-D tensor
    {"instances" | "inputs": [{col: value}, ...] or {col: [values]}}
                                                        MLflow
    {col: [values], ...}                                V2 (one tensor per column; a
                                                        ``[N, 1]`` tensor's ``[[v], ...]``
                                                        is read as ``[v, ...]``)

A dict with one of the format keys whose value does not have that format's shape is read as
a V2 tensor of that name.

The window's own columns are namespaced with two underscores (``__request_id``, ``__time``,
``__model_version``, ``__prediction``, ``__label``), so every input column keeps its name:
a model with an input called ``time``, ``label`` or ``prediction`` is monitored like any
other. Only an input named like one of those five is refused.

``outputs`` is the JSON list of predictions, one per row. A ``label`` (JSON text, null when
none) is split over the request's rows when it is a list of as many values; a one-row
request takes the label as it is (a one-value list gives its value).

Columns are built from Python lists in C (``operator.itemgetter`` over the records, one
``pyarrow.array`` per column), never cell by cell in Python. A column of scalars keeps its
Arrow type; a column holding lists or objects, or values of mixed types, becomes JSON text
written by ``data.json_text`` (keys sorted, compact), as the reference profile writes a
version's non-scalar outputs, so identical outputs compare equal.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from loopline.core.errors import InvalidArgumentError
from loopline.data.json_text import json_column

REQUEST_ID, TIME, MODEL_VERSION = "__request_id", "__time", "__model_version"
PREDICTION = "__prediction"
"""A row's prediction (the request's output for the row)."""
LABEL = "__label"
"""A row's feedback label, null when none."""
LOG_COLUMNS: Mapping[str, str] = {"request_id": REQUEST_ID, "time": TIME,
                                  "model_version": MODEL_VERSION}
"""The logged columns each row carries from its request, and their names in the window."""
WINDOW_COLUMNS = (REQUEST_ID, TIME, MODEL_VERSION)
LOG_LABEL = "label"
"""The label column of a prediction log read with feedback."""
RESERVED = frozenset({*WINDOW_COLUMNS, PREDICTION, LABEL})
RECORD_KEYS = ("records", "dataframe_records")
COLUMN_KEYS = ("instances", "inputs")
SPLIT_KEY = "dataframe_split"


def _refuse(field: str, request_id: str, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(field, f"request {request_id!r}: {problem}")


def _decode(text: Any, field: str, request_id: str) -> Any:
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise _refuse(field, request_id, f"is not JSON text ({exc})") from None


def _is_records(value: Any) -> bool:
    if type(value) is not list or not value:
        return False
    return type(value[0]) is dict if len(value) == 1 else set(map(type, value)) == {dict}


def _split(value: Any, request_id: str) -> dict[str, list[Any]]:
    """Return ``{"columns": [...], "data": [[...], ...]}`` as columns."""
    columns, data = value.get("columns"), value.get("data")
    if type(columns) is not list or not columns or not all(
            type(name) is str for name in columns) or len(set(columns)) != len(columns):
        raise _refuse("inputs", request_id, "dataframe_split.columns must be a list of "
                                            "distinct column names")
    if type(data) is not list or not data or not all(type(row) is list for row in data):
        raise _refuse("inputs", request_id, "dataframe_split.data must be a non-empty list "
                                            "of rows (lists)")
    if set(map(len, data)) != {len(columns)}:
        raise _refuse("inputs", request_id, f"dataframe_split.data rows must each hold "
                                            f"{len(columns)} values, one per column")
    transposed = zip(*data, strict=True)
    return {name: list(values) for name, values in zip(columns, transposed, strict=True)}


def _columns(value: dict[str, Any], request_id: str) -> dict[str, list[Any]]:
    """Return ``{column: [values]}`` checked: lists of one length, ``[[v], ...]`` unwrapped."""
    if not value:
        raise _refuse("inputs", request_id, "holds no columns")
    out: dict[str, list[Any]] = {}
    for name, values in value.items():
        if type(values) is not list:
            raise _refuse("inputs", request_id, f"column {name!r} must be a list of values")
        if values and all(type(cell) is list and len(cell) == 1 for cell in values):
            values = [cell[0] for cell in values]  # a V2 [N, 1] tensor, nested
        out[name] = values
    if len({len(values) for values in out.values()}) != 1 or not next(iter(out.values())):
        lengths = {name: len(values) for name, values in out.items()}
        raise _refuse("inputs", request_id, f"columns must hold the same number of values, "
                                            f"at least one: {lengths}")
    return out


def read_inputs(value: Any, request_id: str) -> list[dict[str, Any]] | dict[str, list[Any]]:
    """Return a logged request body as its records (a list) or its columns (a dict).

    Raises:
        InvalidArgumentError: naming ``inputs`` and the request when the body has none of the
            shapes in the module docstring.
    """
    if _is_records(value):
        return list(value)
    if type(value) is not dict:
        raise _refuse("inputs", request_id, "must be a list of records or an object (see "
                                            "loopline.monitoring.window_rows)")
    if len(value) == 1:
        key, inner = next(iter(value.items()))
        if key in (*RECORD_KEYS, *COLUMN_KEYS) and _is_records(inner):
            return list(inner)
        if key == SPLIT_KEY and type(inner) is dict:
            return _split(inner, request_id)
        if key in COLUMN_KEYS and type(inner) is dict:
            return _columns(inner, request_id)
    return _columns(value, request_id)


def _outputs(value: Any, rows: int, request_id: str) -> list[Any]:
    if type(value) is not list or len(value) != rows:
        got = f"{len(value)} values" if type(value) is list else type(value).__name__
        raise _refuse("outputs", request_id, f"must be a list of {rows} predictions, one per "
                                             f"row; got {got}")
    return value


def _labels(text: Any, rows: int, request_id: str) -> list[Any]:
    if text is None:
        return [None] * rows
    value = _decode(text, "label", request_id)
    if rows == 1:
        return [value[0] if type(value) is list and len(value) == 1 else value]
    if type(value) is not list or len(value) != rows:
        got = f"{len(value)} values" if type(value) is list else "one value"
        raise _refuse("label", request_id, f"must be a list of {rows} labels, one per row of "
                                           f"the request; got {got}")
    return value


FLUSH_RECORDS = 65_536
"""Pending records are turned into columns at least this often, so the dicts die young."""


class _Rows:
    """Columns grown request by request; consecutive records are turned into columns at once.

    With ``keep``, only those input columns are built (the others are read and dropped).
    """

    def __init__(self, keep: Collection[str] | None = None) -> None:
        self.rows = 0
        self.data: dict[str, list[Any]] = {}
        self._pending: list[dict[str, Any]] = []
        self._keep = None if keep is None else frozenset(keep)

    def add(self, inputs: list[dict[str, Any]] | dict[str, list[Any]]) -> int:
        """Add one request's rows; return how many."""
        if isinstance(inputs, list):
            self._pending.extend(inputs)
            if len(self._pending) >= FLUSH_RECORDS:
                self._flush()
            return len(inputs)
        self._flush()
        count = len(next(iter(inputs.values())))  # read_inputs holds one length, at least 1
        self._extend(inputs, count)
        return count

    def _extend(self, columns: dict[str, list[Any]], count: int) -> None:
        for name, values in columns.items():
            if self._keep is not None and name not in self._keep:
                continue
            column = self.data.setdefault(name, [])
            if len(column) < self.rows:  # the column was missing from earlier requests
                column.extend([None] * (self.rows - len(column)))
            column.extend(values)
        self.rows += count

    def _flush(self) -> None:
        records, self._pending = self._pending, []
        if not records:
            return
        names = dict.fromkeys(chain.from_iterable(records))  # every key, first-seen order
        if self._keep is not None:
            names = {name: None for name in names if name in self._keep}
        columns: dict[str, list[Any]] = {}
        for name in names:
            try:
                columns[name] = list(map(itemgetter(name), records))
            except KeyError:  # not every record names it: missing cells are null
                columns[name] = [record.get(name) for record in records]
        self._extend(columns, len(records))

    def finish(self) -> dict[str, list[Any]]:
        """Return every column, padded with nulls to the full row count."""
        self._flush()
        for column in self.data.values():
            column.extend([None] * (self.rows - len(column)))
        return self.data


def _request(rows: _Rows, text: Any, request_id: str) -> int:
    """Add one logged request's rows; return how many."""
    return rows.add(read_inputs(_decode(text, "inputs", request_id), request_id))


def _predictions(texts: list[Any], sizes: list[int], ids: list[str]) -> list[Any]:
    """Return every request's predictions, one per row, checked against its row count."""
    predictions: list[Any] = []
    for text, count, request_id in zip(texts, sizes, ids, strict=True):
        predictions.extend(_outputs(_decode(text, "outputs", request_id), count, request_id))
    return predictions


def to_arrow(values: list[Any]) -> pa.Array:
    """Return a column of scalars with its inferred Arrow type, else of JSON text."""
    return json_column(values)


def _check_names(names: Iterable[str]) -> None:
    clash = sorted(RESERVED.intersection(names))
    if clash:
        raise InvalidArgumentError("inputs", f"input columns {clash} clash with the window's "
                                             f"own columns ({', '.join(sorted(RESERVED))})")


def expand_predictions(table: pa.Table, columns: Collection[str] | None = None) -> pa.Table:
    """Return one row per scored row of the prediction log's ``table``.

    Columns: ``__request_id``, ``__time``, ``__model_version`` (of the table's
    ``request_id``, ``time`` and ``model_version``, those it has), the input columns by name
    in first-seen order (only those in ``columns``, when given, so a reader that needs a few
    builds only those), ``__prediction`` and ``__label`` (null where the request has no
    label, or everywhere when the table has no ``label`` column).

    Raises:
        InvalidArgumentError: naming ``table`` without ``request_id``, ``inputs`` or
            ``outputs``; naming ``inputs``, ``outputs`` or ``label`` and the request id for a
            body it cannot read, predictions or a list label that do not match the rows; naming
            ``inputs`` for an input column called like one of the window's own
            (``RESERVED``).
    """
    missing = [name for name in ("request_id", "inputs", "outputs")
               if name not in table.column_names]
    if missing:
        raise InvalidArgumentError("table", f"lacks the prediction log columns {missing}")
    ids = table.column("request_id").to_pylist()
    labels = table.column(LOG_LABEL).to_pylist() if LOG_LABEL in table.column_names else None
    rows = _Rows(columns)
    sizes = [_request(rows, text, request_id)
             for text, request_id in zip(table.column("inputs").to_pylist(), ids, strict=True)]
    predictions = _predictions(table.column("outputs").to_pylist(), sizes, ids)
    label_rows = [] if labels is None else list(chain.from_iterable(
        _labels(text, count, request_id)
        for text, count, request_id in zip(labels, sizes, ids, strict=True)))
    inputs = rows.finish()
    _check_names(inputs)
    base = table.select([name for name in LOG_COLUMNS if name in table.column_names])
    base = base.take(pa.array(np.repeat(np.arange(len(ids), dtype=np.int64), sizes)))
    arrays = {LOG_COLUMNS[name]: base.column(name) for name in base.column_names}
    arrays.update((name, to_arrow(values)) for name, values in inputs.items())
    arrays[PREDICTION] = to_arrow(predictions)
    arrays[LABEL] = to_arrow(label_rows) if labels is not None else pa.nulls(rows.rows)
    return pa.table(arrays)


__all__ = ["LABEL", "LOG_COLUMNS", "LOG_LABEL", "MODEL_VERSION", "PREDICTION", "REQUEST_ID",
           "RESERVED", "TIME", "WINDOW_COLUMNS", "expand_predictions", "read_inputs",
           "to_arrow"]
