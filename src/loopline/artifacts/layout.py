"""Where things live under a store root: object keys, temporary names and the debris rule.

Pure apart from reading the host name and probing whether a process id is alive.

    objects/ab/<64-hex sha256>        plain object (ab = first two hex characters)
    objects/ab/<64-hex sha256>.aead   the same content, encrypted at rest (see crypto.py)
    tmp/<host>-<pid>-<32-hex uuid>    an upload in progress
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass

from loopline.core.canonical import is_digest

OBJECTS = "objects"
TEMP = "tmp"
ENCRYPTED_SUFFIX = ".aead"
DEBRIS_MAX_AGE_SECONDS = 24 * 3600

_TEMP_NAME = re.compile(r"^(?P<host>.+)-(?P<pid>[0-9]+)-(?P<nonce>[0-9a-f]{32})$")


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """A parsed object key: the digest it names and whether it is the encrypted form."""

    digest: str
    encrypted: bool


def object_key(digest: str, encrypted: bool) -> str:
    """Return the storage key of ``digest`` (already validated) in plain or encrypted form."""
    suffix = ENCRYPTED_SUFFIX if encrypted else ""
    return f"{OBJECTS}/{digest[:2]}/{digest}{suffix}"


def parse_object_key(key: str) -> ObjectKey | None:
    """Return what ``key`` names, or None when it is not a well-formed object key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != OBJECTS:
        return None
    name = parts[2]
    encrypted = name.endswith(ENCRYPTED_SUFFIX)
    digest = name[: -len(ENCRYPTED_SUFFIX)] if encrypted else name
    if not is_digest(digest) or parts[1] != digest[:2]:
        return None
    return ObjectKey(digest, encrypted)


def this_host() -> str:
    """Return the host name, reduced to characters allowed in a key part."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()).lstrip(".") or "host"


def new_temp_key() -> str:
    """Return a fresh temporary key naming this host and process."""
    return f"{TEMP}/{this_host()}-{os.getpid()}-{uuid.uuid4().hex}"


def pid_alive(pid: int) -> bool:
    """Tell whether a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to someone else
    return True


def is_debris(name: str, modified: float | None, now: float) -> bool:
    """Tell whether the temporary file ``name`` (last modified at ``modified``) is left over.

    Debris is a temp file whose writer was a process on this host that is no longer alive, or
    any temp file not modified for 24 hours (a live writer touches its file on every chunk).
    """
    if modified is not None and now - modified > DEBRIS_MAX_AGE_SECONDS:
        return True
    match = _TEMP_NAME.match(name)
    if match is None or match["host"] != this_host():
        return False
    return not pid_alive(int(match["pid"]))
