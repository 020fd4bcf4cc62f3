"""The small byte-storage interface the content-addressed store is built on, and its factory.

A storage knows nothing of digests or encryption: it writes a temporary object, commits it to
a final key atomically, reads, lists and deletes keys, and sweeps temporary debris. Every key
goes through the resolver (``resolver.py``) before it touches a filesystem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit


@dataclass(slots=True)
class TempFile:
    """A temporary object being written: its key and the open binary file to write to."""

    key: str
    file: BinaryIO


class ByteStorage(Protocol):
    """Keyed bytes under one root, with atomic commit from a temporary name."""

    @property
    def url(self) -> str:
        """The root this storage writes under, for messages."""
        ...

    def open_temp(self) -> TempFile:
        """Create a new temporary object under ``tmp/`` and open it for writing."""
        ...

    def commit(self, temp: TempFile, key: str) -> None:
        """Close, make durable and atomically move ``temp`` to ``key`` (replacing it)."""
        ...

    def discard(self, temp: TempFile) -> None:
        """Close and remove ``temp``; never raises when it is already gone."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for reading; raises ``NotFoundError`` when it is absent."""
        ...

    def exists(self, key: str) -> bool:
        """Tell whether ``key`` holds an object."""
        ...

    def size(self, key: str) -> int:
        """Return the stored size of ``key``; raises ``NotFoundError`` when it is absent."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key under the folder ``prefix``, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; raises ``NotFoundError`` when it is absent."""
        ...

    def sweep_temp(self, now: float | None = None) -> int:
        """Remove temporary debris (see ``layout.is_debris``); return how many were removed."""
        ...


def open_storage(url_or_path: str | Path) -> ByteStorage:
    """Open the storage for a plain path, a ``file://`` URL or any fsspec URL.

    Plain paths and ``file://`` URLs get :class:`LocalStorage` (plain os calls, fsync, symlink
    checks); every other scheme (``memory://``, ``s3://``, ...) gets :class:`FsspecStorage`.

    Raises:
        ConfigurationError: the scheme is unknown, its fsspec driver is not installed, or the
            local root is not a directory.
        BackendError: the root cannot be created.
    """
    # Imported here, not at the top: the implementations import ``TempFile`` from this module.
    from loopline.artifacts.fsspec_storage import FsspecStorage
    from loopline.artifacts.local import LocalStorage

    text = str(url_or_path)
    if "://" not in text:
        return LocalStorage(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        return LocalStorage(unquote(parts.path))
    return FsspecStorage(text)
