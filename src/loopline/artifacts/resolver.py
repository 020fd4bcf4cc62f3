"""The one resolver from storage keys to paths: it refuses anything that could leave the root.

Keys are relative, slash-separated names made of ``[A-Za-z0-9._-]`` parts. Every storage
backend passes each key through :func:`check_key`; local storage additionally resolves the
path, refuses symlinks on the way and checks that the real path stays inside the root.
"""

from __future__ import annotations

import os
import re
import stat

from loopline.core.errors import InvalidArgumentError, PathEscapeError

_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_key(key: str) -> tuple[str, ...]:
    """Validate a storage key and return its parts.

    Raises:
        PathEscapeError: the key is absolute, holds ``..``, a backslash or a drive letter.
        InvalidArgumentError: the key is empty, holds NUL, empty parts or other characters.
    """
    if not key:
        raise InvalidArgumentError("key", "must not be empty")
    if "\x00" in key:
        raise InvalidArgumentError("key", "must not contain NUL")
    if key.startswith("/") or "\\" in key or _DRIVE.match(key):
        raise PathEscapeError("key", key)
    parts = tuple(key.split("/"))
    if any(part in ("..", ".") for part in parts):
        raise PathEscapeError("key", key)
    if any(not part for part in parts):
        raise InvalidArgumentError("key", f"{key!r} has an empty part")
    for part in parts:
        if not _PART.match(part):
            raise InvalidArgumentError("key", f"{key!r} may hold only [A-Za-z0-9._-]")
    return parts


def resolve_local(root_real: str, key: str) -> str:
    """Map ``key`` to a path under the real path ``root_real`` of a local root.

    The components that exist are checked one by one: none may be a symlink. The final
    real path must lie inside ``root_real``.

    Raises:
        PathEscapeError: the key escapes (see :func:`check_key`), crosses a symlink or resolves
            outside the root.
        InvalidArgumentError: the key is malformed.
    """
    parts = check_key(key)
    path = root_real
    for part in parts:
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            break
        if stat.S_ISLNK(mode):
            raise PathEscapeError("key", key)
    full = os.path.join(root_real, *parts)
    real = os.path.realpath(full)
    if os.path.commonpath([real, root_real]) != root_real or real == root_real:
        raise PathEscapeError("key", key)
    return full


def join_remote(root: str, key: str) -> str:
    """Join a checked ``key`` to a remote (fsspec) root path with ``/``.

    Raises:
        PathEscapeError: the key escapes (see :func:`check_key`).
        InvalidArgumentError: the key is malformed.
    """
    return "/".join((root.rstrip("/"), *check_key(key)))
