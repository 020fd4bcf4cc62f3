"""Importing a user's pipeline file for the CLI: each file once, its folder on sys.path once.

The module is named ``loopline_user_<stem>`` and is not registered in ``sys.modules``; the
process executor finds its tasks again by file path (``remote.TaskLocator``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from loopline.core.errors import InvalidArgumentError, UserCodeError

_IMPORTED: dict[Path, ModuleType] = {}


def import_user_file(path: Path, field: str) -> ModuleType:
    """Import the Python file at ``path`` (once per process) and return the module.

    Raises:
        InvalidArgumentError: naming ``field`` when ``path`` is not an existing ``.py`` file.
        UserCodeError: when importing the file raises.
    """
    if path.suffix != ".py" or not path.is_file():
        raise InvalidArgumentError(field, f"{str(path)!r} must be an existing Python file")
    resolved = path.resolve()
    if resolved in _IMPORTED:
        return _IMPORTED[resolved]
    spec = importlib.util.spec_from_file_location(f"loopline_user_{path.stem}", resolved)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise InvalidArgumentError(field, f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    if str(resolved.parent) not in sys.path:  # so the file's own imports work
        sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserCodeError(f"importing {path} raised {type(exc).__name__}: {exc}") from exc
    _IMPORTED[resolved] = module
    return module
