"""The options every command shares, and opening the workspace they point at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from loopline.app import Workspace


@dataclass(frozen=True, slots=True)
class CliOptions:
    """Global flags; they override ``LOOPLINE_*`` variables and ``loopline.toml``."""

    workspace: Path | None
    db_url: str | None
    artifact_root: str | None
    user: str | None
    debug: bool

    def overrides(self) -> dict[str, Any]:
        """Return the settings these flags set."""
        return {"db_url": self.db_url, "artifact_root": self.artifact_root, "user": self.user}


def options(ctx: typer.Context) -> CliOptions:
    """Return the global options of this invocation."""
    found = ctx.find_root().obj
    if not isinstance(found, CliOptions):  # pragma: no cover - the root callback sets it
        raise RuntimeError("CLI options were not initialised")
    return found


def open_workspace(ctx: typer.Context, check_schema: bool = True) -> Workspace:
    """Open the workspace the flags (or the current folder) point at."""
    opts = options(ctx)
    return Workspace.open(opts.workspace, overrides=opts.overrides(), check_schema=check_schema)
