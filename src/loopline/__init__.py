"""loopline: closed-loop ML automation in one install.

The public surface is small and lives here; everything else is internal and may change.
Importing loopline defines names and does nothing else (no engines, no environment reads).
The workspace and the pipeline decorators load on first use, so a worker process that only
needs one module does not pay for pandas, SQLAlchemy and the rest.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from loopline._lazy import lazy_exports as _lazy_exports
from loopline._version import __version__
from loopline.core.artifacts import ObjectInfo
from loopline.core.audit import AuditEntry
from loopline.core.errors import (
    AlreadyExistsError,
    AuthenticationError,
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

if TYPE_CHECKING:
    from loopline.app import Workspace
    from loopline.client import Client
    from loopline.pipelines import current_task, pipeline, shell_task, task

_LAZY = {"Client": "loopline.client", "Workspace": "loopline.app",
         "current_task": "loopline.pipelines", "pipeline": "loopline.pipelines",
         "shell_task": "loopline.pipelines", "task": "loopline.pipelines"}

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY, globals())


def connect(path: str | os.PathLike[str] | None = None, *, token: str | None = None,
            **overrides: Any) -> Workspace | Client:
    """Open the workspace at or above ``path``, or connect to the server at that URL.

    ``path`` starting with ``http://`` or ``https://`` (or, without ``path``, the
    ``LOOPLINE_SERVER`` variable) returns a ``Client`` acting with ``token`` (default:
    ``LOOPLINE_TOKEN``); it has the workspace's surface for everything that is not local
    only. Otherwise keyword arguments override settings, as CLI flags do (``db_url=...``,
    ``user=...``), and a local ``Workspace`` is returned.

    Raises:
        InvalidArgumentError: naming ``token`` when a server is named without one.
    """
    server = os.fspath(path) if path is not None else os.environ.get("LOOPLINE_SERVER")
    if server is not None and server.startswith(("http://", "https://")):
        from loopline.client import Client

        chosen = token if token is not None else os.environ.get("LOOPLINE_TOKEN", "")
        return Client(server, chosen, **overrides)
    from loopline.app import Workspace

    return Workspace.open(path, overrides=overrides or None)


__all__ = [
    "AlreadyExistsError",
    "AuditEntry",
    "AuthenticationError",
    "BackendError",
    "Client",
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
