"""Executing one plan: the loop that starts ready tasks and records what they did.

The loop is the only writer of a task's first start and its final outcome, and it writes
everything that happened since its last commit as one transaction: the outcomes of finished
tasks, the tasks they unblocked (started, or settled from the cache) and the tasks a failure
leaves unrunnable. So a chain of tasks costs one commit per task, and a fan-out far less;
no task starts before the outcome it depends on is durable, and no outcome is reported
before it is committed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from loopline.core.errors import ConflictError, LooplineError
from loopline.core.runs import TaskState
from loopline.pipelines.attempts import TaskJob, TaskOutcome, WorkerContext, run_attempts
from loopline.pipelines.executors import ThreadExecutor
from loopline.pipelines.options import TaskUpdate
from loopline.pipelines.outputs import cache_key, outputs_available
from loopline.pipelines.plan import ExecutionPlan
from loopline.store.run_control import RunControl
from loopline.store.runs import TaskFinish, TaskStart, finish_attempt, settle_task, start_attempt
from loopline.store.task_transitions import TransitionWriter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Progress:
    """The loop's view of one run: task states, output records, attempt numbers, failures."""

    states: dict[str, TaskState]
    records: dict[str, Any]
    attempts: dict[str, int]
    failures: list[TaskOutcome] = field(default_factory=list)
    cancelled: bool = False


@dataclass(slots=True)
class _Batch:
    """Transitions waiting for the next commit, and what to do once they are durable."""

    starts: list[TaskStart] = field(default_factory=list)
    finishes: list[TaskFinish] = field(default_factory=list)
    settles: list[TaskFinish] = field(default_factory=list)
    jobs: list[TaskJob] = field(default_factory=list)
    updates: list[TaskUpdate] = field(default_factory=list)


