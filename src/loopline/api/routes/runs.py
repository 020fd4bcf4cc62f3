"""``/pipelines`` and ``/runs``: the pipelines this server can start, and pipeline runs.

``POST /runs`` records a pending run of a pipeline the server loaded (``loopline server
FILE.py``) as the caller (``Runner.create`` through the caller's view) and has it executed
(``api.run_starter``): on the server's run pool when ``loopline server`` gave one (its
scheduler's bounded pool), else on a thread of this process; ``POST /runs/{id}/resume``
goes the same way. Either way the run executes through the caller's own runner and the
request answers at once with the run, which callers
poll (``GET /runs/{id}``), and refuses with 503 and ``Retry-After`` when the server runs as
many as it allows. Starting, resuming and cancelling act as the caller. The reads mirror
``RunQueries``: a listing reaches the newest ``MAX_LISTED`` runs (a cursor past them is
refused naming ``cursor``); ``/logs`` shows what ``loopline runs logs`` shows, as text.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import PlainTextResponse, StreamingResponse

from loopline.api.auth import Reader, Writer
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText
from loopline.api.run_starter import starter_of
from loopline.app import Workspace
from loopline.core.canonical import canonical_json
from loopline.core.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
)
from loopline.core.runs import PipelineRun, RunState, TaskAttempt, TaskRun, TaskState
from loopline.pipelines import PipelineDefinition, build_plan

router = APIRouter(tags=["runs"])

RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A pipeline run id.")]
TaskKey = Annotated[str, Path(max_length=160, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                              description="A task's key in its run (its name, or name-N).")]
PipelineName = Annotated[str, Field(min_length=1, max_length=128)]
MAX_LISTED = 10_000  # the newest runs a listing reaches
LOG_CHUNK = 64 * 1024
HELD_TASK_STATES = (TaskState.RUNNING, TaskState.RETRYING)
TEXT = "text/plain; charset=utf-8"


class PipelineParameter(BaseModel):
    """One parameter of a pipeline: its type as written, and its default when it has one."""

    name: str
    required: bool
    annotation: str | None = None
    default: Any = None


class PipelineSchedule(BaseModel):
    """A cron schedule on which ``loopline scheduler`` starts the pipeline."""

    name: str
    cron: str
    timezone: str
    catchup: str
    parameters: dict[str, Any]


class PipelineTrigger(BaseModel):
    """An event trigger on which ``loopline scheduler`` starts the pipeline."""

    name: str
    on: str
    where: dict[str, Any]
    parameters: dict[str, str]


class PipelineInfo(BaseModel):
    """A pipeline this server can start: its parameters, schedules and triggers."""

    name: str
    parameters: list[PipelineParameter]
    schedules: list[PipelineSchedule]
    triggers: list[PipelineTrigger]


class NewRun(BaseModel):
    """Which pipeline to run, with which parameters (checked against its signature)."""

    model_config = ConfigDict(extra="forbid")

    pipeline: PipelineName
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=256)


class ResumedRun(BaseModel):
    """The pipeline the run must be of (optional: the run knows its pipeline)."""

    model_config = ConfigDict(extra="forbid")

    pipeline: PipelineName | None = None


class CancelledRun(BaseModel):
    """Whether this call asked the run to stop (false: it was asked already), and the run."""

    requested: bool
    run: PipelineRun


def _annotation(hints: Mapping[str, Any], parameter: inspect.Parameter) -> str | None:
    hint = hints.get(parameter.name, parameter.annotation)
    if hint is inspect.Parameter.empty:
        return None
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _default(value: Any) -> Any:
    try:
        canonical_json(value)
    except (TypeError, ValueError):
        return repr(value)[:200]  # not a JSON value: shown, since it cannot be sent anyway
    return value


def _parameters(pipeline: PipelineDefinition) -> list[PipelineParameter]:
    try:
        hints = typing.get_type_hints(pipeline.fn)
    except (NameError, TypeError):
        hints = {}
    empty = inspect.Parameter.empty
    return [PipelineParameter(name=p.name, required=p.default is empty,
                              annotation=_annotation(hints, p),
                              default=None if p.default is empty else _default(p.default))
            for p in pipeline.signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def describe(pipeline: PipelineDefinition) -> PipelineInfo:
    """Return what callers see of ``pipeline``."""
    return PipelineInfo(
        name=pipeline.name, parameters=_parameters(pipeline),
        schedules=[PipelineSchedule(name=s.name, cron=s.cron, timezone=s.timezone,
                                    catchup=s.catchup, parameters=dict(s.parameters))
                   for s in pipeline.schedules],
        triggers=[PipelineTrigger(name=t.label, on=t.on, where=dict(t.where),
                                  parameters=dict(t.parameters)) for t in pipeline.triggers])


def _served(request: Request) -> dict[str, PipelineDefinition]:
    found: dict[str, PipelineDefinition] = request.app.state.pipelines
    return found


def _pipeline(request: Request, name: str) -> PipelineDefinition:
    served = _served(request)
    found = served.get(name)
    if found is None:
        known = ", ".join(sorted(served)) or "none (start it with `loopline server FILE.py`)"
        raise NotFoundError("pipeline", name, f"this server can start: {known}")
    return found


@router.get("/pipelines", response_model=Page[PipelineInfo])
def list_pipelines(request: Request, _: Reader, paging: Paging) -> Page[PipelineInfo]:
    """List the pipelines this server can start (``POST /runs``), by name."""
    served = _served(request)
    return paginate([describe(served[name]) for name in sorted(served)], paging)


@router.get("/runs", response_model=Page[PipelineRun])
def list_runs(ws: Reader, paging: Paging,
              pipeline: Annotated[FilterText | None, Query(max_length=128)] = None,
              state: RunState | None = None) -> Page[PipelineRun]:
    """List runs (of one pipeline, in one state), newest first; the newest 10,000 at most."""
    window = paging.window(MAX_LISTED)
    # The store filters by pipeline only: a state filter reads every run the listing reaches.
    found = ws.pipelines.runs.runs(pipeline, MAX_LISTED if state is not None else window)
    if state is not None:
        found = [run for run in found if run.state is state]
    return paginate(found, paging)


@router.get("/runs/{run_id}", response_model=PipelineRun)
def show_run(run_id: RunId, ws: Reader) -> PipelineRun:
    """Show one run: its pipeline, parameters, state, who started it and why it failed."""
    return ws.pipelines.runs.run(run_id)


@router.get("/runs/{run_id}/tasks", response_model=Page[TaskRun])
def list_tasks(run_id: RunId, ws: Reader, paging: Paging) -> Page[TaskRun]:
    """List the task runs of a run, by task key."""
    ws.pipelines.runs.run(run_id)  # 404 for an unknown run, not an empty list
    return paginate(ws.pipelines.runs.tasks(run_id), paging)


def _task_keys(ws: Workspace, run_id: str) -> list[str]:
    ws.pipelines.runs.run(run_id)
    return [task.task_key for task in ws.pipelines.runs.tasks(run_id)]


@router.get("/runs/{run_id}/tasks/{task_key}/attempts", response_model=Page[TaskAttempt])
def list_attempts(run_id: RunId, task_key: TaskKey, ws: Reader,
                  paging: Paging) -> Page[TaskAttempt]:
    """List every attempt at one task of a run, oldest first."""
    if task_key not in _task_keys(ws, run_id):
        raise NotFoundError("task", task_key, f"run {run_id} has no such task")
    return paginate(ws.pipelines.runs.attempts(run_id, task_key), paging)


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Each attempt's outcome, error and output."}})
def run_logs(run_id: RunId, ws: Reader,
             task: Annotated[FilterText | None, Query(max_length=160)] = None,
             full: Annotated[bool, Query(description="Whole captured output, not its tail."
                                         )] = False) -> StreamingResponse:
    """Show each attempt of a run's tasks: outcome, error, traceback and captured output."""
    keys = _task_keys(ws, run_id)
    if task is not None and task not in keys:
        raise NotFoundError("task", task, f"run {run_id} has no such task")
    attempts = {key: ws.pipelines.runs.attempts(run_id, key)
                for key in ([task] if task is not None else keys)}
    return StreamingResponse(_log_text(ws, attempts, full), media_type=TEXT)


