"""loopline: closed-loop ML automation in one install.

The public surface is small and lives here; everything else is internal and may change.
Importing loopline defines names and does nothing else (no engines, no environment reads).
"""

from __future__ import annotations

import os
from typing import Any

from loopline._version import __version__
from loopline.app import Workspace
from loopline.core.artifacts import ObjectInfo
from loopline.core.audit import AuditEntry
from loopline.core.errors import (
    AlreadyExistsError,
    BackendError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    LooplineError,
    NotFoundError,
    PolicyDeniedError,
    SchemaVersionError,
)
from loopline.core.events import Event, EventType
from loopline.pipelines import current_task, pipeline, shell_task, task


def connect(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Workspace:
    """Open the workspace at or above ``path`` (default: the current folder).

    Keyword arguments override settings, as CLI flags do (``db_url=...``, ``user=...``).
    """
    return Workspace.open(path, overrides=overrides or None)


__all__ = [
    "AlreadyExistsError",
    "AuditEntry",
    "BackendError",
    "ConfigurationError",
    "ConflictError",
    "Event",
    "EventType",
    "IntegrityError",
    "InvalidArgumentError",
    "LooplineError",
    "NotFoundError",
    "ObjectInfo",
    "PolicyDeniedError",
    "SchemaVersionError",
    "Workspace",
    "__version__",
    "connect",
    "current_task",
    "pipeline",
    "shell_task",
    "task",
]
