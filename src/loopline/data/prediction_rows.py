"""Validation and columnar encoding of prediction and feedback rows into fixed Arrow schemas.

No I/O. Every refusal names the field (``records[3].time``, ``records.latency_ms``) and a
batch is refused whole, before anything is written. Inputs, outputs and labels become
canonical JSON text, so heterogeneous models share one schema. Records are turned into
columns in one pass (no per-row dicts); tables are checked with vectorised kernels.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name
from loopline.core.predictions import (
    KIND_FEEDBACK,
    KIND_PREDICTIONS,
    MAX_REQUEST_ID,
    FeedbackRecord,
    PredictionRecord,
)

TIME_TYPE = pa.timestamp("us", tz="UTC")
PREDICTION_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("time", TIME_TYPE, nullable=False),
    pa.field("deployment", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("inputs", pa.string(), nullable=False),
    pa.field("outputs", pa.string(), nullable=False),
    pa.field("latency_ms", pa.float64(), nullable=False),
])
FEEDBACK_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("time", TIME_TYPE, nullable=False),
    pa.field("label", pa.string(), nullable=False),
])
_JSON_COLUMNS = ("inputs", "outputs", "label")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PredictionRow = tuple[str, int, str, str, str, str, float]
FeedbackRow = tuple[str, int, str]
Records: TypeAlias = Iterable[Any] | pa.Table | pd.DataFrame


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A validated batch, ready to become one segment; build it with the ``prepare_*`` calls."""

    kind: str
    table: pa.Table
    deployment: str | None
    model_versions: tuple[str, ...]


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _make_encoder() -> Callable[[Any], str]:
    """Return a canonical-JSON encoder (same text as ``core.canonical.canonical_json``).

    ``json.dumps`` builds a new encoder on every call; on the hot path that is half the cost
    of a row, so the C encoder is built once. Without markers it does not look for cycles:
    a cyclic value ends in RecursionError, which ``encode_json`` refuses like any bad value.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                allow_nan=False, default=_refuse).encode
    chunks = make(None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False,
                  False)
    return lambda value: "".join(chunks(value, 0))


_encode = _make_encoder()


def encode_json(value: Any, field: str) -> str:
    """Return ``value`` as canonical JSON text.

    Raises:
        InvalidArgumentError: naming ``field`` when the value is not JSON (NaN, sets, objects,
            cycles, mixed key types).
    """
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(field, f"must be a JSON value: {exc}") from exc


# ``json.loads`` goes through two Python frames and a regex per call; the decoder's scanner
# (C when available) parses the value directly, twice as fast on short texts.
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # not in typeshed
_WHITESPACE = " \t\n\r"


def _canonical_text(text: str, field: str) -> str:
    body = text.strip(_WHITESPACE)
    try:
        parsed, end = _scan(body, 0)
    except StopIteration:
        raise InvalidArgumentError(field, f"must be JSON text, not {text[:40]!r}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidArgumentError(field, f"must be JSON text: {exc}") from exc
    if end != len(body):
        raise InvalidArgumentError(field, f"must be one JSON value; extra data at {end}")
    return encode_json(parsed, field)


# ----------------------------------------------------------------- records, one at a time


def _request_id(value: Any) -> str:
    if type(value) is not str or not value or len(value) > MAX_REQUEST_ID:
        raise InvalidArgumentError(
            "request_id", f"{value!r} must be a string of 1-{MAX_REQUEST_ID} characters")
    return value


def _micros(value: Any, field: str = "time") -> int:
    if not isinstance(value, datetime):
        raise InvalidArgumentError(field, f"must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidArgumentError(field, f"{value} is naive; give a timezone-aware datetime")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _latency(value: Any) -> float:
    if (type(value) is not float and type(value) is not int) and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise InvalidArgumentError("latency_ms", f"must be a number, not {type(value).__name__}")
    latency = float(value)
    if not 0.0 <= latency < math.inf:
        raise InvalidArgumentError("latency_ms", f"{latency} must be finite and zero or more")
    return latency


def prediction_row(record: Any) -> PredictionRow:
    """Check one ``PredictionRecord`` and return its encoded row.

    Raises:
        InvalidArgumentError: naming the record's field (unprefixed) that is not acceptable.
    """
    if not isinstance(record, PredictionRecord):
        raise InvalidArgumentError("", f"must be a PredictionRecord, not {type(record).__name__}")
    return (_request_id(record.request_id), _micros(record.time),
            validate_name(record.deployment, "deployment"),
            validate_name(record.model_version, "model_version"),
            encode_json(record.inputs, "inputs"), encode_json(record.outputs, "outputs"),
            _latency(record.latency_ms))


def feedback_row(record: Any) -> FeedbackRow:
    """Check one ``FeedbackRecord`` and return its encoded row.

    Raises:
        InvalidArgumentError: naming the record's field (unprefixed) that is not acceptable.
    """
    if not isinstance(record, FeedbackRecord):
        raise InvalidArgumentError("", f"must be a FeedbackRecord, not {type(record).__name__}")
    return (_request_id(record.request_id), _micros(record.time),
            encode_json(record.label, "label"))


def prefixed(exc: InvalidArgumentError, prefix: str) -> InvalidArgumentError:
    """Return ``exc`` with its field placed under ``prefix`` (``records[3]`` + ``time``)."""
    field = f"{prefix}.{exc.field}" if exc.field else prefix
    return InvalidArgumentError(field, exc.problem)


def _rows(records: Iterable[Any], convert: Callable[[Any], Any], where: str) -> list[Any]:
    rows: list[Any] = []
    try:
        for record in records:
            rows.append(convert(record))
    except InvalidArgumentError as exc:
        raise prefixed(exc, f"{where}[{len(rows)}]") from exc
    return rows


def predictions_from_rows(rows: Sequence[PredictionRow], where: str = "records",
                          ) -> PreparedBatch:
    """Build a prediction batch from rows made by ``prediction_row``.

    Raises:
        InvalidArgumentError: when there are no rows.
    """
    if not rows:
        raise InvalidArgumentError(where, "there are no rows to write")
    request_ids, micros, deployments, versions, inputs, outputs, latencies = zip(
        *rows, strict=True)
    table = pa.Table.from_arrays([
        pa.array(request_ids, pa.string()), pa.array(micros, pa.int64()).cast(TIME_TYPE),
        pa.array(deployments, pa.string()), pa.array(versions, pa.string()),
        pa.array(inputs, pa.string()), pa.array(outputs, pa.string()),
        pa.array(latencies, pa.float64()),
    ], schema=PREDICTION_SCHEMA)
    named = set(deployments)
    return PreparedBatch(KIND_PREDICTIONS, table, named.pop() if len(named) == 1 else None,
                         tuple(sorted(set(versions))))


def feedback_from_rows(rows: Sequence[FeedbackRow], where: str = "feedback") -> PreparedBatch:
    """Build a feedback batch from rows made by ``feedback_row``.

    Raises:
        InvalidArgumentError: when there are no rows.
    """
    if not rows:
        raise InvalidArgumentError(where, "there are no rows to write")
    request_ids, micros, labels = zip(*rows, strict=True)
    table = pa.Table.from_arrays([
        pa.array(request_ids, pa.string()), pa.array(micros, pa.int64()).cast(TIME_TYPE),
        pa.array(labels, pa.string()),
    ], schema=FEEDBACK_SCHEMA)
    return PreparedBatch(KIND_FEEDBACK, table, None, ())


# ----------------------------------------------------------------- tables, column by column


def _first(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Return the index of the first true value of ``mask`` (None when there is none)."""
    found = pc.index(pc.fill_null(mask, False), True).as_py()
    return None if found is None or found < 0 else int(found)


