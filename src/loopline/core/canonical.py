"""Canonical JSON and SHA-256 content hashing: the same value always gives the same bytes.

Pure: no I/O. Canonical JSON sorts keys, uses no whitespace and UTF-8, and refuses NaN and
infinities, so a hash computed today is recomputed to the same digest on any machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` to canonical JSON text.

    Raises:
        ValueError: when the value holds NaN or infinity.
        TypeError: when the value holds something JSON cannot represent.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hexadecimal SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_canonical(value: Any) -> str:
    """Return the SHA-256 of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value).encode("utf-8"))


def is_digest(value: str) -> bool:
    """Tell whether ``value`` is a lowercase hexadecimal SHA-256 digest."""
    return bool(DIGEST_PATTERN.fullmatch(value))


def json_safe(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by its name as a string.

    Strict JSON (and PostgreSQL's json type) has no NaN or infinity; a statistic that is
    infinite is stored as ``"inf"``, ``"-inf"`` or ``"nan"`` so it is kept, not lost.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value
