"""``loopline run TARGET`` and ``loopline runs list|show|resume|cancel|logs``.

``run`` imports the user's file (its folder goes first on ``sys.path`` so its own imports
work), plans the pipeline with the ``--param`` values and runs it in this process, showing
its tasks live on a terminal. A ``--param`` value is read as JSON when it parses (``n=3``,
``items=[1,2]``), else as text. TARGET is ``FILE.py:PIPELINE`` or a pipeline file of command
tasks (``.toml``, ``.yaml``). ``run`` and ``resume`` execute here, so they need a local
workspace; ``runs list|show|cancel|logs`` work through ``--server`` too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from loopline.app import Workspace
from loopline.cli.context import open_session, open_workspace
from loopline.cli.output import console, emit_json, success, table
from loopline.cli.run_view import RunView
from loopline.cli.user_code import import_user_file
from loopline.cli.workspace_cmds import JsonFlag
from loopline.client import Client
from loopline.core.errors import InvalidArgumentError
from loopline.pipelines import PipelineDefinition, Runner, RunResult, build_plan
from loopline.pipelines.pipeline_file import load_pipeline_file

app = typer.Typer(help="Pipeline runs: list, show, resume, cancel, logs.", no_args_is_help=True)

Target = Annotated[str, typer.Argument(
    help="FILE.py:PIPELINE, or a pipeline file of command tasks (.toml, .yaml).")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="A pipeline parameter, k=v (v read as JSON when it parses).")]
Executor = Annotated[str | None, typer.Option(
    help="Where tasks run: thread, process or ray (default: the workspace's setting).")]
Workers = Annotated[int | None, typer.Option(
    "--max-workers", min=1, max=256, help="Tasks of the run at a time.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Run every task; reuse nothing.")]
PIPELINE_FILE_SUFFIXES = (".toml", ".yaml", ".yml")


def load_pipeline(target: str) -> PipelineDefinition:
    """Import ``FILE.py`` and return its ``@pipeline`` named ``PIPELINE``.

    Raises:
        InvalidArgumentError: naming ``target`` when the file or the name is wrong.
        UserCodeError: when importing the file raises.
    """
    if Path(target).suffix in PIPELINE_FILE_SUFFIXES:
        return load_pipeline_file(Path(target))
    path_text, _, name = target.rpartition(":")
    path = Path(path_text)
    if not path_text or not name or path.suffix != ".py" or not path.is_file():
        raise InvalidArgumentError("target", f"{target!r} must be FILE.py:PIPELINE naming an "
                                             "existing Python file")
    module = import_user_file(path, "target")
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


def _runner(workspace: Workspace, executor: str | None, workers: int | None, no_cache: bool,
            view: RunView | None) -> Runner:
    options: dict[str, Any] = {"cache": not no_cache, "observer": view}
    if executor is not None:
        options["executor"] = executor
    if workers is not None:
        options["max_workers"] = workers
    return workspace.runner(**options)


def _view(pipeline: PipelineDefinition, total: int, as_json: bool) -> RunView | None:
    return None if as_json or not console.is_terminal else RunView(console, pipeline.name,
                                                                   total)


def run(ctx: typer.Context, target: Target, param: Params = None,  # noqa: PLR0913
        executor: Executor = None, max_workers: Workers = None, no_cache: NoCache = False,
        as_json: JsonFlag = False) -> None:
    """Run a pipeline; exit 10 when a task fails, 5 for bad parameters."""
    pipeline = load_pipeline(target)
    params = parse_params(param)
    view = _view(pipeline, len(build_plan(pipeline, params).order), as_json)
    with open_workspace(ctx) as workspace:
        runner = _runner(workspace, executor, max_workers, no_cache, view)
        try:
            with view or _NoView():
                result = runner.run(pipeline, params)
        finally:
            runner.close()
        _report(result, workspace, as_json)


@app.command("resume")
def resume(ctx: typer.Context, run_id: str, target: Target,  # noqa: PLR0913
           executor: Executor = None, max_workers: Workers = None, no_cache: NoCache = False,
           as_json: JsonFlag = False) -> None:
    """Finish an interrupted or failed run; finished tasks are not run again."""
    pipeline = load_pipeline(target)
    with open_workspace(ctx) as workspace:
        total = len(workspace.pipelines.runs.tasks(run_id))
        view = _view(pipeline, total, as_json)
        runner = _runner(workspace, executor, max_workers, no_cache, view)
        try:
            with view or _NoView():
                result = runner.resume(run_id, pipeline, requested=True)
        finally:
            runner.close()
        _report(result, workspace, as_json)


class _NoView:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@app.command()
def cancel(ctx: typer.Context, run_id: str) -> None:
    """Ask a run to stop: no task starts after its runner's next heartbeat."""
    with open_session(ctx) as workspace:
        asked = workspace.pipelines.cancel(run_id)
    success(f"run {run_id}: cancel requested" if asked else
            f"run {run_id}: a cancel was already requested")


@app.command()
def logs(
    ctx: typer.Context,
    run_id: str,
    task: Annotated[str | None, typer.Option(help="Only this task's attempts.")] = None,
    full: Annotated[bool, typer.Option(help="Print whole captured output, not its tail.")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Show each attempt of a run's tasks: outcome, error, traceback and captured output."""
    with open_session(ctx) as workspace:
        keys = [task] if task else [t.task_key for t in workspace.pipelines.runs.tasks(run_id)]
        attempts = {key: workspace.pipelines.runs.attempts(run_id, key) for key in keys}
        if task and not attempts[task]:
            raise InvalidArgumentError("--task", f"run {run_id} has no attempts of {task!r}")
        if as_json:
            emit_json(attempts)
            return
        if isinstance(workspace, Client):  # the captured output is in the server's store
            console.print(workspace.pipelines.runs.logs(run_id, task, full).rstrip("\n"))
            return
        for key, rows in attempts.items():
            for attempt in rows:
                _print_attempt(workspace, key, attempt, full)


def _print_attempt(workspace: Workspace, key: str, attempt: Any, full: bool) -> None:
    took = ""
    if attempt.finished_at is not None:
        took = f" in {(attempt.finished_at - attempt.started_at).total_seconds():.3f}s"
    console.print(f"== {key} attempt {attempt.attempt}: {attempt.state}{took}")
    if attempt.error:
        console.print(f"error: {attempt.error}")
    for stream, info in (attempt.logs or {}).items():
        text = info.get("tail", "")
        if full:
            text = workspace.artifacts.blobs.get_bytes(info["digest"]).decode(
                "utf-8", errors="replace")
        console.print(f"-- {stream} ({info.get('size', 0)} bytes)")
        console.print(text.rstrip("\n"))
    if attempt.traceback and attempt.state != "succeeded":
        console.print(attempt.traceback.rstrip("\n"))


@app.command("list")
def list_(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only runs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List pipeline runs, newest first."""
    with open_session(ctx) as workspace:
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
    with open_session(ctx) as workspace:
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
