"""The runner: records runs, executes their plans durably, resumes and cancels them.

Ready tasks go to the executor as soon as their inputs exist (see ``execution.py``). A failed
task fails its dependants (recorded ``upstream_failed``), never its independent siblings;
the run then ends ``failed`` with a summary naming the root cause. ``resume`` runs only what
did not finish: a task recorded ``succeeded`` or ``cached`` is never run again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.artifacts.store_address import StoreAddress
from loopline.core.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    LeaseLostError,
    LooplineError,
)
from loopline.core.governance import Permission
from loopline.core.ids import new_id
from loopline.core.ports import authorize_if_wired
from loopline.core.runs import (
    DONE_TASK_STATES,
    FINAL_TASK_STATES,
    PipelineRun,
    RunState,
    RunTrigger,
    TaskRun,
    TaskState,
)
from loopline.pipelines.attempts import WorkerContext
from loopline.pipelines.definitions import PipelineDefinition
from loopline.pipelines.execution import PlanExecution, Progress
from loopline.pipelines.executors import ThreadInvoker, check_workers
from loopline.pipelines.graph import map_structure
from loopline.pipelines.heartbeat import Heartbeat
from loopline.pipelines.options import EXECUTORS, RunnerOptions
from loopline.pipelines.outputs import LazyOutputs
from loopline.pipelines.plan import ExecutionPlan, build_plan
from loopline.pipelines.remote import Invoker
from loopline.pipelines.run_lineage import record_run_lineage
from loopline.pipelines.run_records import Provenance, capture_provenance, run_lineage
from loopline.store import MetadataStore
from loopline.store.run_control import (
    RunControl,
    record_provenance,
    record_resume,
    request_cancel,
)
from loopline.store.runs import RunQueries, claim_run, create_run, reclaim_task, release_run
from loopline.store.runs import set_run_state as record_run_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: its record, each task's output value, and the pipeline's result."""

    run: PipelineRun
    outputs: Mapping[str, Any]
    result: Any = None
    error: LooplineError | None = None

    @property
    def succeeded(self) -> bool:
        """Tell whether the run ended ``succeeded``."""
        return self.run.state is RunState.SUCCEEDED

    def raise_for_failure(self) -> None:
        """Raise the root cause of a failed run (a ``UserCodeError`` keeps the original).

        Raises:
            LooplineError: the first task error, when the run failed.
        """
        if self.error is not None:
            raise self.error


