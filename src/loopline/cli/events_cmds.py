"""``loopline events``: list the event log and the subscribers' cursors."""

from __future__ import annotations

from typing import Annotated

import typer

from loopline.cli.context import open_workspace
from loopline.cli.output import emit_json, table
from loopline.cli.workspace_cmds import JsonFlag

app = typer.Typer(help="The event log: list, cursors.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    after: Annotated[int, typer.Option(min=0, max=2**63 - 1,
                                       help="Only events after this sequence number.")] = 0,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List events in commit order."""
    with open_workspace(ctx) as workspace:
        events = workspace.store.events.read_after(after, limit, type_)
    if as_json:
        emit_json(events)
        return
    table(f"{len(events)} events", ["seq", "at", "type", "subject", "actor"], [
        (e.seq, e.occurred_at.isoformat(timespec="seconds"), e.type, e.subject, e.actor)
        for e in events
    ])


@app.command()
def cursors(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List durable subscribers and how far each has read."""
    with open_workspace(ctx) as workspace:
        found = workspace.store.events.cursors()
        last = workspace.store.events.last_seq()
    if as_json:
        emit_json({"last_seq": last, "cursors": found})
        return
    table(f"subscribers (log at {last})", ["subscriber", "position", "behind", "updated"], [
        (c.subscriber, c.position, last - c.position, c.updated_at.isoformat(timespec="seconds"))
        for c in found
    ])