def _log_text(ws: Workspace, attempts: Mapping[str, list[TaskAttempt]],
              full: bool) -> Iterator[bytes]:
    for key, rows in attempts.items():
        for attempt in rows:
            took = ""
            if attempt.finished_at is not None:
                seconds = (attempt.finished_at - attempt.started_at).total_seconds()
                took = f" in {seconds:.3f}s"
            yield f"== {key} attempt {attempt.attempt}: {attempt.state}{took}\n".encode()
            if attempt.error:
                yield f"error: {attempt.error}\n".encode()
            for stream, info in (attempt.logs or {}).items():
                yield f"-- {stream} ({info.get('size', 0)} bytes)\n".encode()
                if full:
                    yield from _captured(ws, str(info.get("digest", "")))
                else:
                    yield (str(info.get("tail", "")).rstrip("\n") + "\n").encode()
            if attempt.traceback and attempt.state is not TaskState.SUCCEEDED:
                yield (attempt.traceback.rstrip("\n") + "\n").encode()


def _captured(ws: Workspace, digest: str) -> Iterator[bytes]:
    if not digest or not ws.artifacts.exists(digest):
        yield b"(the captured output is no longer in the artifact store)\n"
        return
    last = b"\n"
    with ws.artifacts.open(digest) as handle:
        while chunk := handle.read(LOG_CHUNK):
            last = chunk
            yield chunk
    if not last.endswith(b"\n"):
        yield b"\n"


