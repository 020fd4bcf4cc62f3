"""``loopline models import-mlflow``: register a model from an MLflow model directory.

MLflow is not needed. The directory's pickle runs code when it loads, so the command refuses
(exit 9, nothing written) unless ``--trust --reason TEXT`` records an audited decision first
(``registry.mlflow_import``). Version differences are printed as warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from loopline.cli.context import open_workspace
from loopline.cli.output import emit_json, err_console, success
from loopline.cli.workspace_cmds import JsonFlag
from loopline.registry.mlflow_import import import_mlflow


def import_mlflow_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(
        help="The MLflow model directory (the folder holding MLmodel).")],
    name: Annotated[str, typer.Option("--name", help="The registered model to add a version to.")],
    trust: Annotated[bool, typer.Option(
        "--trust", help="Allow the model's pickle to run code while it loads (audited).")] = False,
    reason: Annotated[str | None, typer.Option(
        help="Why the pickle may be trusted (with --trust; kept in the audit log).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import an MLflow model (sklearn flavor) as a new version, stored with skops."""
    with open_workspace(ctx) as workspace:
        result = import_mlflow(workspace.models, path, name, trust=trust, reason=reason)
    if as_json:
        emit_json(result)
        return
    version = result.version
    success(f"imported {result.source} as {version.uri} (flavor {version.flavor}, "
            f"pickle sha256 {result.pickle_sha256})")
    for note in result.warnings:
        err_console.print(Text.assemble(("warning: ", "yellow"), note), soft_wrap=True)


def register(models: typer.Typer) -> None:
    """Add ``import-mlflow`` to the ``models`` command group."""
    models.command("import-mlflow")(import_mlflow_command)