class PlanExecution:
    """Runs one plan on a worker pool, durably; ``run()`` returns when no task can move."""

    def __init__(self, plan: ExecutionPlan, ctx: WorkerContext, progress: Progress,
                 cancel_requested: Callable[[], bool]) -> None:
        self.plan, self.ctx, self.progress = plan, ctx, progress
        self._cancel_requested = cancel_requested
        self._children: dict[str, list[str]] = {key: [] for key in plan.order}
        for node in plan.nodes.values():
            for up in node.upstream:
                self._children[up].append(node.key)
        self._waiting = {key: sum(up not in progress.records for up in plan.nodes[key].upstream)
                         for key in plan.order}
        self._ready = deque(key for key in plan.order if self._waiting[key] == 0
                            and progress.states[key] is TaskState.PENDING)
        self._code_hashes: dict[str, str] = {}
        self._control = RunControl(ctx.store.engine)
        self._writer = TransitionWriter(ctx.store.engine)

    def run(self) -> None:
        """Start and settle tasks until every task is final (or the run was cancelled)."""
        executor = ThreadExecutor(self.ctx.options.max_workers)
        running: dict[Future[TaskOutcome], TaskJob] = {}
        finished: list[TaskOutcome] = []
        try:
            while True:
                batch = _Batch()
                for outcome in finished:
                    self._settle(outcome, batch)
                if self._cancel_requested() and not self.progress.cancelled:
                    self._cancel(batch)
                if not self.progress.cancelled:
                    self._start_ready(batch)
                self._commit(batch)
                if len(batch.jobs) == 1 and not running:
                    # Nothing else runs and nothing else can become ready before this task
                    # ends: run it here and save the hand-off to a worker thread.
                    finished = [_outcome_of(partial(run_attempts, self.ctx, batch.jobs[0]),
                                            batch.jobs[0])]
                    continue
                for job in batch.jobs:
                    running[executor.submit(partial(run_attempts, self.ctx, job))] = job
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                finished = [_outcome_of(future.result, running.pop(future)) for future in done]
        finally:
            executor.shutdown()

    # -- deciding ---------------------------------------------------------------------------

    def _start_ready(self, batch: _Batch) -> None:
        progress, now = self.progress, self.ctx.store.clock.now()
        while self._ready:
            ready = list(self._ready)
            self._ready.clear()
            keys = {key: cache_key(self.plan.nodes[key], self._inputs(key), self._code_hashes)
                    for key in ready}
            hits = self._cache_hits(keys)
            for key in ready:
                if key in hits:  # settled now; its dependants may be ready in this same pass
                    self._settle_cached(key, keys[key], hits[key], batch)
                    continue
                attempt = progress.attempts[key] + 1
                progress.attempts[key] = attempt
                progress.states[key] = TaskState.RUNNING
                start = TaskStart(self.ctx.run_id, key, attempt, self.ctx.lease_owner,
                                  now + timedelta(seconds=self.ctx.options.lease_seconds), now,
                                  self.ctx.task_ids.get(key))
                batch.starts.append(start)
                batch.jobs.append(TaskJob(self.plan.nodes[key], self._inputs(key), attempt,
                                          keys[key]))
                batch.updates.append(TaskUpdate(self.ctx.run_id, key, TaskState.RUNNING,
                                                attempt, now))

    def _inputs(self, key: str) -> dict[str, Any]:
        return {up: self.progress.records[up] for up in self.plan.nodes[key].upstream}

    def _cache_hits(self, keys: dict[str, str]) -> dict[str, Any]:
        wanted = [keys[key] for key in keys if self.ctx.options.cache
                  and self.plan.nodes[key].task.options.cache]
        found = self._control.cached_outputs(wanted)
        return {key: found[ck] for key, ck in keys.items()
                if ck in found and key in keys and ck in wanted
                and outputs_available(found[ck], self.ctx.blobs)}

    def _settle_cached(self, key: str, ck: str, record: Any, batch: _Batch) -> None:
        now = self.ctx.store.clock.now()
        finish = TaskFinish(self.ctx.run_id, key, self.progress.attempts[key], TaskState.CACHED,
                            now, dict(record), ck, task_id=self.ctx.task_ids.get(key))
        batch.settles.append(finish)
        batch.updates.append(TaskUpdate(self.ctx.run_id, key, TaskState.CACHED,
                                        finish.attempt, now))
        self._done(key, TaskState.CACHED, record)

    def _done(self, key: str, state: TaskState, record: Any) -> None:
        self.progress.states[key] = state
        self.progress.records[key] = record
        for child in self._children[key]:
            self._waiting[child] -= 1
            if self._waiting[child] == 0 and self.progress.states[child] is TaskState.PENDING:
                self._ready.append(child)

    def _settle(self, outcome: TaskOutcome, batch: _Batch) -> None:
        now = self.ctx.store.clock.now()
        finish = TaskFinish(self.ctx.run_id, outcome.key, outcome.attempt, outcome.state, now,
                            dict(outcome.record) if outcome.record is not None else None,
                            outcome.cache_key, outcome.error_text,
                            task_id=self.ctx.task_ids.get(outcome.key), logs=outcome.logs,
                            traceback=outcome.traceback)
        batch.finishes.append(finish)
        batch.updates.append(TaskUpdate(self.ctx.run_id, outcome.key, outcome.state,
                                        outcome.attempt, now, outcome.error_text))
        if outcome.record is not None:
            self._done(outcome.key, outcome.state, outcome.record)
            return
        self.progress.states[outcome.key] = outcome.state
        self.progress.failures.append(outcome)
        self._skip_downstream(outcome.key, TaskState.UPSTREAM_FAILED,
                              f"upstream task {outcome.key!r} failed", batch)

    def _skip_downstream(self, key: str, state: TaskState, reason: str, batch: _Batch) -> None:
        frontier = list(self._children[key])
        while frontier:
            child = frontier.pop()
            if self.progress.states[child] is not TaskState.PENDING:
                continue
            self._mark(child, state, reason, batch)
            frontier.extend(self._children[child])

    def _mark(self, key: str, state: TaskState, reason: str, batch: _Batch) -> None:
        now = self.ctx.store.clock.now()
        finish = TaskFinish(self.ctx.run_id, key, self.progress.attempts[key], state, now,
                            error=reason, task_id=self.ctx.task_ids.get(key))
        batch.settles.append(finish)
        batch.updates.append(TaskUpdate(self.ctx.run_id, key, state, finish.attempt, now,
                                        reason))
        self.progress.states[key] = state

    def _cancel(self, batch: _Batch) -> None:
        self.progress.cancelled = True
        self._ready.clear()
        for key in self.plan.order:
            if self.progress.states[key] is TaskState.PENDING:
                self._mark(key, TaskState.CANCELLED, "the run was cancelled", batch)

    # -- recording --------------------------------------------------------------------------

    def _commit(self, batch: _Batch) -> None:
        if batch.starts or batch.finishes or batch.settles:
            try:
                self._writer.write(batch.starts, batch.finishes, batch.settles)
            except ConflictError:
                self._commit_one_by_one(batch)
        observer = self.ctx.options.observer
        if observer is None:
            return
        for update in batch.updates:
            try:
                observer(update)
            except Exception:  # a broken view must not break the run
                log.exception("run %s: the observer failed", self.ctx.run_id)

    def _commit_one_by_one(self, batch: _Batch) -> None:
        """Write each transition alone: another runner took a task (fencing refused ours)."""
        writes: list[tuple[str, Callable[[Any], None]]] = [
            *((f.task_key, partial(finish_attempt, finish=f)) for f in batch.finishes),
            *((f.task_key, partial(settle_task, finish=f)) for f in batch.settles),
            *((s.task_key, partial(start_attempt, start=s)) for s in batch.starts)]
        lost: set[str] = set()
        for key, write in writes:
            try:
                with self.ctx.store.write(self.ctx.options.actor) as uow:
                    write(uow)
            except ConflictError as exc:
                log.warning("run %s: %s", self.ctx.run_id, exc)
                lost.add(key)
        batch.jobs = [job for job in batch.jobs if job.node.key not in lost]


def _outcome_of(outcome: Callable[[], TaskOutcome], job: TaskJob) -> TaskOutcome:
    """Return the task's outcome; a worker broken outside user code fails the task."""
    key = job.node.key
    try:
        return outcome()
    except LooplineError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - an engine fault in one task must not hang the run
        error = LooplineError(f"task {key!r} broke outside its own code: "
                              f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
    return TaskOutcome(key, TaskState.FAILED, error=error, attempt=job.attempt,
                       cache_key=job.cache_key, error_text=error.message)
