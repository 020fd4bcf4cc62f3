"""One JSON text for a value that is not a scalar, wherever a column of it is written.

A model's output that is not a scalar (a row of class probabilities, a mapping) is kept as
JSON text: in the reference profile made at registration and in a monitoring window's rows
read back from the prediction log. Drift compares those texts as categories, so both sides
must write one value the same way: ``json_text`` is compact, sorts mapping keys (text keys
only; other keys become text), writes UTF-8 as is and non-finite floats as ``null``.
``json_column`` is the column builder both sides use: scalars keep their Arrow type,
anything else becomes ``json_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

__all__ = ["json_column", "json_text"]

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def json_text(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (see the module docstring).

    Raises:
        TypeError: when the value holds something JSON cannot represent (orjson's
            ``JSONEncodeError`` is a ``TypeError``).
    """
    return orjson.dumps(value, option=_OPTIONS).decode()


def json_column(values: Sequence[Any]) -> pa.Array:
    """Return a column of scalars with its inferred Arrow type, else of ``json_text``."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    if array is not None and not pa.types.is_nested(array.type):
        return array
    return pa.array([None if value is None else json_text(value) for value in values],
                    pa.string())
