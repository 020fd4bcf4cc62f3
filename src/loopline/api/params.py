"""Types and checks of request parameters that several routes share.

``FilterText`` is free text a listing filters on: bounded, and never holding NUL (PostgreSQL
cannot store or compare it, so it would otherwise surface as a 503). ``aware`` reads a time
filter: a time without a zone is UTC (as the CLI reads it), and a time the database cannot
hold is refused naming the field instead of overflowing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from loopline.core.errors import InvalidArgumentError

__all__ = ["EARLIEST", "LATEST", "FilterText", "aware", "no_nul"]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def no_nul(value: str) -> str:
    """Return ``value`` when it holds no NUL character (a pydantic after-validator).

    Raises:
        ValueError: when it does (pydantic reports it as 422 naming the field).
    """
    if "\x00" in value:
        raise ValueError("must not hold a NUL character")
    return value


FilterText = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(no_nul)]


def aware(value: datetime | None, field: str) -> datetime | None:
    """Return ``value`` in UTC when it has no zone; refuse a time outside 1970-9000.

    Raises:
        InvalidArgumentError: naming ``field`` when the time is out of range.
    """
    if value is None:
        return None
    zoned = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:  # year 1 with a positive offset leaves datetime's range when converted
        usable = EARLIEST <= zoned <= LATEST
    except OverflowError:
        usable = False
    if not usable:
        raise InvalidArgumentError(field, f"must be between {EARLIEST.year} and {LATEST.year}")
    return zoned
