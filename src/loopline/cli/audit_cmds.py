"""``loopline audit``: list audit entries, and verify the hash chain end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from loopline.cli.context import open_session
from loopline.cli.output import emit_json, error, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.store import AuditFilter

# A time without a zone, or a bare date, is taken as UTC.
TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]

app = typer.Typer(help="The tamper-evident audit log: log, verify.", no_args_is_help=True)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@app.command("log")
def log_(  # noqa: PLR0913 - one parameter per filter flag is how typer declares them
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(help="Only entries by this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. artifact.put.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
    since: Annotated[datetime | None, typer.Option(
        formats=TIME_FORMATS, help="Only entries at or after this time (UTC if no zone).")] = None,
    until: Annotated[datetime | None, typer.Option(
        formats=TIME_FORMATS, help="Only entries before this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List audit entries, newest first."""
    where = AuditFilter(actor=actor, action=action, subject=subject,
                        since=_aware(since), until=_aware(until), limit=limit)
    with open_session(ctx) as workspace:
        entries = workspace.audit.entries(where)
    if as_json:
        emit_json(entries)
        return
    table(f"{len(entries)} audit entries", ["#", "at", "actor", "action", "subject", "hash"], [
        (e.seq, e.at.isoformat(timespec="seconds"), e.actor, e.action, e.subject, e.hash[:12])
        for e in entries
    ])


@app.command()
def verify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check the whole chain; exit 6 naming the first entry edited, deleted, inserted or moved."""
    with open_session(ctx) as workspace:
        report = workspace.audit.verify()
    if as_json:
        emit_json({"ok": report.ok, "entries": report.entries, "head_seq": report.head_seq,
                   "first_break": report.first_break})
    elif report.ok:
        success(f"audit chain intact: {report.entries} entries, head {report.head_hash[:12]}")
    if report.first_break is not None:
        error(f"audit chain broken at {report.first_break.describe()}")
        raise typer.Exit(6)
