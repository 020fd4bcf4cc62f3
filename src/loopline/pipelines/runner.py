"""The runner: executes a plan durably on the metadata store, and resumes interrupted runs.

Ready tasks go to the executor as soon as their inputs exist. A failed task fails its
dependants (recorded ``upstream_failed``), never its independent siblings; the run then ends
``failed`` with a summary naming the root cause. ``resume`` runs only what did not finish:
a task recorded ``succeeded`` or ``cached`` is never run again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import ConflictError, InvalidArgumentError, LooplineError
from loopline.core.ids import new_id
from loopline.core.runs import DONE_TASK_STATES, PipelineRun, RunState, TaskRun, TaskState
from loopline.pipelines.attempts import (
    RunnerOptions,
    TaskJob,
    TaskOutcome,
    WorkerContext,
    run_task,
)
from loopline.pipelines.definitions import PipelineDefinition
from loopline.pipelines.executors import ThreadExecutor
from loopline.pipelines.graph import map_structure
from loopline.pipelines.outputs import decode_output
from loopline.pipelines.plan import ExecutionPlan, build_plan
from loopline.store import MetadataStore
from loopline.store.runs import (
    RunQueries,
    TaskFinish,
    claim_run,
    create_run,
    reclaim_task,
    release_run,
    renew_leases,
    renew_run,
    settle_task,
)
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


@dataclass(slots=True)
class _Progress:
    """The scheduler's view of one run while it executes."""

    states: dict[str, TaskState]
    records: dict[str, Mapping[str, Any]]
    attempts: dict[str, int]
    failures: list[TaskOutcome] = field(default_factory=list)


def _lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"