@router.post("/runs", status_code=201, response_model=PipelineRun)
def start_run(body: NewRun, request: Request, ws: Writer) -> PipelineRun:
    """Start a run of a pipeline this server knows; answer at once with the pending run.

    The run executes on the server's executor; poll ``GET /runs/{id}`` for its state.
    """
    definition = _pipeline(request, body.pipeline)
    return starter_of(request.app.state).start(
        ws, definition, lambda: ws.pipelines.create(definition, body.parameters))


def _resumable(ws: Workspace, run: PipelineRun, definition: PipelineDefinition,
               now: datetime) -> PipelineRun:
    """Return ``run`` when resuming it can work; refuse early what ``Runner.resume`` would."""
    if run.state in (RunState.SUCCEEDED, RunState.CANCELLED):
        raise InvalidTransitionError("pipeline run", run.id, str(run.state),
                                     str(RunState.RUNNING))
    tasks = ws.pipelines.runs.tasks(run.id)
    if {task.task_key for task in tasks} != set(build_plan(definition, run.parameters).order):
        raise ConflictError(f"pipeline {definition.name!r} now plans other tasks than run "
                            f"{run.id} recorded; start a new run instead")
    for task in tasks:
        if task.state in HELD_TASK_STATES and task.lease_expires_at is not None \
                and task.lease_expires_at > now:
            raise ConflictError(f"task {task.task_key!r} of run {run.id} is held by "
                                f"{task.lease_owner} until {task.lease_expires_at}; wait "
                                "for that runner to finish or for the lease to expire")
    return run


@router.post("/runs/{run_id}/resume", status_code=202, response_model=PipelineRun)
def resume_run(run_id: RunId, request: Request, ws: Writer,
               body: ResumedRun | None = None) -> PipelineRun:
    """Finish a failed, interrupted or never executed run; finished tasks do not run again.

    Answers at once; the run executes on the server's run pool (or a thread of this server
    without one), acting as the caller.
    """
    run = ws.pipelines.runs.run(run_id)
    if body is not None and body.pipeline is not None and body.pipeline != run.pipeline:
        raise InvalidArgumentError("pipeline", f"run {run_id} is of pipeline "
                                   f"{run.pipeline!r}, not {body.pipeline!r}")
    definition = _pipeline(request, run.pipeline)
    checked = _resumable(ws, run, definition, ws.store.clock.now())

    def record() -> PipelineRun:
        ws.pipelines.record_resume(checked.id)  # the caller's act, audited as them
        return checked

    return starter_of(request.app.state).start(ws, definition, record, resumed=True)


@router.post("/runs/{run_id}/cancel", response_model=CancelledRun)
def cancel_run(run_id: RunId, ws: Writer) -> CancelledRun:
    """Ask a run to stop: no task starts after its runner's next heartbeat."""
    requested = ws.pipelines.cancel(run_id)
    return CancelledRun(requested=requested, run=ws.pipelines.runs.run(run_id))
