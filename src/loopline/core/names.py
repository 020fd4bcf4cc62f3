"""Validation of the names users give to things (datasets, models, subscribers, ...).

Pure: no I/O. One pattern for every name so that names are safe in paths, URLs and logs.
"""

from __future__ import annotations

import re

from loopline.core.errors import InvalidArgumentError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(value: str, field: str = "name") -> str:
    """Return ``value`` when it is a valid name.

    Raises:
        InvalidArgumentError: naming ``field`` when the value does not match ``NAME_PATTERN``.
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidArgumentError(
            field,
            f"{value!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return value


def validate_text(value: object, field: str, max_length: int) -> str:
    """Return ``value`` stripped when it is non-blank text of at most ``max_length`` characters.

    For free text people write (reasons, comments, descriptions): any characters but NUL
    (which PostgreSQL cannot store in text), not blank, and bounded so one field cannot bloat
    an audit entry.

    Raises:
        InvalidArgumentError: naming ``field`` when the value is not text, is blank, holds a
            NUL character or is longer than ``max_length``.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(field, "is required and must not be blank")
    if len(value) > max_length:
        raise InvalidArgumentError(field, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidArgumentError(field, "must not hold a NUL character")
    return value.strip()
