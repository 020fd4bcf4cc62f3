"""``loopline data``: snapshot, list, show, diff, validate, append, read and export datasets.

Through ``--server`` every command but ``append`` and ``read`` (incremental datasets, local
only) works on the server's datasets: a snapshot reads its source here and uploads the rows
(the server records no source path), an export downloads the rows and checks their digest.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from loopline.cli.context import open_session, open_workspace
from loopline.cli.output import console, emit_json, error, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.client import Client
from loopline.core.datasets import DatasetVersion
from loopline.core.errors import InvalidArgumentError
from loopline.data.diff import diff_versions
from loopline.data.partitions import Window
from loopline.data.validation import Suite

app = typer.Typer(help="Versioned datasets: snapshot, list, show, diff, validate, append, read.",
                  no_args_is_help=True)

TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"]


def _summary(version: DatasetVersion) -> dict[str, Any]:
    return {"ref": version.ref, "id": version.id, "rows": version.rows,
            "columns": len(version.columns), "content_hash": version.content_hash,
            "source_uri": version.source_uri, "created_at": version.created_at,
            "created_by": version.created_by}


@app.command()
def snapshot(ctx: typer.Context,
             source: Annotated[str, typer.Argument(help="CSV/Parquet path, glob or fsspec URL.")],
             name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.")],
             parent: Annotated[list[str] | None, typer.Option(
                 help="A parent version (NAME@N), repeatable.")] = None,
             as_json: JsonFlag = False) -> None:
    """Snapshot SOURCE as the next version of dataset NAME (same rows → same version)."""
    with open_session(ctx) as workspace, Progress(
            SpinnerColumn(), TextColumn("snapshotting {task.fields[rows]:,} rows"),
            TimeElapsedColumn(), console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("snapshot", rows=0)
        result = workspace.datasets.snapshot(
            source, name, parents=parent or (),
            progress=lambda rows: bar.update(task, rows=rows))
    if as_json:
        emit_json({**_summary(result.version), "created": result.created})
        return
    state = "created" if result.created else "unchanged (same rows as)"
    success(f"{state} {result.version.ref}: {result.version.rows:,} rows, "
            f"{len(result.version.columns)} columns, content {result.version.content_hash[:16]}")


@app.command("list")
def list_(ctx: typer.Context,
          name: Annotated[str | None, typer.Argument(help="Only this dataset.")] = None,
          limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
          as_json: JsonFlag = False) -> None:
    """List dataset versions, newest first."""
    with open_session(ctx) as workspace:
        versions = workspace.datasets.versions(name, limit)
    if as_json:
        emit_json([_summary(v) for v in versions])
        return
    table(f"{len(versions)} dataset versions", ["version", "rows", "columns", "content", "source",
                                                "created"],
          [(v.ref, f"{v.rows:,}", len(v.columns), v.content_hash[:12], v.source_uri or "-",
            v.created_at.isoformat(timespec="seconds")) for v in versions])


@app.command()
def show(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME, NAME@N or an id.")],
         as_json: JsonFlag = False) -> None:
    """Show a version: where it came from, its schema and its profile."""
    with open_session(ctx) as workspace:
        version = workspace.datasets.get(ref)
    if as_json:
        emit_json({**_summary(version), "columns": version.columns,
                   "profile": version.profile, "parents": version.parents,
                   "source_hash": version.source_hash, "blob_digest": version.blob_digest})
        return
    console.print(f"{version.ref}  {version.rows:,} rows  content {version.content_hash}")
    console.print(f"source {version.source_uri or '(in memory)'}  sha256 {version.source_hash}")
    profile = version.profile.get("columns", {})
    table("columns", ["column", "type", "kind", "null rate", "min", "max"], [
        (c.name, c.type, profile.get(c.name, {}).get("kind", "-"),
         f"{profile.get(c.name, {}).get('null_rate', 0):.2%}",
         _short(profile.get(c.name, {}).get("min")), _short(profile.get(c.name, {}).get("max")))
        for c in version.columns])


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)[:24]


@app.command()
def diff(ctx: typer.Context, before: str, after: str, as_json: JsonFlag = False) -> None:
    """Compare two versions: schema changes, row counts, statistics that moved."""
    with open_session(ctx) as workspace:
        changes = diff_versions(workspace.datasets.get(before, "before"),
                                workspace.datasets.get(after, "after"))
    if as_json:
        emit_json(changes)
        return
    console.print(f"{changes.before} → {changes.after}: rows {changes.rows_before:,} → "
                  f"{changes.rows_after:,}")
    for name in changes.added:
        console.print(f"  + column {name}", style="green")
    for name in changes.removed:
        console.print(f"  - column {name}", style="red")
    for name, old, new in changes.retyped:
        console.print(f"  ~ column {name}: {old} → {new}", style="yellow")
    if changes.changes:
        table("statistics that moved", ["column", "statistic", "before", "after", "change"], [
            (c.column, c.statistic, _short(c.before), _short(c.after),
             "-" if c.relative_change is None else f"{c.relative_change:+.1%}")
            for c in changes.changes])
    if changes.same_content:
        console.print("  no differences")


@app.command()
def validate(ctx: typer.Context, ref: str,
             suite: Annotated[Path, typer.Option(exists=True, dir_okay=False,
                                                 help="Expectation suite (YAML).")],
             as_json: JsonFlag = False) -> None:
    """Check a version against an expectation suite; exit 9 when an expectation fails."""
    loaded = Suite.from_yaml(suite)
    with open_session(ctx) as workspace:
        report = workspace.validate_dataset(ref, loaded)
    if as_json:
        emit_json(report)
    else:
        console.print(report.summary())
    if not report.passed:
        raise typer.Exit(9)


@app.command()
def append(ctx: typer.Context, name: str, source: str,
           time_column: Annotated[str | None, typer.Option(
               help="A timezone-aware timestamp column, for windowed reads.")] = None,
           as_json: JsonFlag = False) -> None:
    """Append SOURCE as a new partition of the incremental dataset NAME."""
    with open_workspace(ctx) as workspace:
        part = workspace.partitions.append(name, source, time_column)
    if as_json:
        emit_json(part)
        return
    success(f"appended {name}#{part.seq}: {part.rows:,} rows")


@app.command()
def read(ctx: typer.Context, name: str,
         dest: Annotated[Path, typer.Argument(dir_okay=False, help="Parquet file to write.")],
         start: Annotated[datetime | None, typer.Option(formats=TIME_FORMATS)] = None,
         end: Annotated[datetime | None, typer.Option(formats=TIME_FORMATS)] = None,
         last: Annotated[int | None, typer.Option(min=1, help="Only the last N rows.")] = None,
         ) -> None:
    """Write a window of an incremental dataset (time range and/or last N rows) to Parquet."""
    with open_workspace(ctx) as workspace:
        rows = workspace.partitions.read(name, Window(start, end, last))
    _write_parquet(rows, dest)


@app.command()
def export(ctx: typer.Context, ref: str,
           dest: Annotated[Path, typer.Argument(dir_okay=False, help="Parquet file to write.")],
           ) -> None:
    """Write a snapshot version's rows to a Parquet file (a verified copy of the stored one)."""
    _check_dest(dest)
    with open_session(ctx) as workspace:
        version = workspace.datasets.get(ref)
        if isinstance(workspace, Client):  # downloaded and checked against its digest first
            _save(workspace.datasets.read(version.id), dest)
        else:
            workspace.artifacts.get_to_file(version.blob_digest, dest)
    success(f"wrote {version.rows:,} rows of {version.ref} to {dest}")


def _check_dest(dest: Path) -> None:
    if dest.exists():
        error(f"{dest} exists; choose another path")
        raise typer.Exit(4)
    if not dest.parent.is_dir():
        raise InvalidArgumentError("dest", f"folder {dest.parent} does not exist")


def _save(rows: Any, dest: Path) -> None:
    temp = dest.with_name(f".{dest.name}.tmp")
    pq.write_table(rows, temp, compression="zstd")
    temp.replace(dest)


def _write_parquet(rows: Any, dest: Path) -> None:
    _check_dest(dest)
    _save(rows, dest)
    success(f"wrote {rows.num_rows:,} rows to {dest}")
