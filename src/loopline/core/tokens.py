"""API tokens: what a bearer token stands for, and how its secret is made and hashed.

Pure: no I/O. A token is ``llt_`` followed by 43 URL-safe characters (32 random bytes). Only
its SHA-256 is stored: the secret has 256 bits of entropy, so a slow password hash would add
nothing but latency to every request. The role is a ceiling: a request made with the token may
do what the role permits and what the user's role bindings permit, never more than either.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from loopline.core.governance import Role

__all__ = ["TOKEN_PATTERN", "TOKEN_PREFIX", "ApiToken", "hash_token", "looks_like_token",
           "new_token_secret"]

TOKEN_PREFIX = "llt_"
TOKEN_PATTERN = re.compile(r"^llt_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One API token: whose it is, the role it carries, and when it stops working.

    ``id`` is public (listings, revocation, the audit log); the secret is never stored.
    """

    id: str
    user: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    description: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    last_used_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        """Tell whether the token is neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def new_token_secret() -> str:
    """Return a fresh token secret (shown once, to the person who created it)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    """Tell whether ``value`` has a token's shape (checked before hashing anything)."""
    return bool(TOKEN_PATTERN.fullmatch(value))


def hash_token(secret: str) -> str:
    """Return the hex SHA-256 of ``secret``: the only form of it that is stored."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
