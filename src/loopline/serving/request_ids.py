"""Request ids: taken from the caller when well formed, else made here.

A caller's ``X-Request-Id`` (or a V2 body's ``id``) is kept when it is 1-128 characters of
letters, digits and ``._:-``, so ids can be joined with logs elsewhere; anything else is
replaced by a new time-ordered id rather than refused (an id is never the reason a request
fails). Pure apart from reading the clock for new ids.
"""

from __future__ import annotations

import re

from loopline.core.ids import new_id

HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def is_valid(value: object) -> bool:
    """Tell whether ``value`` may be used as a request id as given."""
    return isinstance(value, str) and _VALID.fullmatch(value) is not None


def request_id(*candidates: object) -> str:
    """Return the first valid candidate (header first, then body), else a new id."""
    for candidate in candidates:
        if candidate is not None and is_valid(candidate):
            return str(candidate)
    return new_id()
