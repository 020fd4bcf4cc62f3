"""``loopline retention``: run the applied retention policy, and manage legal holds.

The policy is the ``kind: retention`` document of the applied policy set (``loopline policy
apply``). ``run --dry-run`` shows what would be deleted and writes nothing. Exit codes follow
``cli/errors.py``: 7 when no retention policy is applied, 9 when the actor's role does not
permit it, 5 for a bad class, ref or reason, 3 for an unknown hold.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loopline.cli.context import open_session
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.session import Session
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.errors import ConfigurationError
from loopline.core.governance import LegalHold
from loopline.governance.durations import format_duration
from loopline.governance.legal_holds import describe
from loopline.governance.retention import ClassReport, RetentionReport
from loopline.governance.retention_policy import RetentionPolicy

app = typer.Typer(help="Retention: delete expired data by the applied policy; legal holds.",
                  no_args_is_help=True)
holds_app = typer.Typer(help="Legal holds: keep what retention would otherwise delete.",
                        no_args_is_help=True)
app.add_typer(holds_app, name="holds")

NO_POLICY = ("no retention policy applied; add a `kind: retention` document to policies/ and "
             "run `loopline policy apply`")


def _policy(ws: Session) -> RetentionPolicy:
    """Return the retention document of the applied policy set.

    Raises:
        ConfigurationError: when the applied set has none (or none is applied).
    """
    policy = ws.policies.active().retention
    if policy is None:
        raise ConfigurationError(NO_POLICY)
    return policy


def _when(value: Any) -> str:
    return str(value.isoformat(timespec="seconds"))


def _class_row(report: ClassReport) -> dict[str, Any]:
    return {"data_class": str(report.data_class), "max_age": format_duration(report.max_age),
            "cutoff": report.cutoff, "candidates": report.candidates,
            "deleted": report.deleted, "rows": report.rows, "held": report.held_total,
            "held_items": [{"ref": h.ref, "holds": list(h.holds)} for h in report.held],
            "referenced": report.referenced_total, "referenced_items": list(report.referenced),
            "blobs_deleted": report.blobs_deleted, "bytes_freed": report.bytes_freed,
            "items": list(report.items), "items_total": report.items_total,
            "unknown_age": list(report.unknown_age)}


def _report_json(report: RetentionReport) -> dict[str, Any]:
    return {"policy": report.policy, "dry_run": report.dry_run, "now": report.now,
            "classes": [_class_row(c) for c in report.classes],
            "blobs_left": list(report.blobs_left)}


@app.command("run")
def run(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be deleted; write and delete nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete what the applied retention policy lets expire (admin; --dry-run: read)."""
    with open_session(ctx) as workspace:
        policy = _policy(workspace)
        service = workspace.retention
        report = service.run(policy, dry_run=dry_run)
    if as_json:
        emit_json(_report_json(report))
        return
    verb = "would delete" if dry_run else "deleted"
    table(f"retention {report.policy!r}{' (dry run)' if dry_run else ''}",
          ["class", "max age", "cut-off", "candidates", verb, "held", "referenced", "blobs",
           "bytes"],
          [(c.data_class, format_duration(c.max_age), _when(c.cutoff), c.candidates,
            c.deleted, c.held_total, c.referenced_total, c.blobs_deleted, c.bytes_freed)
           for c in report.classes])
    for c in report.classes:
        if c.unknown_age:
            console.print(f"{c.data_class}: kept {len(c.unknown_age)} objects whose age the "
                          "storage does not tell")
    if report.blobs_left:
        console.print(f"{len(report.blobs_left)} blobs could not be deleted now; the next "
                      "unreferenced_artifacts pass removes them")
    freed = sum(c.bytes_freed for c in report.classes)
    success(f"{verb} {report.deleted} items, {freed} bytes")


def _hold_row(hold: LegalHold) -> tuple[Any, ...]:
    released = (f"{_when(hold.released_at)} by {hold.released_by}" if hold.released_at
                else "")
    return (hold.id, hold.data_class, hold.ref, hold.reason, _when(hold.created_at),
            hold.created_by, released)


@holds_app.command("list")
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include released holds.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List active legal holds (with --all, released ones too)."""
    with open_session(ctx) as workspace:
        found = workspace.legal_holds.list(active_only=not all_)
    if as_json:
        emit_json([describe(hold) for hold in found])
        return
    table(f"{len(found)} legal holds", ["id", "class", "ref", "reason", "created", "by",
                                        "released"], [_hold_row(hold) for hold in found])


@holds_app.command("add")
def add(
    ctx: typer.Context,
    data_class: Annotated[str, typer.Argument(
        metavar="CLASS", help="prediction_log, feedback, dataset_snapshots, run_logs, "
                              "unreferenced_artifacts, or * for all.")],
    ref: Annotated[str, typer.Argument(
        help="What to hold (a glob): dataset or NAME@VERSION, segment id, run id, digest, *.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it must be kept.")],
) -> None:
    """Hold REF of CLASS: retention keeps it until the hold is released (admin)."""
    with open_session(ctx) as workspace:
        hold = workspace.legal_holds.add(data_class, ref, reason)
    success(f"hold {hold.id} keeps {hold.data_class} {hold.ref!r}")


@holds_app.command("release")
def release(
    ctx: typer.Context,
    hold_id: Annotated[str, typer.Argument(metavar="ID", help="The hold's id.")],
) -> None:
    """Release a legal hold; the next retention run may delete what it kept (admin)."""
    with open_session(ctx) as workspace:
        hold = workspace.legal_holds.release(hold_id)
    success(f"released hold {hold.id} on {hold.data_class} {hold.ref!r}")
