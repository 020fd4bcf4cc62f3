"""``loopline artifacts``: put, get, list, show, verify and re-key content-addressed objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopline.artifacts import generate_key
from loopline.cli.context import open_workspace
from loopline.cli.output import console, emit_json, error, success, table
from loopline.cli.workspace_cmds import JsonFlag

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
def verify(ctx: typer.Context,
           digests: Annotated[list[str] | None, typer.Argument(
               help="Only these digests (default: every stored object).")] = None,
           as_json: JsonFlag = False) -> None:
    """Recheck objects against their digests; exit 6 naming each bad one (all are checked)."""
    with open_workspace(ctx) as workspace, console.status("verifying", spinner="dots"):
        report = workspace.artifacts.verify(digests or None)
    if as_json:
        emit_json(report)
    for problem in report.problems:
        error(f"artifact {problem.digest}: {problem.reason}")
    if report.problems:
        raise typer.Exit(6)
    if not as_json:
        success(f"{report.checked} objects verified ({report.bytes_checked:,} bytes)")


@app.command("rotate-key")
def rotate_key(ctx: typer.Context) -> None:
    """Re-encrypt every object under the active key (the first in LOOPLINE_ENCRYPTION_KEY)."""
    with open_workspace(ctx) as workspace, console.status("re-encrypting", spinner="dots"):
        report = workspace.artifacts.rotate_key()
    success(f"{report.rewritten} re-encrypted, {report.already_current} already under key "
            f"{report.active_key_id}")
    for problem in report.failed:
        error(f"artifact {problem.digest} left as it was: {problem.reason}")
    if report.failed:
        raise typer.Exit(6)


@app.command("generate-key")
def generate_key_cmd() -> None:
    """Print a new random AES-256 key for LOOPLINE_ENCRYPTION_KEY or a key file."""
    print(generate_key())