def _owner_is_gone(owner: str | None) -> bool:
    """Tell whether a lease holder was a process on this host that no longer exists."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Runner:
    """Runs pipelines on a metadata store and an artifact store, durably."""

    def __init__(self, store: MetadataStore, blobs: ContentAddressedStore,
                 options: RunnerOptions | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.options = options or RunnerOptions()
        if not 0 < self.options.heartbeat_seconds < self.options.lease_seconds:
            raise InvalidArgumentError("heartbeat_seconds", "must be positive and shorter than "
                                       f"lease_seconds ({self.options.lease_seconds:g})")
        self.runs = RunQueries(store.engine)

    def run(self, pipeline: PipelineDefinition,
            parameters: Mapping[str, Any] | None = None) -> RunResult:
        """Plan ``pipeline`` with ``parameters``, record the run, and execute it.

        A failing task does not raise here: the result says ``failed`` and
        ``raise_for_failure()`` raises the root cause.

        Raises:
            InvalidArgumentError: for bad parameters or graphs, before anything is recorded.
            UserCodeError: when the pipeline function itself raises while planning.
            BackendError: when the metadata store fails (the run can be resumed).
        """
        plan = build_plan(pipeline, parameters)
        with self.store.write(self.options.actor) as uow:
            run = create_run(uow, pipeline.name, plan.parameters, plan.order,
                             self.store.clock.now())
        progress = _Progress({key: TaskState.PENDING for key in plan.order}, {},
                             dict.fromkeys(plan.order, 0))
        owner = self._claim(run.id)
        return self._execute(plan, run.id, progress, owner)

    def _claim(self, run_id: str) -> str:
        owner = _lease_owner()
        until = self.store.clock.now() + timedelta(seconds=self.options.lease_seconds)
        with self.store.write(self.options.actor) as uow:
            claim_run(uow, run_id, owner, until, _owner_is_gone)
        return owner

    def resume(self, run_id: str, pipeline: PipelineDefinition) -> RunResult:
        """Finish run ``run_id`` of ``pipeline``; tasks that finished are not run again.

        Tasks interrupted mid-attempt (their runner died: a lease past its expiry, or held by
        a process of this host that is gone) and failed tasks run again.

        Raises:
            NotFoundError: when there is no such run.
            InvalidArgumentError: when the run belongs to another pipeline.
            ConflictError: when the pipeline's tasks changed, or a live runner holds a task.
        """
        run = self.runs.run(run_id)
        if run.pipeline != pipeline.name:
            raise InvalidArgumentError("pipeline", f"run {run_id} is of pipeline "
                                       f"{run.pipeline!r}, not {pipeline.name!r}")
        plan = build_plan(pipeline, run.parameters)
        tasks = {task.task_key: task for task in self.runs.tasks(run_id)}
        if set(tasks) != set(plan.order):
            raise ConflictError(f"pipeline {pipeline.name!r} now plans other tasks than run "
                                f"{run_id} recorded; start a new run instead")
        owner = self._claim(run_id)  # a second resume of a live run stops here
        progress = _Progress({}, {}, {})
        try:
            for key in plan.order:
                self._reclaim(tasks[key], progress)
        except BaseException:
            self._release(run_id, owner)
            raise
        return self._execute(plan, run_id, progress, owner)

    def _release(self, run_id: str, owner: str) -> None:
        try:
            with self.store.write(self.options.actor) as uow:
                release_run(uow, run_id, owner)
        except LooplineError:
            log.warning("could not release run %s; its lease will expire", run_id)

    def _reclaim(self, task: TaskRun, progress: _Progress) -> None:
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

    def _execute(self, plan: ExecutionPlan, run_id: str, progress: _Progress,
                 owner: str) -> RunResult:
        try:
            with self.store.write(self.options.actor) as uow:
                record_run_state(uow, run_id, RunState.RUNNING, self.store.clock.now())
            self._run_plan(plan, WorkerContext(self.store, self.blobs, self.options, run_id,
                                               owner), progress)
            return self._finish(plan, run_id, progress)
        finally:
            self._release(run_id, owner)  # finished or broken: resumable by anyone now

    def _run_plan(self, plan: ExecutionPlan, ctx: WorkerContext, progress: _Progress) -> None:
        executor = ThreadExecutor(self.options.max_workers)
        heartbeat = _Heartbeat(ctx)
        heartbeat.start()
        try:
            self._schedule(plan, ctx, executor, progress)
        except BaseException as exc:
            # The runner itself broke (database gone, interrupted): never leave the run
            # `running` with no word of why; `resume` can pick it up from here.
            self._abort(ctx.run_id, exc)
            raise
        finally:
            heartbeat.stop()
            executor.shutdown()

    def _abort(self, run_id: str, exc: BaseException) -> None:
        try:
            with self.store.write(self.options.actor) as uow:
                record_run_state(uow, run_id, RunState.FAILED, self.store.clock.now(),
                                 f"interrupted: {type(exc).__name__}: {exc}")
        except LooplineError:
            log.warning("could not record that run %s was interrupted", run_id)

    def _schedule(self, plan: ExecutionPlan, ctx: WorkerContext, executor: ThreadExecutor,
                  progress: _Progress) -> None:
        running: dict[Future[TaskOutcome], str] = {}
        while True:
            for key in plan.order:
                node = plan.nodes[key]
                if progress.states[key] is TaskState.PENDING and all(
                        up in progress.records for up in node.upstream):
                    job = TaskJob(node, {up: progress.records[up] for up in node.upstream},
                                  progress.attempts[key])
                    running[executor.submit(partial(run_task, ctx, job))] = key
                    progress.states[key] = TaskState.RUNNING
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                self._settle(plan, ctx.run_id, _outcome_of(future, key), progress)

    def _settle(self, plan: ExecutionPlan, run_id: str, outcome: TaskOutcome,
                progress: _Progress) -> None:
        progress.states[outcome.key] = outcome.state
        if outcome.record is not None:
            progress.records[outcome.key] = outcome.record
            return
        progress.failures.append(outcome)
        for key in sorted(plan.downstream(outcome.key)):
            if progress.states[key] is TaskState.PENDING:
                finish = TaskFinish(run_id, key, progress.attempts[key],
                                    TaskState.UPSTREAM_FAILED, self.store.clock.now(),
                                    error=f"upstream task {outcome.key!r} failed")
                with self.store.write(self.options.actor) as uow:
                    settle_task(uow, finish)
                progress.states[key] = TaskState.UPSTREAM_FAILED

    def _finish(self, plan: ExecutionPlan, run_id: str, progress: _Progress) -> RunResult:
        try:  # read outputs back before calling the run a success: a lost blob is a failure
            outputs = {key: decode_output(record, self.blobs)
                       for key, record in progress.records.items()}
        except LooplineError as exc:
            self._abort(run_id, exc)
            raise
        summary = _summary(progress) if progress.failures else None
        state = RunState.FAILED if summary else RunState.SUCCEEDED
        with self.store.write(self.options.actor) as uow:
            record_run_state(uow, run_id, state, self.store.clock.now(), summary)
        result = None if summary else map_structure(plan.result, lambda f: outputs[f.key])
        error = progress.failures[0].error if progress.failures else None
        return RunResult(self.runs.run(run_id), outputs, result, error)


class _Heartbeat:
    """Renews this runner's task leases every heartbeat until the run's scheduling ends."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{ctx.run_id}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        ctx = self._ctx
        while not self._stop.wait(ctx.options.heartbeat_seconds):
            until = ctx.store.clock.now() + timedelta(seconds=ctx.options.lease_seconds)
            try:
                with ctx.store.write(ctx.options.actor) as uow:
                    renew_run(uow, ctx.run_id, ctx.lease_owner, until)
                    renew_leases(uow, ctx.run_id, ctx.lease_owner, until)
            except LooplineError as exc:  # a missed beat is survivable; three are not
                log.warning("run %s: lease heartbeat failed: %s", ctx.run_id, exc)


def _outcome_of(future: Future[TaskOutcome], key: str) -> TaskOutcome:
    """Return the task's outcome; a worker broken outside user code fails the task."""
    try:
        return future.result()
    except LooplineError as exc:
        return TaskOutcome(key, TaskState.FAILED, error=exc)
    except Exception as exc:  # noqa: BLE001 - an engine fault in one task must not hang the run
        error = LooplineError(f"task {key!r} broke outside its own code: "
                              f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return TaskOutcome(key, TaskState.FAILED, error=error)


def _summary(progress: _Progress) -> str:
    first = progress.failures[0]
    text = first.error.message if first.error is not None else f"task {first.key!r} failed"
    others = [outcome.key for outcome in progress.failures[1:]]
    if others:
        text += f"; also failed: {', '.join(others)}"
    skipped = sorted(k for k, s in progress.states.items() if s is TaskState.UPSTREAM_FAILED)
    if skipped:
        text += f"; not run because an upstream task failed: {', '.join(skipped)}"
    return text
