"""``loopline score``: batch-score a dataset with a model version, with a progress bar."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from loopline.cli.context import open_workspace
from loopline.cli.output import console, emit_json, err_console, success
from loopline.cli.workspace_cmds import JsonFlag
from loopline.registry.batch_scoring import CHUNK_ROWS, ScoreOptions


def _names(text: str | None) -> tuple[str, ...] | None:
    """Split ``a,b,c`` into column names (None when not given)."""
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def score(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="The version to score with: models:/NAME@ALIAS or NAME/VERSION.")],
    input_: Annotated[str, typer.Option(
        "--input", "-i", help="CSV/Parquet file, glob, folder or URL, or dataset:NAME@N.")],
    output: Annotated[str, typer.Option(
        "--output", "-o", help="Where to write the scores: a .parquet or .csv file.")],
    executor: Annotated[str | None, typer.Option(
        help="inline, thread or ray (default: ray when the workspace runs on Ray, else "
             "thread).")] = None,
    chunk_rows: Annotated[int, typer.Option(help="Rows per chunk.")] = CHUNK_ROWS,
    columns: Annotated[str | None, typer.Option(
        help="The model's input columns, comma-separated (default: its signature's).")] = None,
    keep: Annotated[str | None, typer.Option(
        help="Input columns to copy to the output, comma-separated (an id, say).")] = None,
    proba: Annotated[bool, typer.Option(
        "--proba", help="Add a proba_<class> column per class.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the output file if it exists.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Score every row of INPUT with MODEL into OUTPUT, chunk by chunk (atomic: all or none)."""
    with open_workspace(ctx) as workspace, Progress(
            SpinnerColumn(), TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
            TextColumn("rows"), TimeElapsedColumn(), console=console, transient=True,
            disable=as_json) as bar:
        task = bar.add_task("score", total=None)
        settings = workspace.settings
        chosen = executor or ("ray" if settings.executor == "ray" or settings.ray_address
                              else "thread")
        options = ScoreOptions(
            executor=chosen, chunk_rows=chunk_rows, keep=_names(keep) or (),
            columns=_names(columns), proba=proba, overwrite=overwrite,
            ray_address=settings.ray_address,
            progress=lambda rows, total: bar.update(task, completed=rows, total=total))
        report = workspace.models.score(model, input_, output, options)
    if as_json:
        emit_json(report)
        return
    success(f"scored {report.rows:,} rows in {report.chunks} chunks with {report.model_uri} "
            f"in {report.seconds:.2f} s → {report.output}")
    for warning in report.warnings:
        err_console.print(Text.assemble(("warning: ", "yellow"), warning), soft_wrap=True)


def register(root: typer.Typer) -> None:
    """Add ``score`` to the root command."""
    root.command("score")(score)
