"""Typed, time-ordered identifiers (UUIDv7, RFC 9562) for records loopline creates.

Pure apart from reading the clock and the random source. Time-ordered ids keep B-tree
inserts local and let a listing sort by id when it means "by creation".
"""

from __future__ import annotations

import os
import time
import uuid
from typing import NewType

EventId = NewType("EventId", str)
AuditEntryId = NewType("AuditEntryId", str)


def uuid7() -> uuid.UUID:
    """Return a new UUID version 7: 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)


def new_id() -> str:
    """Return a new time-ordered id as 32 lowercase hexadecimal characters."""
    return uuid7().hex
