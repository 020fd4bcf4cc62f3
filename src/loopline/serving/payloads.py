"""Request bodies: JSON read within limits, and rows turned into a DataFrame.

Every limit is checked before the thing it bounds is built: the media type (415), the
declared ``Content-Length`` and then the bytes actually read (413), the JSON itself (400),
the nesting depth (at most 64: 422), and the rows of a batch (413, naming the limit).

The depth is measured on the parsed value, iteratively, stopping at the first container past
the limit, so the work is linear in the body whatever its shape (orjson itself refuses more
than 1024 levels, answered as the same 422). A body larger than 256 KiB is parsed and
measured in a worker thread, never on the event loop.

JSON numbers are always finite: orjson refuses ``NaN`` and ``Infinity`` literals and numbers
that overflow a double (400), and a string such as ``"NaN"`` in a numeric column fails the
signature's type check (422). ``null`` is a missing
value, refused by the signature check in a column trained without nulls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
from anyio import to_thread
from starlette.requests import Request

from loopline.serving.answers import RequestRefused

MAX_DEPTH = 64
MIB = 1 << 20
THREAD_PARSE_BYTES = 256 * 1024  # bodies larger than this are parsed off the event loop
_ORJSON_DEPTH = "depth limit exceeded"  # orjson's own refusal past 1024 levels
_CONTAINERS = (list, dict)  # orjson builds exactly these types, never subclasses


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on one inference request."""

    max_body_bytes: int = 10 * MIB
    max_rows: int = 1024
    max_depth: int = MAX_DEPTH


def _json_media(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


async def read_body(request: Request, limits: Limits) -> bytes:
    """Return the body's bytes, refusing a wrong media type or too many bytes.

    Raises:
        RequestRefused: 415 naming ``Content-Type``; 413 naming the byte limit; 400 for a
            non-numeric ``Content-Length``.
    """
    if not _json_media(request.headers.get("content-type")):
        raise RequestRefused(415, "Content-Type", f"must be application/json, not "
                                                  f"{request.headers.get('content-type')!r}")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestRefused(400, "Content-Length", f"{declared!r} is not a byte count")
        if int(declared) > limits.max_body_bytes:
            raise _too_large(limits)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:  # a chunked body has no Content-Length to trust
            raise _too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limits: Limits) -> RequestRefused:
    return RequestRefused(413, "body", f"is larger than the limit of {limits.max_body_bytes} "
                                       "bytes")


def too_deep(value: Any, limit: int) -> bool:
    """Tell whether the parsed JSON ``value`` nests arrays and objects deeper than ``limit``.

    A scalar has depth 0 and ``[]`` depth 1. Iterative (no recursion), each container is
    visited at most once, and the walk stops at the first one past ``limit``.
    """
    stack: list[tuple[Any, int]] = [(value, 1)] if type(value) in _CONTAINERS else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend([(child, depth + 1) for child in children
                      if type(child) in _CONTAINERS])
    return False


def _deeper_than(limits: Limits) -> RequestRefused:
    return RequestRefused(422, "body", f"nests arrays and objects deeper than the limit of "
                                       f"{limits.max_depth}")


def parse_json(body: bytes, limits: Limits) -> Any:
    """Return the JSON value in ``body``, in time linear in its length.

    Raises:
        RequestRefused: 400 naming ``body`` when it is empty or not JSON (NaN and Infinity
            are not JSON); 422 when it nests deeper than ``limits.max_depth``.
    """
    if not body or body.isspace():
        raise RequestRefused(400, "body", "is empty; send a JSON document")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith(_ORJSON_DEPTH):
            raise _deeper_than(limits) from None
        raise RequestRefused(400, "body", f"is not valid JSON: {exc}") from None
    # Fewer brackets than the limit cannot nest past it: skip the walk (bytes.count is C).
    if body.count(b"[") + body.count(b"{") > limits.max_depth and \
            too_deep(value, limits.max_depth):
        raise _deeper_than(limits)
    return value


