"""A command task's files: collected from its output folder, materialised for the next command.

Rule: only regular files inside the folder count. A link (to a file or a folder), a FIFO or a
device under ``{out}`` fails the task instead of being followed, and a stored relative path
with ``..``, an absolute root or empty parts is refused before anything is written, so no
file leaves the folder it belongs to (RELIABILITY rule 1).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError, PathEscapeError

MAX_OUTPUT_FILES = 10_000
OUTPUT_KEYS = frozenset({"exit_code", "files"})


def check_relative(path: str, field: str) -> str:
    """Return ``path`` when it is a plain relative path that stays inside its folder.

    Raises:
        PathEscapeError: naming ``field`` for an absolute path, ``..``, ``.`` or empty parts.
    """
    pure = PurePosixPath(path)
    if (not path or "\\" in path or "\x00" in path or pure.is_absolute()
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise PathEscapeError(field, path)
    return pure.as_posix()


def is_command_output(value: object) -> TypeGuard[Mapping[str, Any]]:
    """Tell whether ``value`` is the output of a command task: ``{"exit_code", "files"}``."""
    return (isinstance(value, Mapping) and set(value) == OUTPUT_KEYS
            and isinstance(value["files"], Mapping))


def files_of(output: object) -> Mapping[str, Mapping[str, Any]]:
    """Return the ``files`` of a command task's output.

    Raises:
        InvalidArgumentError: when ``output`` is not a command task's output.
    """
    if not is_command_output(output):
        raise InvalidArgumentError("output", "is not the output of a command task (a dict "
                                             "with exactly 'exit_code' and 'files')")
    files: Mapping[str, Mapping[str, Any]] = output["files"]
    return files


def _store(path: Path, relative: str, blobs: ContentAddressedStore) -> dict[str, Any]:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise PathEscapeError("command output", relative)
    if not stat.S_ISREG(mode):
        raise InvalidArgumentError("command output", f"{relative!r} is not a regular file")
    info = blobs.put_file(path)
    return {"digest": info.digest, "size": info.size}


def collect_outputs(folder: Path, blobs: ContentAddressedStore | None) -> dict[str, Any]:
    """Put every regular file under ``folder`` in ``blobs``; return path -> digest and size.

    Raises:
        PathEscapeError: when the folder holds a link.
        InvalidArgumentError: for a file that is not regular, more than ``MAX_OUTPUT_FILES``
            files, or files written outside a running task (no artifact store to keep them).
    """
    found: dict[str, Any] = {}
    for current, folders, names in os.walk(folder):  # never follows links
        base = Path(current)
        for name in folders:
            if (base / name).is_symlink():
                raise PathEscapeError("command output", (base / name).relative_to(folder)
                                      .as_posix())
        for name in sorted(names):
            relative = (base / name).relative_to(folder).as_posix()
            if blobs is None:
                raise InvalidArgumentError("command output", "files can be kept only inside "
                                           "a running task (they go to its artifact store)")
            if len(found) >= MAX_OUTPUT_FILES:
                raise InvalidArgumentError("command output", f"more than {MAX_OUTPUT_FILES} "
                                           "files; write an archive instead")
            found[relative] = _store(base / name, relative, blobs)
    return dict(sorted(found.items()))


def materialise(output: Mapping[str, Any], folder: Path, blobs: ContentAddressedStore) -> None:
    """Write the files of a command task's output under ``folder`` (created), verified.

    Raises:
        PathEscapeError: when a recorded path would leave ``folder``.
        NotFoundError, IntegrityError: when a file's bytes are missing or damaged.
    """
    folder.mkdir(parents=True)
    for relative, info in files_of(output).items():
        if not isinstance(info, Mapping) or not isinstance(info.get("digest"), str):
            raise InvalidArgumentError("output", f"file {relative!r} has no digest")
        target = folder.joinpath(*check_relative(str(relative), "command output").split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        blobs.get_to_file(info["digest"], target)
