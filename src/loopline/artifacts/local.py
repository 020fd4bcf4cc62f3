"""Byte storage on a local directory with plain os calls: temp file, fsync, rename, fsync dir.

Every path comes from ``resolver.resolve_local``: no symlinks, nothing outside the root.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

from loopline.artifacts.layout import TEMP, is_debris, new_temp_key
from loopline.artifacts.resolver import resolve_local
from loopline.artifacts.storage import TempFile
from loopline.core.errors import BackendError, ConfigurationError, NotFoundError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@contextmanager
def _os_errors(key: str) -> Iterator[None]:
    """Turn a missing file into ``NotFoundError`` and other OS failures into ``BackendError``."""
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFoundError("object", key) from exc
    except OSError as exc:
        raise BackendError(f"local storage failed on {key!r}: {exc.strerror or exc}") from exc


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a rename, a new child) durable."""
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: str) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that gained an entry."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs_durable(parent)
    with suppress(FileExistsError):
        os.mkdir(path)
    fsync_dir(parent)


class LocalStorage:
    """Byte storage under a local directory; writes are fsynced and renamed into place."""

    def __init__(self, root: str) -> None:
        """Open (creating if needed) the directory ``root``.

        Raises:
            ConfigurationError: ``root`` exists and is not a directory.
            BackendError: ``root`` cannot be created.
        """
        path = os.path.abspath(os.path.expanduser(root))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigurationError(f"artifact root {path!r} is not a directory")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create artifact root {path!r}: {exc.strerror}") from exc
        self._root = os.path.realpath(path)

    @property
    def url(self) -> str:
        """The real path of the root."""
        return self._root

    def _path(self, key: str) -> str:
        return resolve_local(self._root, key)

    def open_temp(self) -> TempFile:
        """Create ``tmp/<host>-<pid>-<uuid>`` exclusively (never following links) for writing."""
        key = new_temp_key()
        path = self._path(key)
        with _os_errors(key):
            _makedirs_durable(os.path.dirname(path))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
        return TempFile(key, open(fd, "wb"))

    def commit(self, temp: TempFile, key: str) -> None:
        """Flush and fsync ``temp``, rename it onto ``key`` and fsync the directory."""
        source = self._path(temp.key)
        target = self._path(key)
        with _os_errors(key):
            temp.file.flush()
            os.fsync(temp.file.fileno())
            temp.file.close()
            _makedirs_durable(os.path.dirname(target))
            os.replace(source, target)
            fsync_dir(os.path.dirname(target))

    def discard(self, temp: TempFile) -> None:
        """Close and unlink ``temp``, ignoring a file already gone or a failure to flush it."""
        with suppress(OSError):
            temp.file.close()
        with _os_errors(temp.key), suppress(FileNotFoundError):
            os.unlink(self._path(temp.key))

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for reading without following a final symlink."""
        path = self._path(key)
        with _os_errors(key):
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        return open(fd, "rb")

    def exists(self, key: str) -> bool:
        """Tell whether ``key`` is a regular file."""
        path = self._path(key)
        return os.path.isfile(path)

    def size(self, key: str) -> int:
        """Return the size of ``key`` in bytes."""
        path = self._path(key)
        with _os_errors(key):
            return os.stat(path, follow_symlinks=False).st_size

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys of all files under the folder ``prefix`` (links are not followed)."""
        top = self._path(prefix)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            relative = os.path.relpath(dirpath, self._root).replace(os.sep, "/")
            for name in sorted(filenames):
                yield f"{relative}/{name}"

    def delete(self, key: str) -> None:
        """Unlink ``key`` and fsync its directory."""
        path = self._path(key)
        with _os_errors(key):
            os.unlink(path)
            fsync_dir(os.path.dirname(path))

    def sweep_temp(self, now: float | None = None) -> int:
        """Unlink temporary files left by dead processes on this host, or older than 24 h."""
        moment = time.time() if now is None else now
        folder = self._path(TEMP)
        removed = 0
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            with suppress(FileNotFoundError):
                if is_debris(entry.name, entry.stat(follow_symlinks=False).st_mtime, moment):
                    os.unlink(entry.path)
                    removed += 1
        return removed
