"""``loopline artifacts``: put, get, list, show, verify and re-key content-addressed objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from loopline.artifacts import generate_key
from loopline.cli.context import open_workspace
from loopline.cli.output import console, emit_json, error, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.artifacts import ObjectProblem

app = typer.Typer(help="Content-addressed artifacts: put, get, list, show, verify, rotate-key.",
                  no_args_is_help=True)


@app.command()
def put(ctx: typer.Context,
        path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
        as_json: JsonFlag = False) -> None:
    """Store a file; prints its SHA-256 digest (idempotent: same bytes, same digest)."""
    with open_workspace(ctx) as workspace:
        info = workspace.artifacts.put_file(path)
    if as_json:
        emit_json(info)
        return
    state = "stored" if info.created else "already stored"
    success(f"{state} {info.digest} ({info.size} bytes)")


@app.command()
def get(ctx: typer.Context, digest: str,
        dest: Annotated[Path, typer.Argument(dir_okay=False, writable=True)]) -> None:
    """Write the verified bytes of DIGEST to DEST (nothing is written on a mismatch)."""
    with open_workspace(ctx) as workspace:
        info = workspace.artifacts.get_to_file(digest, dest)
    success(f"wrote {info.size} bytes to {dest}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List stored objects."""
    with open_workspace(ctx) as workspace:
        objects = sorted(workspace.artifacts.list(), key=lambda o: o.digest)
    if as_json:
        emit_json(objects)
        return
    table(f"{len(objects)} artifacts", ["digest", "bytes", "key"],
          [(o.digest, o.size, o.key_id or "-") for o in objects])


@app.command()
def show(ctx: typer.Context, digest: str, as_json: JsonFlag = False) -> None:
    """Describe one object."""
    with open_workspace(ctx) as workspace:
        info = workspace.artifacts.info(digest)
    if as_json:
        emit_json(info)
        return
    table("artifact", ["digest", "bytes", "key"], [(info.digest, info.size, info.key_id or "-")])


@app.command()
def verify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Recheck every object against its digest; exit 6 naming each bad object."""
    with open_workspace(ctx) as workspace:
        digests = [o.digest for o in workspace.artifacts.list()]
        with Progress(TextColumn("verifying"), BarColumn(), TaskProgressColumn(),
                      console=console, transient=True, disable=as_json) as progress:
            task = progress.add_task("verify", total=len(digests))
            problems: list[ObjectProblem] = []
            checked = 0
            for digest in digests:
                report = workspace.artifacts.verify([digest])
                problems.extend(report.problems)
                checked += report.checked
                progress.advance(task)
    if as_json:
        emit_json({"checked": checked, "problems": problems})
    for problem in problems:
        error(f"artifact {problem.digest}: {problem.reason}")
    if problems:
        raise typer.Exit(6)
    if not as_json:
        success(f"{checked} objects verified")


@app.command("rotate-key")
def rotate_key(ctx: typer.Context) -> None:
    """Re-encrypt every object under the active key (the first in LOOPLINE_ENCRYPTION_KEY)."""
    with open_workspace(ctx) as workspace:
        report = workspace.artifacts.rotate_key()
    success(f"{report.rewritten} re-encrypted, {report.already_current} already under key "
            f"{report.active_key_id}")


@app.command("generate-key")
def generate_key_cmd() -> None:
    """Print a new random AES-256 key for LOOPLINE_ENCRYPTION_KEY or a key file."""
    print(generate_key())
