"""``loopline init`` and ``loopline status``: create a workspace, and see where everything lives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopline.app import Workspace, workspace_status
from loopline.cli.context import open_workspace, options
from loopline.cli.output import console, emit_json, ok_or_fail, success, table

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def init(
    ctx: typer.Context,
    directory: Annotated[Path | None, typer.Argument(
        help="Folder to initialise (default: the current folder).")] = None,
) -> None:
    """Create .loopline/ (settings, SQLite database, artifact folder) and migrate the database."""
    opts = options(ctx)
    with Workspace.init(directory or opts.workspace, overrides=opts.overrides()) as workspace:
        success(f"workspace ready in {workspace.config_dir}")
        console.print(f"  metadata  {workspace.store.display_url}")
        console.print(f"  artifacts {workspace.settings.artifact_root}")
        console.print(f"  settings  {workspace.config_dir / 'loopline.toml'}")


def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show where the workspace's parts live and whether each is healthy (exit 1 if not)."""
    with open_workspace(ctx, check_schema=False) as workspace:
        checks = workspace_status(workspace)
    if as_json:
        emit_json(checks)
    else:
        table("loopline status", ["part", "location", "health", "detail"], [
            (c.name, c.location, ok_or_fail(c.healthy), c.detail)
            for c in checks
        ])
    if not all(c.healthy for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add these commands to the root application."""
    app.command()(init)
    app.command()(status)
