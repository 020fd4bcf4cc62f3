"""``loopline db``: upgrade the metadata schema, and show its current revision and history."""

from __future__ import annotations

import typer

from loopline.cli.context import open_workspace
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.store import schema

app = typer.Typer(help="Metadata database schema: upgrade, current, history.",
                  no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Migrate the metadata database to this loopline's schema revision (in one transaction)."""
    with open_workspace(ctx, check_schema=False) as workspace:
        workspace.upgrade()
        found = workspace.store.ensure_schema()
        success(f"{workspace.store.display_url} is at revision {found.current}")


@app.command()
def current(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the database's revision and the one this loopline expects."""
    with open_workspace(ctx, check_schema=False) as workspace:
        found = workspace.store.schema_status()
    if as_json:
        emit_json(found)
        return
    console.print(f"database {found.current or '(empty)'}; code {found.head}; {found.state.value}")


@app.command()
def history(as_json: JsonFlag = False) -> None:
    """List the schema revisions this loopline ships, oldest first."""
    revisions = schema.history()
    if as_json:
        emit_json(revisions)
        return
    table("schema revisions", ["revision", "after", "description"],
          [(r.revision, r.down_revision or "-", r.message.splitlines()[0]) for r in revisions])
