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
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from loopline.core.errors import BackendError, LeaseLostError, LooplineError
from loopline.core.runs import TaskState
from loopline.pipelines.attempts import TaskJob, TaskOutcome, WorkerContext, run_attempts
from loopline.pipelines.executors import ThreadExecutor
from loopline.pipelines.options import TaskUpdate
from loopline.pipelines.outputs import cache_key, outputs_available
from loopline.pipelines.plan import ExecutionPlan
from loopline.store.run_control import RunControl
from loopline.store.runs import TaskFinish, TaskStart
from loopline.store.task_transitions import TransitionWriter

log = logging.getLogger(__name__)
COMMIT_RETRY_PAUSES = (0.2, 1.0)


@dataclass(frozen=True, slots=True)
class RunSignals:
    """What the heartbeat tells the loop: a cancel was requested, or the lease was lost."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)


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
                 signals: RunSignals) -> None:
        self.plan, self.ctx, self.progress = plan, ctx, progress
        self._signals = signals
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
        """Start and settle tasks until every task is final (or the run was cancelled).

        Raises:
            LeaseLostError: when another runner took the run over (nothing more is written).
            ConflictError: when a transition was refused; the run can be resumed.
            BackendError: when the store stayed down through a few retries.
        """
        if self._control.cancel_requested(self.ctx.run_id):  # asked before it even started
            self._signals.cancelled.set()
        executor = ThreadExecutor(self.ctx.options.max_workers)
        try:
            self._loop(executor)
        except BaseException:
            # Interrupted or broken: start nothing more, let no retry begin, and do not wait
            # for attempts whose outcome can no longer be recorded.
            self.ctx.stop.set()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown()

    def _loop(self, executor: ThreadExecutor) -> None:
        running: dict[Future[TaskOutcome], TaskJob] = {}
        finished: list[TaskOutcome] = []
        while True:
            if self._signals.lost.is_set():
                raise LeaseLostError(f"run {self.ctx.run_id} was taken over by another runner "
                                     "(this runner's lease lapsed); this one stops")
            batch = _Batch()
            for outcome in finished:
                self._settle(outcome, batch)
            if self._signals.cancelled.is_set() and not self.progress.cancelled:
                self.ctx.stop.set()
                self._cancel(batch)
            if not self.progress.cancelled:
                self._start_ready(batch)
            self._commit(batch)
            if len(batch.jobs) == 1 and not running:
                # Nothing else runs and nothing else can become ready before this task ends:
                # run it here and save the hand-off to a worker thread.
                job = batch.jobs[0]
                finished = [_outcome_of(partial(run_attempts, self.ctx, job), job)]
                continue
            for job in batch.jobs:
                running[executor.submit(partial(run_attempts, self.ctx, job))] = job
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            finished = [_outcome_of(future.result, running.pop(future)) for future in done]

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
        wanted = {key: ck for key, ck in keys.items() if self.ctx.options.cache
                  and self.plan.nodes[key].task.options.cache}
        found = self._control.cached_outputs(list(wanted.values()))
        return {key: found[ck] for key, ck in wanted.items()
                if ck in found and outputs_available(found[ck], self.ctx.blobs)}

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
        if outcome.state is TaskState.CANCELLED:
            self._skip_downstream(outcome.key, TaskState.CANCELLED, "the run was cancelled",
                                  batch)
            return
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
            lease = (self.ctx.run_id, self.ctx.lease_owner)
            for pause in (*COMMIT_RETRY_PAUSES, None):
                try:
                    self._writer.write(lease, batch.starts, batch.finishes, batch.settles)
                    break
                except BackendError:  # a blip: the batch is atomic, so writing it again is safe
                    if pause is None:
                        raise
                    log.warning("run %s: the store failed; writing the batch again in %.1f s",
                                self.ctx.run_id, pause)
                    time.sleep(pause)
        observer = self.ctx.options.observer
        if observer is None:
            return
        for update in batch.updates:
            try:
                observer(update)
            except Exception:  # a broken view must not break the run
                log.exception("run %s: the observer failed", self.ctx.run_id)


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
