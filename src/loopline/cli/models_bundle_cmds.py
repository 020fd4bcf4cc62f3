"""``loopline models verify|export|import``: prove a version reproduces; move it elsewhere.

``verify`` exits 1 when a check fails (the table says which and by how much); errors follow
``cli/errors.py``: 3 for an unknown version or one without a holdout sample, 4 when the
export file exists, 6 for a bundle that fails a check, 9 for a missing trust decision.
``verify`` (the server loads the version) and ``import`` (the bundle is read here) work
through ``--server``; ``export`` reads the workspace's artifact store, so it is local only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopline.cli.context import open_session, open_workspace
from loopline.cli.models_cmds import Uri
from loopline.cli.output import console, emit_json, error, ok_or_fail, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.registry.verify import DEFAULT_TIMEOUT, VerifyReport

BundleFile = Annotated[Path, typer.Argument(metavar="FILE", help="The bundle file.")]


def _diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _print_report(report: VerifyReport) -> None:
    table(f"{report.uri}: {report.rows} holdout rows, {report.flavor} flavor, "
          f"tolerance {report.tolerance}",
          ["check", "compared", "rows", "max abs diff", "policy", "result", "detail"],
          [(c.name, c.compared, "-" if c.rows is None else c.rows, _diff(c.max_abs_diff),
            c.policy, ok_or_fail(c.passed), c.detail) for c in report.checks])
    if report.passed:
        success(f"{report.uri} reproduces its recorded outputs in a fresh process "
                f"({report.seconds:.1f} s)")
    else:
        error(f"{report.uri} failed verification: {'; '.join(report.reasons)}")


def verify(
    ctx: typer.Context, uri: Uri,
    timeout: Annotated[float, typer.Option(
        min=1, help="Seconds the fresh process may take to load and score.")] = DEFAULT_TIMEOUT,
    as_json: JsonFlag = False,
) -> None:
    """Load a version in a fresh process, score its holdout sample, compare with the record."""
    with open_session(ctx) as workspace:
        report = workspace.models.verify(uri, timeout=timeout)
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if not report.passed:
        raise typer.Exit(1)


def export(ctx: typer.Context, uri: Uri, file: BundleFile, as_json: JsonFlag = False) -> None:
    """Write a version (artifact, metadata, environment, holdout, checksums) to one file."""
    with open_workspace(ctx) as workspace:
        done = workspace.models.export(uri, file)
    if as_json:
        emit_json(done)
        return
    success(f"{done.source} → {done.path} ({done.size} bytes, {len(done.members) + 1} members, "
            f"sha256 {done.sha256})")


def import_(
    ctx: typer.Context, file: BundleFile,
    name: Annotated[str | None, typer.Option(
        help="Register under this name instead of the source's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a bundle and register its version here (trust decisions are not carried over)."""
    with open_session(ctx) as workspace:
        done = workspace.models.import_bundle(file, name)
    if as_json:
        emit_json(done)
        return
    success(f"{done.source} → {done.version.uri} (bundle sha256 {done.bundle_sha256})")
    for note in done.notes:
        console.print(f"  note: {note}")


def register(models: typer.Typer) -> None:
    """Add ``verify``, ``export`` and ``import`` to the ``models`` group."""
    models.command("verify")(verify)
    models.command("export")(export)
    models.command("import")(import_)
