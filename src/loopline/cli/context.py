"""The options every command shares, and opening the workspace (or server) they point at.

``open_session`` gives the local ``Workspace`` or, with ``--server``/``LOOPLINE_SERVER``, a
``Client`` of that server with the same surface: commands that use it work both ways.
``open_workspace`` is for commands that need the workspace's files or database themselves
(serving, the scheduler, migrations ...); with a server configured they refuse clearly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from loopline.app import Workspace
from loopline.client import Client
from loopline.core.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class CliOptions:
    """Global flags; they override ``LOOPLINE_*`` variables and ``loopline.toml``."""

    workspace: Path | None
    db_url: str | None
    artifact_root: str | None
    user: str | None
    debug: bool
    server: str | None = None
    token: str | None = None

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
    """Open the workspace the flags (or the current folder) point at.

    Raises:
        InvalidArgumentError: naming ``--server`` when one is configured: this command
            works on a local workspace only.
    """
    opts = options(ctx)
    if opts.server:
        command = ctx.command_path.removeprefix("loopline ").strip() or "this command"
        raise InvalidArgumentError(
            "--server", f"`loopline {command}` works on a local workspace only; run it "
                        "without --server (and without LOOPLINE_SERVER)")
    return Workspace.open(opts.workspace, overrides=opts.overrides(), check_schema=check_schema)


def open_session(ctx: typer.Context) -> Workspace | Client:
    """Return a client of ``--server`` when one is configured, else the local workspace.

    Raises:
        InvalidArgumentError: naming ``--token`` when a server is named without a token.
    """
    opts = options(ctx)
    if not opts.server:
        return open_workspace(ctx)
    if opts.user:
        raise InvalidArgumentError("--user", "with --server the token names who acts; "
                                             "drop --user")
    if not opts.token:
        raise InvalidArgumentError("--token", "a server needs a token: --token or "
                                              "LOOPLINE_TOKEN (`loopline tokens create`)")
    return Client(opts.server, opts.token)