async def read_json(request: Request, limits: Limits) -> Any:
    """Return the request's JSON body, every limit checked (see the module docstring).

    Raises:
        RequestRefused: as ``read_body`` and ``parse_json``.
    """
    body = await read_body(request, limits)
    if len(body) > THREAD_PARSE_BYTES:
        return await to_thread.run_sync(parse_json, body, limits)
    return parse_json(body, limits)


# -- rows into frames ------------------------------------------------------------------------

def check_rows(count: int, field: str, limits: Limits) -> None:
    """Refuse an empty batch or one over the row limit.

    Raises:
        RequestRefused: 413 naming ``field`` and the limit.
        InvalidArgumentError: (422) when there are no rows.
    """
    if count > limits.max_rows:
        raise RequestRefused(413, field, f"has {count} rows; the limit is {limits.max_rows} "
                                         "rows per request")
    if count == 0:
        raise RequestRefused(422, field, "has no rows; send at least one")


def frame_from_records(records: Any, field: str, limits: Limits) -> pd.DataFrame:
    """Return a frame of ``records`` (a list of objects that all name the same columns).

    Raises:
        RequestRefused: 422 naming ``field[i]`` for a record that is not an object or names
            other columns than the first; 413 over the row limit.
    """
    if not isinstance(records, list):
        raise RequestRefused(422, field, "must be a list of records (JSON objects)")
    check_rows(len(records), field, limits)
    first = records[0]
    if not isinstance(first, dict):
        raise RequestRefused(422, f"{field}[0]", "must be a JSON object of column: value")
    keys = first.keys()
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestRefused(422, f"{field}[{index}]", "must be a JSON object of column: "
                                                            "value")
        if record.keys() != keys:
            raise RequestRefused(422, f"{field}[{index}]", f"names the columns "
                                 f"{sorted(record)}; {field}[0] names {sorted(keys)}")
    return _frame([[record[key] for key in keys] for record in records], list(keys))


def _frame(rows: list[list[Any]], names: list[Any]) -> pd.DataFrame:
    """Return a frame of ``rows`` under ``names``, typed as pandas would infer them.

    Rows of Python floats only (the usual numeric request) become one float64 block at
    once, skipping pandas' per-column inference (the same frame, built and read faster).
    """
    if all(type(value) is float for row in rows for value in row):
        return pd.DataFrame(np.array(rows, dtype=np.float64).reshape(len(rows), len(names)),
                            columns=names)
    return pd.DataFrame({name: [row[i] for row in rows] for i, name in enumerate(names)})


def frame_from_columns(columns: Any, field: str, limits: Limits) -> pd.DataFrame:
    """Return a frame of ``{column: [values]}`` with lists of equal length.

    Raises:
        RequestRefused: 422 naming ``field.<column>`` for a value that is not a list or has
            another length; 413 over the row limit.
    """
    if not isinstance(columns, dict) or not columns:
        raise RequestRefused(422, field, "must be a JSON object of column: [values]")
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise RequestRefused(422, f"{field}.{name}", "must be a list of values")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise RequestRefused(422, field, f"columns have different lengths {sorted(lengths)}")
    check_rows(lengths.pop(), field, limits)
    return pd.DataFrame(columns)


def frame_from_rows(rows: Any, names: Sequence[str], field: str, limits: Limits
                    ) -> pd.DataFrame:
    """Return a frame of ``rows`` (lists of values) whose columns are ``names`` in order.

    Raises:
        RequestRefused: 422 naming ``field[i]`` for a row that is not a list of ``len(names)``
            values (or when ``names`` is empty: the model has no signature to name them);
            413 over the row limit.
    """
    if not isinstance(rows, list):
        raise RequestRefused(422, field, "must be a list of rows")
    check_rows(len(rows), field, limits)
    if not names:
        raise RequestRefused(422, field, "rows without column names need a model with a "
                                         "signature; send records (column: value) instead")
    width = len(names)
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise RequestRefused(422, f"{field}[{index}]", f"must be a list of {width} values "
                                                           f"({', '.join(names)})")
    return _frame(rows, list(names))


def scalar_field(body: Any, name: str) -> str | None:
    """Return ``body[name]`` as text when ``body`` is an object holding a scalar there."""
    if isinstance(body, Mapping):
        value = body.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    return None
