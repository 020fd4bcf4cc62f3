"""Files of an MLflow model directory, read safely: checked names, bounded sizes, plain data.

Every file an ``MLmodel`` names is resolved inside the model directory before it is opened: a
name that is absolute, holds ``..`` or a backslash, resolves (through links) outside the
directory, or is not a regular file (a FIFO would block the reader) is refused, naming the
key that gave it. YAML is parsed with ``yaml.safe_load`` only, and its data is turned into
plain JSON-ready values with a bound on nodes and depth, so an alias bomb cannot explode.
"""

from __future__ import annotations

import math
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

from loopline.core.errors import InvalidArgumentError, PathEscapeError

MAX_TEXT_BYTES = 1 << 20  # MLmodel, environment files and input examples
MAX_NODES = 10_000
MAX_DEPTH = 32


def model_directory(path: str | Path) -> Path:
    """Return the resolved model directory ``path``.

    Raises:
        InvalidArgumentError: naming ``path`` when it does not exist or is not a directory.
    """
    try:
        root = Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise InvalidArgumentError("path", f"{str(path)!r} does not exist ({exc})") from exc
    if not root.is_dir():
        raise InvalidArgumentError("path", f"{str(path)!r} is not a directory; give the MLflow "
                                           "model folder (the one holding MLmodel)")
    return root


def member(root: Path, relative: Any, key: str) -> Path:
    """Return the regular file ``relative`` names inside ``root``; ``key`` names its source.

    Raises:
        PathEscapeError: naming ``key`` when the name is absolute, holds ``..`` or a
            backslash, or resolves outside ``root``.
        InvalidArgumentError: naming ``key`` when it is not a text, the file is missing,
            or it is not a regular file.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise InvalidArgumentError(key, f"{relative!r} is not a file name inside the model "
                                        "directory")
    pure = PurePosixPath(relative)
    windows = PureWindowsPath(relative)
    if pure.is_absolute() or windows.is_absolute() or windows.drive or "\\" in relative \
            or ".." in pure.parts or "\x00" in relative:
        raise PathEscapeError(key, relative)
    try:
        resolved = (root / pure).resolve(strict=True)
    except FileNotFoundError as exc:
        raise InvalidArgumentError(key, f"names {relative!r}, which is not in {root}") from exc
    except (OSError, RuntimeError) as exc:
        raise InvalidArgumentError(key, f"{relative!r} cannot be resolved: {exc}") from exc
    if not resolved.is_relative_to(root):
        raise PathEscapeError(key, relative)
    if not stat.S_ISREG(resolved.stat().st_mode):
        raise InvalidArgumentError(key, f"{relative!r} is not a regular file")
    return resolved


def read_limited(path: Path, key: str, limit: int) -> bytes:
    """Return the bytes of ``path``, refusing a file over ``limit`` bytes.

    Raises:
        InvalidArgumentError: naming ``key`` when the file is larger or cannot be read.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidArgumentError(key, f"{path.name} cannot be read: {exc}") from exc
    if len(data) > limit:
        raise InvalidArgumentError(key, f"{path.name} is larger than the limit of {limit} bytes")
    return data


def read_text(path: Path, key: str) -> str:
    """Return ``path`` as UTF-8 text of at most ``MAX_TEXT_BYTES``.

    Raises:
        InvalidArgumentError: naming ``key`` when it is too large or not UTF-8.
    """
    try:
        return read_limited(path, key, MAX_TEXT_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(key, f"{path.name} is not UTF-8 text: {exc}") from exc


def plain(value: Any, field: str) -> Any:
    """Return parsed YAML as plain JSON-ready data (text keys; dates and others as text).

    Raises:
        InvalidArgumentError: naming ``field`` when it holds more than ``MAX_NODES`` values
            or nests deeper than ``MAX_DEPTH``.
    """
    count = 0

    def walk(item: Any, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            raise InvalidArgumentError(field, f"holds more than {MAX_NODES} values or nests "
                                              f"deeper than {MAX_DEPTH} levels")
        if isinstance(item, Mapping):
            return {str(key): walk(value, depth + 1) for key, value in item.items()}
        if isinstance(item, list | tuple):
            return [walk(value, depth + 1) for value in item]
        if item is None or isinstance(item, bool | int | str):
            return item
        if isinstance(item, float) and math.isfinite(item):
            return item
        return str(item)

    return walk(value, 0)


def load_yaml(path: Path, key: str) -> Any:
    """Return the YAML file ``path`` as plain data (``yaml.safe_load``, then :func:`plain`).

    Raises:
        InvalidArgumentError: naming ``key`` when the file is too large, not UTF-8, not
            valid YAML, or too large once parsed.
    """
    try:
        parsed = yaml.safe_load(read_text(path, key))
    except yaml.YAMLError as exc:
        raise InvalidArgumentError(key, f"is not valid YAML: {' '.join(str(exc).split())}"
                                   ) from exc
    return plain(parsed, key)