def _no_nulls(column: pa.ChunkedArray, field: str) -> None:
    if column.null_count:
        raise InvalidArgumentError(field, f"row {_first(pc.is_null(column))} is null")


def _strings(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_string_view(column.type)):
        raise InvalidArgumentError(field, f"must be a string column, not {column.type}")
    _no_nulls(column, field)
    return column.cast(pa.string())


def _request_ids(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    column = _strings(column, field)
    lengths = pc.utf8_length(column)
    bad = _first(pc.or_(pc.equal(lengths, 0), pc.greater(lengths, MAX_REQUEST_ID)))
    if bad is not None:
        raise InvalidArgumentError(
            field, f"row {bad} must be a string of 1-{MAX_REQUEST_ID} characters")
    return column


def _times(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    if not pa.types.is_timestamp(column.type):
        raise InvalidArgumentError(field, f"must be a timezone-aware timestamp column, not "
                                          f"{column.type}")
    if column.type.tz is None:
        raise InvalidArgumentError(field, "is a naive timestamp column; give it a time zone")
    _no_nulls(column, field)
    # Coarser than nanoseconds loses nothing a log needs; the instant itself is unchanged.
    return column.cast(TIME_TYPE, safe=False)


def _names(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    column = _strings(column, field)
    for value in pc.unique(column).to_pylist():
        try:
            validate_name(value, field)
        except InvalidArgumentError as exc:
            row = _first(pc.equal(column, value))
            raise InvalidArgumentError(field, f"row {row}: {exc.problem}") from exc
    return column


def _latencies(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise InvalidArgumentError(field, f"must be a numeric column, not {column.type}")
    _no_nulls(column, field)
    values = column.cast(pa.float64())
    bad = _first(pc.invert(pc.and_(pc.is_finite(values), pc.greater_equal(values, 0.0))))
    if bad is not None:
        raise InvalidArgumentError(field, f"row {bad} must be finite and zero or more")
    return values


def _json_column(column: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    """Canonicalise JSON text (string columns), or encode values (any other Arrow type)."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        rows = _rows(column.to_pylist(), lambda v: encode_json(v, ""), field)
        return pa.chunked_array([pa.array(rows, pa.string())], pa.string())
    _no_nulls(column, field)
    done: dict[str, str] = {}
    chunks, offset = [], 0
    for chunk in column.chunks:  # parse each distinct text once: labels and outputs repeat
        encoded = pc.dictionary_encode(chunk)
        texts = []
        for text in encoded.dictionary.to_pylist():
            if text not in done:
                try:
                    done[text] = _canonical_text(text, field)
                except InvalidArgumentError as exc:
                    row = offset + int(pc.index(chunk, text).as_py())
                    raise InvalidArgumentError(field, f"row {row}: {exc.problem}") from exc
            texts.append(done[text])
        chunks.append(pa.array(texts, pa.string()).take(encoded.indices))
        offset += len(chunk)
    return pa.chunked_array(chunks, pa.string())


_CHECKS: dict[str, Callable[[pa.ChunkedArray, str], pa.ChunkedArray]] = {
    "request_id": _request_ids, "time": _times, "deployment": _names,
    "model_version": _names, "inputs": _json_column, "outputs": _json_column,
    "label": _json_column, "latency_ms": _latencies,
}


def _conform(table: pa.Table, schema: pa.Schema, where: str,
             ready: frozenset[str] = frozenset()) -> pa.Table:
    names = table.column_names
    for name in schema.names:
        if name not in names:
            raise InvalidArgumentError(f"{where}.{name}", "the column is missing; the table "
                                       f"needs {', '.join(schema.names)}")
    for name in names:
        if name not in schema.names or names.count(name) > 1:
            raise InvalidArgumentError(f"{where}.{name}", "is not a column of the log or is "
                                       f"repeated; the table needs {', '.join(schema.names)}")
    if table.num_rows == 0:
        raise InvalidArgumentError(where, "there are no rows to write")
    columns = [table[name] if name in ready else _CHECKS[name](table[name], f"{where}.{name}")
               for name in schema.names]
    return pa.Table.from_arrays(columns, schema=schema)


def _from_frame(frame: pd.DataFrame, where: str) -> tuple[pa.Table, frozenset[str]]:
    """Convert a DataFrame; object columns of JSON values are encoded here, value by value."""
    encoded: dict[str, pa.Array] = {}
    for name in _JSON_COLUMNS:
        if name in frame.columns and frame[name].dtype == object:
            rows = _rows(frame[name].tolist(), lambda v: encode_json(v, ""), f"{where}.{name}")
            encoded[name] = pa.array(rows, pa.string())
    try:
        table = pa.Table.from_pandas(frame.drop(columns=list(encoded)), preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidArgumentError(where, f"cannot be read as a table: {exc}") from exc
    for name, array in encoded.items():
        table = table.append_column(pa.field(name, pa.string()), array)
    return table, frozenset(encoded)


def _as_table(records: Records, where: str) -> tuple[pa.Table, frozenset[str]] | None:
    if isinstance(records, pa.Table):
        return records, frozenset()
    if isinstance(records, pd.DataFrame):
        return _from_frame(records, where)
    return None


def prepare_predictions(records: Records, where: str = "records") -> PreparedBatch:
    """Validate predictions (records, a pyarrow Table or a DataFrame) into one batch.

    In tables, string ``inputs``/``outputs`` columns hold JSON text; other types (structs,
    lists, numbers, pandas object columns) hold values that are encoded to JSON.

    Raises:
        InvalidArgumentError: naming the field (and row) that is not acceptable.
    """
    converted = _as_table(records, where)
    if converted is None:
        return predictions_from_rows(_rows(records, prediction_row, where), where)
    table = _conform(converted[0], PREDICTION_SCHEMA, where, converted[1])
    deployments = pc.unique(table["deployment"]).to_pylist()
    return PreparedBatch(KIND_PREDICTIONS, table,
                         deployments[0] if len(deployments) == 1 else None,
                         tuple(sorted(pc.unique(table["model_version"]).to_pylist())))


def prepare_feedback(records: Records, where: str = "feedback") -> PreparedBatch:
    """Validate feedback labels (records, a pyarrow Table or a DataFrame) into one batch.

    Raises:
        InvalidArgumentError: naming the field (and row) that is not acceptable.
    """
    converted = _as_table(records, where)
    if converted is None:
        return feedback_from_rows(_rows(records, feedback_row, where), where)
    return PreparedBatch(KIND_FEEDBACK, _conform(converted[0], FEEDBACK_SCHEMA, where,
                                                 converted[1]), None, ())
