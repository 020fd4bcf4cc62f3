"""Webhook signatures: HMAC-SHA256 over the timestamp and the raw body, and their check.

Pure: no I/O. A ``notify`` POST carries

- ``X-Loopline-Timestamp``: Unix seconds when it was signed;
- ``X-Loopline-Signature``: ``sha256=<hex>`` of HMAC-SHA256(secret, ``TIMESTAMP.`` + body),
  the body being the exact bytes sent;
- ``Idempotency-Key``: the action's id, the same on every retry, for the receiver to drop
  repeats (delivery is at least once).

A receiver recomputes the HMAC over the raw body it received (never a re-serialised copy),
compares in constant time, and refuses a timestamp older than its tolerance (five minutes
here), which bounds replays. ``verify`` does exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "body_bytes",
           "sign", "signed_headers", "verify"]

SIGNATURE_HEADER = "X-Loopline-Signature"
TIMESTAMP_HEADER = "X-Loopline-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEME = "sha256="
TOLERANCE_SECONDS = 300


def body_bytes(payload: Any) -> bytes:
    """Return the bytes the outbound client sends for ``payload`` (its JSON encoding).

    Kept identical to ``OutboundClient.post_json``'s encoding, so the signature covers the
    bytes on the wire; the webhook test checks the receiver's view of it.
    """
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return ``sha256=<hex>`` of HMAC-SHA256(secret, ``TIMESTAMP.`` + body)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SCHEME + digest.hexdigest()


def signed_headers(secret: str, timestamp: int, body: bytes, key: str) -> dict[str, str]:
    """Return the signature, timestamp and idempotency headers of one delivery."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body),
            IDEMPOTENCY_HEADER: key}


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float,
           tolerance: float = TOLERANCE_SECONDS) -> bool:
    """Tell whether ``body`` with ``headers`` was signed with ``secret`` within ``tolerance``.

    ``headers`` is looked up case-insensitively as HTTP headers are.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(stamp), body), given)