def _pid_namespace() -> str:
    """Return this process's PID namespace id, or "-" where there is none to read."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def _lease_owner() -> str:
    # host:pid:pid-namespace:random. The namespace matters: two containers can share a host
    # name (host networking) while a pid in one means nothing in the other.
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}:{new_id()[-8:]}"


def _owner_is_gone(owner: str | None) -> bool:
    """Tell whether a lease holder was a process of this host and PID namespace that is gone.

    Anything it cannot be sure of (another host, another namespace) counts as alive: that
    lease is then left to expire.
    """
    parts = (owner or "").split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    if len(parts) >= 4 and parts[2] != _pid_namespace():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _check_options(options: RunnerOptions) -> None:
    check_workers(options.max_workers)
    if options.executor not in EXECUTORS:
        raise InvalidArgumentError("executor", f"must be one of {', '.join(EXECUTORS)}, not "
                                               f"{options.executor!r}")
    if not 0 < options.heartbeat_seconds < options.lease_seconds:
        raise InvalidArgumentError("heartbeat_seconds", "must be positive and shorter than "
                                   f"lease_seconds ({options.lease_seconds:g})")


class Runner:
    """Runs pipelines on a metadata store and an artifact store, durably."""

    def __init__(self, store: MetadataStore, blobs: ContentAddressedStore,
                 options: RunnerOptions | None = None) -> None:
        """Check ``options``; workers start with the first run that needs them.

        Raises:
            InvalidArgumentError: naming the option that is out of range.
        """
        self.store = store
        self.blobs = blobs
        self.options = options or RunnerOptions()
        _check_options(self.options)
        self.runs = RunQueries(store.engine)
        self._invoker: Invoker | None = None
        self._lock = threading.Lock()

    # -- the public surface -----------------------------------------------------------------

    def create(self, pipeline: PipelineDefinition, parameters: Mapping[str, Any] | None = None,
               trigger: RunTrigger | None = None) -> PipelineRun:
        """Plan ``pipeline`` with ``parameters`` and record a pending run; run nothing yet.

        Raises:
            InvalidArgumentError: for bad parameters or graphs, before anything is recorded.
            UserCodeError: when the pipeline function itself raises while planning.
            AlreadyExistsError: when ``trigger.key`` already started a run.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        self._allowed()
        plan = build_plan(pipeline, parameters)
        with self.store.write(self.options.actor) as uow:
            return create_run(uow, pipeline.name, plan.parameters, plan.order,
                              self.store.clock.now(), trigger)

    def run(self, pipeline: PipelineDefinition,
            parameters: Mapping[str, Any] | None = None) -> RunResult:
        """Plan ``pipeline`` with ``parameters``, record the run, and execute it.

        A failing task does not raise here: the result says ``failed`` and
        ``raise_for_failure()`` raises the root cause.

        Raises:
            InvalidArgumentError: for bad parameters or graphs, before anything is recorded.
            UserCodeError: when the pipeline function itself raises while planning.
            BackendError: when the metadata store fails (the run can be resumed).
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        self._allowed()
        plan = build_plan(pipeline, parameters)
        with self.store.write(self.options.actor) as uow:
            run = create_run(uow, pipeline.name, plan.parameters, plan.order,
                             self.store.clock.now())
        progress = Progress({key: TaskState.PENDING for key in plan.order}, {},
                            dict.fromkeys(plan.order, 0))
        owner = self._claim(run.id)
        return self._execute(plan, run.id, progress, owner)

    def resume(self, run_id: str, pipeline: PipelineDefinition, *,
               requested: bool = False) -> RunResult:
        """Execute run ``run_id`` of ``pipeline`` to its end; finished tasks do not run again.

        Runs a pending run (created by ``create``) or finishes an interrupted one: tasks
        interrupted mid-attempt (their runner died: a lease past its expiry, or held by a
        process of this host that is gone) and failed tasks run again. ``requested`` says a
        person asked for this resume: it is audited once the run is found resumable.

        Raises:
            NotFoundError: when there is no such run.
            InvalidTransitionError: when the run succeeded or was cancelled.
            InvalidArgumentError: when the run belongs to another pipeline.
            ConflictError: when the pipeline's tasks changed, or a live runner holds a task.
            LeaseLostError: when another runner took the run over while this one ran it.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        self._allowed()
        run = self.runs.run(run_id)
        if run.pipeline != pipeline.name:
            raise InvalidArgumentError("pipeline", f"run {run_id} is of pipeline "
                                       f"{run.pipeline!r}, not {pipeline.name!r}")
        if run.state in (RunState.SUCCEEDED, RunState.CANCELLED):
            raise InvalidTransitionError("pipeline run", run_id, str(run.state),
                                         str(RunState.RUNNING))
        plan = build_plan(pipeline, run.parameters)
        tasks = {task.task_key: task for task in self.runs.tasks(run_id)}
        if set(tasks) != set(plan.order):
            raise ConflictError(f"pipeline {pipeline.name!r} now plans other tasks than run "
                                f"{run_id} recorded; start a new run instead")
        if requested:
            self.record_resume(run_id)
        owner = self._claim(run_id)  # a second resume of a live run stops here
        progress = Progress({}, {}, {})
        try:
            for key in plan.order:
                self._reclaim(tasks[key], progress)
        except BaseException:
            self._release(run_id, owner)
            raise
        return self._execute(plan, run_id, progress, owner)

    def record_resume(self, run_id: str) -> None:
        """Audit that this runner's actor asked to resume run ``run_id``.

        What a person asks for (``loopline runs resume``, the API) is recorded before it
        executes; ``resume`` records it only when told ``requested``, since it is also how
        pending runs run.

        Raises:
            NotFoundError: when there is no such run.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        self._allowed()
        with self.store.write(self.options.actor) as uow:
            record_resume(uow, run_id)

    def cancel(self, run_id: str) -> bool:
        """Ask run ``run_id`` to stop; its runner notices within one heartbeat.

        No task starts after that; running attempts finish (or time out) and the run ends
        ``cancelled``. Returns False when a cancel was already requested.

        Raises:
            NotFoundError: when there is no such run.
            InvalidTransitionError: when the run already succeeded or was cancelled.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        self._allowed()
        with self.store.write(self.options.actor) as uow:
            return request_cancel(uow, run_id, self.store.clock.now())

    def _allowed(self) -> None:
        authorize_if_wired(self.options.authorizer, self.options.actor, Permission.WRITE)

    def close(self) -> None:
        """Stop the worker processes (or the Ray runtime) this runner started."""
        with self._lock:
            invoker, self._invoker = self._invoker, None
        if invoker is not None:
            invoker.close()

    # -- leases ---------------------------------------------------------------------------

    def _claim(self, run_id: str) -> str:
        owner = _lease_owner()
        until = self.store.clock.now() + timedelta(seconds=self.options.lease_seconds)
        with self.store.write(self.options.actor) as uow:
            claim_run(uow, run_id, owner, until, _owner_is_gone)
        return owner

    def _release(self, run_id: str, owner: str) -> None:
        try:
            with self.store.write(self.options.actor) as uow:
                release_run(uow, run_id, owner)
        except LooplineError:
            log.warning("could not release run %s; its lease will expire", run_id)

    def _reclaim(self, task: TaskRun, progress: Progress) -> None:
        progress.attempts[task.task_key] = task.attempt
        if task.state in DONE_TASK_STATES and task.outputs is not None:
            progress.states[task.task_key] = task.state
            progress.records[task.task_key] = task.outputs
            return
        progress.states[task.task_key] = TaskState.PENDING
        if task.state is TaskState.PENDING:
            return
        now = self.store.clock.now()
        expired = task.lease_expires_at is not None and task.lease_expires_at <= now
        held = task.state in (TaskState.RUNNING, TaskState.RETRYING)
        if held and not (expired or _owner_is_gone(task.lease_owner)):
            raise ConflictError(f"task {task.task_key!r} of run {task.run_id} is held by "
                                f"{task.lease_owner} until {task.lease_expires_at}; wait for "
                                "that runner to finish or for the lease to expire")
        with self.store.write(self.options.actor) as uow:
            reclaim_task(uow, task, now)

    # -- executing ------------------------------------------------------------------------

    def _invoker_for_run(self) -> Invoker:
        with self._lock:
            if self._invoker is None:
                self._invoker = self._make_invoker()
            return self._invoker

    def _make_invoker(self) -> Invoker:
        if self.options.executor == "process":
            from loopline.pipelines.process_pool import ProcessInvoker
            return ProcessInvoker(self.options.max_workers)
        if self.options.executor == "ray":
            from loopline.pipelines.ray_invoker import RayInvoker
            return RayInvoker(self.options.ray_address)
        return ThreadInvoker(self.blobs)

    def _execute(self, plan: ExecutionPlan, run_id: str, progress: Progress,
                 owner: str) -> RunResult:
        try:
            provenance = capture_provenance(self.blobs) if self.options.record_provenance \
                else None
            with self.store.write(self.options.actor) as uow:
                record_run_state(uow, run_id, RunState.RUNNING, self.store.clock.now(),
                                 owner=owner)
                if provenance is not None:
                    record_provenance(uow, run_id, provenance.code.as_dict(),
                                      provenance.environment)
            ctx = WorkerContext(self.store, self.blobs, StoreAddress.of(self.blobs), self.options,
                                run_id, owner, self._invoker_for_run(),
                                RunControl(self.store.engine).task_ids(run_id))
            self._run_plan(plan, ctx, progress)
            return self._finish(plan, (run_id, owner), progress, provenance)
        finally:
            self._release(run_id, owner)  # finished or broken: resumable by anyone now

    def _run_plan(self, plan: ExecutionPlan, ctx: WorkerContext, progress: Progress) -> None:
        heartbeat = Heartbeat(ctx)
        heartbeat.start()
        try:
            PlanExecution(plan, ctx, progress, heartbeat.signals).run()
        except LeaseLostError:
            raise  # the run is another runner's now: record nothing
        except BaseException as exc:
            # The runner itself broke (database gone, interrupted): never leave the run
            # `running` with no word of why; `resume` can pick it up from here. Worker
            # processes still running its attempts are stopped, not waited for.
            self.close()
            self._abort(ctx.run_id, ctx.lease_owner, exc)
            raise
        finally:
            heartbeat.stop()

    def _abort(self, run_id: str, owner: str, exc: BaseException) -> None:
        try:
            with self.store.write(self.options.actor) as uow:
                record_run_state(uow, run_id, RunState.FAILED, self.store.clock.now(),
                                 f"interrupted: {type(exc).__name__}: {exc}", owner)
        except LooplineError:
            log.warning("could not record that run %s was interrupted", run_id)

    def _finish(self, plan: ExecutionPlan, lease: tuple[str, str], progress: Progress,
                provenance: Provenance | None) -> RunResult:
        run_id, owner = lease
        try:  # a lost blob is a failure: check every output is stored before calling success
            outputs = LazyOutputs(progress.records, self.blobs)
        except LooplineError as exc:
            self._abort(run_id, owner, exc)
            raise
        state, summary = _verdict(progress)
        with self.store.write(self.options.actor) as uow:
            record_run_state(uow, run_id, state, self.store.clock.now(), summary, owner)
            if provenance is not None:
                record_run_lineage(uow, run_lineage(plan, run_id, progress.states,
                                                    progress.records, provenance))
        done = state is RunState.SUCCEEDED
        result = map_structure(plan.result, lambda f: outputs[f.key]) if done else None
        error = progress.failures[0].error if progress.failures else None
        return RunResult(self.runs.run(run_id), outputs, result, error)


def _verdict(progress: Progress) -> tuple[RunState, str | None]:
    """Return the run's final state and its summary (None for a success)."""
    if progress.cancelled:
        return RunState.CANCELLED, (_summary(progress) if progress.failures else
                                    "cancelled on request")
    if progress.failures:
        return RunState.FAILED, _summary(progress)
    unfinished = sorted(key for key, state in progress.states.items()
                        if state not in FINAL_TASK_STATES)
    if unfinished:  # never call a run a success that did not run every task
        return RunState.FAILED, f"tasks did not finish: {', '.join(unfinished)}"
    return RunState.SUCCEEDED, None


def _summary(progress: Progress) -> str:
    first = progress.failures[0]
    text = first.error.message if first.error is not None else f"task {first.key!r} failed"
    others = [outcome.key for outcome in progress.failures[1:]]
    if others:
        text += f"; also failed: {', '.join(others)}"
    skipped = sorted(k for k, s in progress.states.items() if s is TaskState.UPSTREAM_FAILED)
    if skipped:
        text += f"; not run because an upstream task failed: {', '.join(skipped)}"
    return text
