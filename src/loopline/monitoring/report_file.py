"""Writing a report file whole or not at all: a temporary file beside it, synced, renamed.

A run that fails half way (a chart that cannot be drawn, a full disk, an interrupt) leaves
the previous report, if any, as it was and no partial file under the report's name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from loopline.core.errors import InvalidArgumentError

__all__ = ["write_report"]


def _sync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_report(path: Path, text: str, field: str = "--output") -> int:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the bytes written.

    Raises:
        InvalidArgumentError: naming ``field`` when the folder does not exist, ``path`` is
            a folder, or the file cannot be written (nothing is left behind).
    """
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidArgumentError(field, f"folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise InvalidArgumentError(field, f"{str(path)!r} is a folder; name a file")
    data = text.encode("utf-8")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.",
                                             suffix=".tmp")
    except OSError as exc:
        raise InvalidArgumentError(field, f"cannot write in {str(folder)!r}: "
                                          f"{exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise InvalidArgumentError(field, f"cannot write {str(path)!r}: "
                                              f"{exc.strerror or exc}") from exc
        raise
    _sync_folder(folder)
    return len(data)
