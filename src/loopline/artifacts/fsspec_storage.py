"""Byte storage on any fsspec filesystem (``memory://``, ``s3://``, ``gcs://``, ...).

Writes go to a temporary key and are moved onto the final key with ``fs.mv``. A temporary key
is unavoidable even on object stores whose PUT is atomic: the final key is the SHA-256 of the
bytes, known only after the last byte. On object stores ``mv`` is a server-side copy (the
final key appears atomically, whole) followed by a delete of the temp key; a crash in between
leaves only debris that ``sweep_temp`` removes. There is no fsync: a backend acknowledges a
write only when it is durable, which is the most fsspec can promise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, BinaryIO, cast

import fsspec

from loopline.artifacts.layout import TEMP, is_debris, new_temp_key
from loopline.artifacts.resolver import join_remote
from loopline.artifacts.storage import TempFile
from loopline.core.errors import BackendError, ConfigurationError, NotFoundError
from loopline.core.redaction import redact_text


@contextmanager
def _fs_errors(key: str) -> Iterator[None]:
    """Turn a missing key into ``NotFoundError`` and other I/O failures into ``BackendError``."""
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFoundError("object", key) from exc
    except OSError as exc:
        raise BackendError(f"object storage failed on {key!r}: {exc}") from exc


def _modified(info: dict[str, Any]) -> float | None:
    """Return the last-modified time in an fsspec ``info`` record as a POSIX time, if any."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


class FsspecStorage:
    """Byte storage under a root URL on any fsspec filesystem."""

    def __init__(self, url: str) -> None:
        """Open the filesystem for ``url``.

        Raises:
            ConfigurationError: the scheme is unknown or its driver package is not installed.
        """
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot open artifact store {redact_text(url)!r}: {redact_text(str(exc))}; "
                "install the fsspec driver for "
                "its scheme (for example s3fs for s3://)"
            ) from exc
        self._fs: Any = fs
        self._root = str(root).rstrip("/")
        self._url = url

    @property
    def url(self) -> str:
        """The root URL as given."""
        return self._url

    def _path(self, key: str) -> str:
        return join_remote(self._root, key)

    def _key(self, path: str) -> str:
        return path[len(self._root) + 1 :] if path.startswith(self._root + "/") else path

    def open_temp(self) -> TempFile:
        """Open a new ``tmp/<host>-<pid>-<uuid>`` key for writing."""
        key = new_temp_key()
        path = self._path(key)
        with _fs_errors(key):
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            handle = self._fs.open(path, "wb")
        return TempFile(key, cast(BinaryIO, handle))

    def commit(self, temp: TempFile, key: str) -> None:
        """Finish the upload of ``temp`` and move it onto ``key``."""
        source = self._path(temp.key)
        target = self._path(key)
        with _fs_errors(key):
            temp.file.close()
            self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self._fs.mv(source, target)

    def discard(self, temp: TempFile) -> None:
        """Close and remove ``temp``, ignoring a key already gone.

        Closing may finish the upload of the partial temp (object stores); it is removed next.
        A failure to close is ignored: the temp is being thrown away.
        """
        path = self._path(temp.key)
        with suppress(OSError):
            temp.file.close()
        with _fs_errors(temp.key), suppress(FileNotFoundError):
            self._fs.rm(path)

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for reading."""
        path = self._path(key)
        with _fs_errors(key):
            return cast(BinaryIO, self._fs.open(path, "rb"))

    def exists(self, key: str) -> bool:
        """Tell whether ``key`` is a file."""
        path = self._path(key)
        with _fs_errors(key):
            return bool(self._fs.isfile(path))

    def size(self, key: str) -> int:
        """Return the size of ``key`` in bytes."""
        path = self._path(key)
        with _fs_errors(key):
            return int(self._fs.size(path))

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the keys of all files under the folder ``prefix``."""
        path = self._path(prefix)
        with _fs_errors(prefix):
            found = sorted(self._fs.find(path))
        for item in found:
            yield self._key(str(item).rstrip("/"))

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        path = self._path(key)
        with _fs_errors(key):
            if not self._fs.isfile(path):
                raise FileNotFoundError(path)
            self._fs.rm(path)

    def sweep_temp(self, now: float | None = None) -> int:
        """Remove temporary keys left by dead processes on this host, or older than 24 h."""
        moment = time.time() if now is None else now
        folder = self._path(TEMP)
        with _fs_errors(TEMP):
            try:
                entries = self._fs.ls(folder, detail=True)
            except FileNotFoundError:
                return 0
        removed = 0
        for info in entries:
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") != "file" or not is_debris(name, _modified(info), moment):
                continue
            with _fs_errors(TEMP), suppress(FileNotFoundError):
                self._fs.rm(info["name"])
                removed += 1
        return removed
