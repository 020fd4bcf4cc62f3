"""``loopline run FILE.py:PIPELINE`` and ``loopline runs list|show|resume``.

``run`` imports the user's file (its folder goes first on ``sys.path`` so its own imports
work), plans the pipeline with the ``--param`` values and runs it in this process. A
``--param`` value is read as JSON when it parses (``n=3``, ``items=[1,2]``), else as text.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from loopline.app import Workspace
from loopline.cli.context import open_workspace
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.workspace_cmds import JsonFlag
from loopline.core.errors import InvalidArgumentError, UserCodeError
from loopline.pipelines import PipelineDefinition, RunResult

app = typer.Typer(help="Pipeline runs: list, show, resume.", no_args_is_help=True)

Target = Annotated[str, typer.Argument(help="FILE.py:PIPELINE, the pipeline to run.")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="A pipeline parameter, k=v (v read as JSON when it parses).")]


def load_pipeline(target: str) -> PipelineDefinition:
    """Import ``FILE.py`` and return its ``@pipeline`` named ``PIPELINE``.

    Raises:
        InvalidArgumentError: naming ``target`` when the file or the name is wrong.
        UserCodeError: when importing the file raises.
    """
    path_text, _, name = target.rpartition(":")
    path = Path(path_text)
    if not path_text or not name or path.suffix != ".py" or not path.is_file():
        raise InvalidArgumentError("target", f"{target!r} must be FILE.py:PIPELINE naming an "
                                             "existing Python file")
    spec = importlib.util.spec_from_file_location(f"loopline_user_{path.stem}", path.resolve())
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise InvalidArgumentError("target", f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserCodeError(f"importing {path} raised {type(exc).__name__}: {exc}") from exc
    found = getattr(module, name, None)
    if not isinstance(found, PipelineDefinition):
        raise InvalidArgumentError("target", f"{path} has no @pipeline named {name!r}")
    return found


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """Return ``k=v`` pairs as a dict, each value JSON when it parses, else text.

    Raises:
        InvalidArgumentError: naming ``--param`` when a pair has no ``=`` or no key.
    """
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError("--param", f"{pair!r} must be KEY=VALUE")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params


def _report(result: RunResult, workspace: Workspace, as_json: bool) -> None:
    tasks = workspace.pipelines.runs.tasks(result.run.id)
    if as_json:
        emit_json({"run": result.run, "tasks": tasks, "result": result.result})
    else:
        _show_tasks(result.run.id, tasks)
        if result.succeeded:
            success(f"run {result.run.id} of {result.run.pipeline} succeeded")
    result.raise_for_failure()


def _show_tasks(run_id: str, tasks: list[Any]) -> None:
    table(f"run {run_id}", ["task", "state", "attempts", "error"], [
        (t.task_key, str(t.state), t.attempt, t.error or "") for t in tasks])


def run(ctx: typer.Context, target: Target, param: Params = None,
        as_json: JsonFlag = False) -> None:
    """Run a pipeline from a Python file; exit 10 when a task fails, 5 for bad parameters."""
    pipeline = load_pipeline(target)
    params = parse_params(param)
    with open_workspace(ctx) as workspace:
        _report(workspace.pipelines.run(pipeline, params), workspace, as_json)


@app.command("resume")
def resume(ctx: typer.Context, run_id: str, target: Target, as_json: JsonFlag = False) -> None:
    """Finish an interrupted or failed run; finished tasks are not run again."""
    pipeline = load_pipeline(target)
    with open_workspace(ctx) as workspace:
        _report(workspace.pipelines.resume(run_id, pipeline), workspace, as_json)


@app.command("list")
def list_(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only runs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List pipeline runs, newest first."""
    with open_workspace(ctx) as workspace:
        runs = workspace.pipelines.runs.runs(pipeline, limit)
    if as_json:
        emit_json(runs)
        return
    table(f"{len(runs)} runs", ["id", "pipeline", "state", "created", "by", "error"], [
        (r.id, r.pipeline, str(r.state), r.created_at.isoformat(timespec="seconds"),
         r.created_by, (r.error or "")[:80]) for r in runs])


@app.command()
def show(ctx: typer.Context, run_id: str, as_json: JsonFlag = False) -> None:
    """Show one run: its parameters, state, and each task's state and attempts."""
    with open_workspace(ctx) as workspace:
        found = workspace.pipelines.runs.run(run_id)
        tasks = workspace.pipelines.runs.tasks(run_id)
    if as_json:
        emit_json({"run": found, "tasks": tasks})
        return
    console.print(f"{found.pipeline} {found.state} parameters={json.dumps(found.parameters)}")
    if found.error:
        console.print(f"error: {found.error}")
    _show_tasks(run_id, tasks)


def register(root: typer.Typer) -> None:
    """Add ``run`` and the ``runs`` group to the root command."""
    root.command("run")(run)
    root.add_typer(app, name="runs")
