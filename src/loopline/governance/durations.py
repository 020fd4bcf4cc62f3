"""Durations as people write them in policy files and flags: ``90d``, ``12h``, ``2w``, ``30m``.

Pure. One number and one unit (``s``, ``m``, ``h``, ``d``, ``w``); ``P``-style ISO 8601 is
not accepted, to keep one way of writing it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from loopline.core.errors import InvalidArgumentError

_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=36500)


def parse_duration(value: str | int | timedelta, field: str) -> timedelta:
    """Return the positive duration ``value`` names (an int is seconds).

    Raises:
        InvalidArgumentError: naming ``field`` when it is not ``<number><s|m|h|d|w>``, is
            zero or longer than a hundred years.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    else:
        raise InvalidArgumentError(
            field, f"{value!r} is not a duration; write a number and a unit, e.g. 90d, 12h, "
                   "30m, 2w")
    if seconds <= 0 or seconds > MAX_DURATION.total_seconds():
        raise InvalidArgumentError(field, f"{value!r} must be more than 0 and at most 36500d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Return ``value`` in the largest unit that divides it (``7d``, ``36h``, ``90s``)."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"
