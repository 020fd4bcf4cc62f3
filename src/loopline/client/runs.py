"""``client.pipelines``: starting, resuming, cancelling and reading pipeline runs over HTTP.

Pipelines run on the server, on its executor, with the code the server loaded (``loopline
server FILE.py``): a client names a pipeline, it never sends code. So where the local
``Runner`` executes in the calling process (``run``, ``resume`` return a ``RunResult`` with
the outputs), the remote one starts the run and returns its ``PipelineRun`` at once
(``submit``, ``resume``); ``wait`` polls until it ends, and the outputs are read from the
task records (``runs.tasks``). ``client.pipelines.runs`` mirrors ``RunQueries``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from loopline.client.transport import Transport, decode, segment
from loopline.core.errors import InvalidArgumentError
from loopline.core.runs import PipelineRun, RunState, TaskAttempt, TaskRun
from loopline.pipelines import PipelineDefinition

__all__ = ["FINAL_RUN_STATES", "PipelineInfo", "PipelineParameter", "RemotePipelines",
           "RemoteRunQueries"]

FINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
MAX_WAIT_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class PipelineParameter:
    """One parameter of a pipeline the server can start."""

    name: str
    required: bool
    annotation: str | None = None
    default: Any = None


@dataclass(frozen=True, slots=True)
class PipelineInfo:
    """A pipeline the server can start: its parameters, schedules and event triggers."""

    name: str
    parameters: tuple[PipelineParameter, ...] = ()
    schedules: tuple[Mapping[str, Any], ...] = ()
    triggers: tuple[Mapping[str, Any], ...] = ()


def _run_path(run_id: str) -> str:
    return f"/runs/{segment(run_id)}"


class RemoteRunQueries:
    """Reads of runs, task runs and attempts, as ``Workspace.pipelines.runs`` does.

    Left out: ``last_scheduled``, ``by_trigger`` and ``cached_outputs``, which the scheduler
    and the runner use. Unlike the local reads, ``tasks`` and ``attempts`` of an unknown run
    raise ``NotFoundError`` instead of returning an empty list.
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def run(self, run_id: str) -> PipelineRun:
        """Return the run with this id. See ``RunQueries.run``.

        Raises:
            NotFoundError: when there is none.
        """
        return decode(PipelineRun, self._http.get(_run_path(run_id)))

    def runs(self, pipeline: str | None = None, limit: int = 100,
             state: RunState | str | None = None) -> builtins.list[PipelineRun]:
        """List runs (of one pipeline, in one ``state``), newest first. See ``RunQueries.runs``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError("limit", f"{limit!r} must be a whole number from 1")
        items = self._http.items("/runs", {"pipeline": pipeline,
                                           "state": None if state is None else str(state)})
        return [decode(PipelineRun, item) for item in islice(items, limit)]

    def tasks(self, run_id: str) -> builtins.list[TaskRun]:
        """List the task runs of a run, by task key. See ``RunQueries.tasks``.

        Raises:
            NotFoundError: when there is no such run.
        """
        return [decode(TaskRun, item) for item in self._http.items(f"{_run_path(run_id)}/tasks")]

    def attempts(self, run_id: str, task_key: str) -> builtins.list[TaskAttempt]:
        """List every attempt at one task of a run, oldest first. See ``RunQueries.attempts``.

        Raises:
            NotFoundError: when there is no such run or task.
        """
        path = f"{_run_path(run_id)}/tasks/{segment(task_key)}/attempts"
        return [decode(TaskAttempt, item) for item in self._http.items(path)]

    def logs(self, run_id: str, task: str | None = None, full: bool = False) -> str:
        """Return what ``loopline runs logs`` shows: each attempt's outcome and output.

        ``full`` gives the whole captured output of each stream instead of its tail.

        Raises:
            NotFoundError: when there is no such run or task.
        """
        return self._http.text(f"{_run_path(run_id)}/logs", {"task": task, "full": full})


class RemotePipelines:
    """Start, resume, cancel and wait for pipeline runs on the server's executor.

    Mirrors ``Workspace.pipelines`` (a ``Runner``) where it can: ``cancel`` is the same;
    ``resume`` starts the resumption and returns at once; ``submit`` replaces ``create`` and
    ``run`` (a pipeline is named, not sent: the server runs its own copy). ``close`` has
    nothing to stop here.
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self.runs = RemoteRunQueries(transport)

    def available(self) -> builtins.list[PipelineInfo]:
        """List the pipelines the server can start, by name."""
        return [decode(PipelineInfo, item) for item in self._http.items("/pipelines")]

    def submit(self, pipeline: str | PipelineDefinition,
               parameters: Mapping[str, Any] | None = None) -> PipelineRun:
        """Start a run of ``pipeline`` on the server; return the pending run at once.

        A ``PipelineDefinition`` is sent by its name: the server runs the pipeline of that
        name it loaded, not this process's code.

        Raises:
            NotFoundError: when the server has no pipeline of that name.
            InvalidArgumentError: naming ``parameters.<name>`` when a parameter is unknown,
                missing or of the wrong type.
            AccessDeniedError: when the token may not start runs.
            BackendError: when the server is busy or unreachable (retry later).
        """
        return decode(PipelineRun, self._http.post("/runs", {
            "pipeline": _name_of(pipeline), "parameters": dict(parameters or {})}))

    def resume(self, run_id: str,
               pipeline: str | PipelineDefinition | None = None) -> PipelineRun:
        """Have the server finish a failed, interrupted or pending run; return it at once.

        Finished tasks do not run again. ``pipeline``, when given, must be the run's.
        Unlike ``Runner.resume`` this does not wait: call ``wait``.

        Raises:
            NotFoundError: when there is no such run, or the server lacks its pipeline.
            InvalidTransitionError: when the run succeeded or was cancelled.
            InvalidArgumentError: when the run belongs to another pipeline.
            ConflictError: when the pipeline's tasks changed, or a live runner holds a task.
        """
        name = None if pipeline is None else _name_of(pipeline)
        return decode(PipelineRun, self._http.post(f"{_run_path(run_id)}/resume",
                                                   {"pipeline": name}))

    def cancel(self, run_id: str) -> bool:
        """Ask run ``run_id`` to stop; False when a cancel was already requested.

        See ``Runner.cancel``.

        Raises:
            NotFoundError: when there is no such run.
            InvalidTransitionError: when the run already ended.
        """
        return bool(self._http.post(f"{_run_path(run_id)}/cancel")["requested"])

    def wait(self, run: str | PipelineRun, timeout: float = 3600.0,
             interval: float = 1.0) -> PipelineRun:
        """Poll a run until it succeeded, failed or was cancelled; return it then.

        ``run`` is an id, or the record ``submit`` or ``resume`` returned: given the record
        of a resumed run that had ended (``failed``), it waits for the end of the new
        execution (the server stamps a new ``started_at`` when it begins), not the old one.
        Polls quickly at first, then every ``interval`` seconds.

        Raises:
            TimeoutError: when the run has not ended within ``timeout`` seconds.
            NotFoundError: when there is no such run.
            InvalidArgumentError: naming ``timeout`` or ``interval`` when out of range.
        """
        _check_seconds("timeout", timeout, MAX_WAIT_SECONDS)
        _check_seconds("interval", interval, 3600.0)
        given = run if isinstance(run, PipelineRun) else None
        run_id = run.id if isinstance(run, PipelineRun) else run
        deadline = time.monotonic() + timeout
        delay = min(0.05, interval)
        while True:
            current = self.runs.run(run_id)
            left = deadline - time.monotonic()
            if _ended(current, given):
                return current
            if left <= 0:
                raise TimeoutError(f"run {run_id} is still {current.state} after {timeout:g}s;"
                                   " wait again, or cancel it")
            time.sleep(min(delay, left))
            delay = min(delay * 2, interval)

    def close(self) -> None:
        """Do nothing: runs started here execute on the server."""


def _name_of(pipeline: str | PipelineDefinition) -> str:
    if isinstance(pipeline, PipelineDefinition):
        return pipeline.name
    if not isinstance(pipeline, str):
        raise InvalidArgumentError("pipeline", f"{pipeline!r} must be a pipeline name or a "
                                               "@pipeline")
    return pipeline


def _check_seconds(name: str, value: object, most: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= most:
        raise InvalidArgumentError(name, f"{value!r} must be more than 0 and at most "
                                         f"{most:g} seconds")


def _ended(current: PipelineRun, given: PipelineRun | None) -> bool:
    if current.state not in FINAL_RUN_STATES:
        return False
    if given is None or given.state not in FINAL_RUN_STATES:
        return True
    return current.started_at != given.started_at  # ended again after a resume
