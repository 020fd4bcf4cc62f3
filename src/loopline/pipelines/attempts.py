"""One task of a run, on a worker: its attempts with retries, through the run's invoker.

The runner records each task's first start and its final outcome (batched with other
transitions into one commit); this module records only what happens in between, a retry:
the failed attempt and the next one's start, each its own committed transaction. A user
exception becomes a ``UserCodeError`` keeping the original as ``__cause__``; only the task's
``retry_on`` exceptions are retried (matched by class name when raised in another process),
after a backoff delay slept through the runner's injectable sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.artifacts.store_address import StoreAddress
from loopline.core.errors import LooplineError, UserCodeError
from loopline.core.runs import TaskState
from loopline.pipelines.executors import TimedOutAttempt
from loopline.pipelines.graph import Node, map_structure
from loopline.pipelines.options import RunnerOptions
from loopline.pipelines.remote import (
    CallResult,
    InputRef,
    Invoker,
    TaskCall,
    describe_error,
    error_matches,
    traceback_of,
)
from loopline.store import MetadataStore
from loopline.store.runs import TaskFinish, TaskStart, finish_attempt, start_attempt


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every task of one run shares on the workers."""

    store: MetadataStore
    blobs: ContentAddressedStore
    blob_spec: StoreAddress
    options: RunnerOptions
    run_id: str
    lease_owner: str
    invoker: Invoker
    task_ids: Mapping[str, str] = field(default_factory=dict)
    # Set when the run is cancelled, lost to another runner or aborted: no new attempts.
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class TaskJob:
    """One task to run: the node, its inputs' output records, its started attempt, its key."""

    node: Node
    inputs: Mapping[str, Mapping[str, Any]]
    attempt: int
    cache_key: str


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a task ended on its worker (not yet recorded: the runner records it)."""

    key: str
    state: TaskState
    record: Mapping[str, Any] | None = None
    error: LooplineError | None = None
    attempt: int = 0
    tries: int = 0
    cache_key: str | None = None
    error_text: str | None = None
    logs: Mapping[str, Any] | None = None
    traceback: str | None = None


def task_call(ctx: WorkerContext, job: TaskJob, attempt: int) -> TaskCall:
    """Return the self-contained call of ``job``'s ``attempt``."""
    node = job.node

    def ref(future: Any) -> InputRef:
        return InputRef(job.inputs[future.key])

    return TaskCall(ctx.run_id, node.key, node.task.name, attempt,
                    tuple(map_structure(list(node.args), ref)),
                    map_structure(dict(node.kwargs), ref), ctx.blob_spec,
                    ctx.options.inline_limit, fn=node.task.fn)


def _retries(job: TaskJob, error: BaseException, tries: int) -> bool:
    if isinstance(error, TimedOutAttempt) and not error.stopped:
        return False  # its thread still runs: another attempt would run beside it
    policy = job.node.task.options.retry
    return tries <= policy.retries and error_matches(error, policy.retry_on)


def _invoke(ctx: WorkerContext, job: TaskJob, attempt: int) -> CallResult:
    if ctx.options.faults is not None:
        try:
            ctx.options.faults.check(job.node.task.name, job.node.key)
        except ConnectionError as exc:
            return CallResult(None, exc)
    return ctx.invoker.invoke(task_call(ctx, job, attempt), job.node.task.options.timeout)


def _retry(ctx: WorkerContext, job: TaskJob, attempt: int, tries: int,
           error: BaseException, logs: Mapping[str, Any]) -> bool:
    """Record the failed attempt and the next one's start, sleeping the backoff between.

    Returns False, starting nothing, when the run was told to stop during the backoff.
    """
    node, now = job.node, ctx.store.clock.now()
    delay = node.task.options.retry.delay(tries, ctx.options.random())
    held = now + timedelta(seconds=delay + ctx.options.lease_seconds)
    task_id = ctx.task_ids.get(node.key)
    with ctx.store.write(ctx.options.actor) as uow:
        finish_attempt(uow, TaskFinish(
            ctx.run_id, node.key, attempt, TaskState.RETRYING, now, cache_key=job.cache_key,
            error=describe_error(error), retry_delay=delay, lease_expires_at=held,
            task_id=task_id, logs=logs or None, traceback=traceback_of(error)))
    ctx.options.sleep(delay)
    if ctx.stop.is_set():
        return False
    now = ctx.store.clock.now()
    with ctx.store.write(ctx.options.actor) as uow:
        start_attempt(uow, TaskStart(ctx.run_id, node.key, attempt + 1, ctx.lease_owner,
                                     now + timedelta(seconds=ctx.options.lease_seconds), now,
                                     task_id))
    return True


def _failure(job: TaskJob, attempt: int, tries: int, exc: BaseException,
             logs: Mapping[str, Any]) -> TaskOutcome:
    text = describe_error(exc)
    if isinstance(exc, LooplineError):
        error: LooplineError = exc  # the engine's own refusal, e.g. an output that is not JSON
    else:
        error = UserCodeError(f"task {job.node.key!r} failed after {tries} attempt"
                              f"{'s' if tries > 1 else ''}: {text}")
        error.__cause__ = exc
    return TaskOutcome(job.node.key, TaskState.FAILED, None, error, attempt, tries,
                       job.cache_key, text, logs or None, traceback_of(exc))


def _stopped(job: TaskJob, attempt: int, tries: int, exc: BaseException,
             logs: Mapping[str, Any]) -> TaskOutcome:
    """End a task whose attempt failed after its run was told to stop: no retry follows."""
    return TaskOutcome(job.node.key, TaskState.CANCELLED, None, None, attempt, tries,
                       job.cache_key, f"{describe_error(exc)} (not retried: the run is stopping)",
                       logs or None, traceback_of(exc))


def run_attempts(ctx: WorkerContext, job: TaskJob) -> TaskOutcome:
    """Run ``job`` (its first attempt already recorded as started) until it ends."""
    attempt, tries = job.attempt, 0
    while True:
        tries += 1
        result = _invoke(ctx, job, attempt)
        error = result.error
        if error is None and result.record is not None:
            return TaskOutcome(job.node.key, TaskState.SUCCEEDED, result.record, None, attempt,
                               tries, job.cache_key, logs=result.logs or None)
        if error is None:  # pragma: no cover - execute_call returns one or the other
            error = LooplineError("the task returned no output record")
        if not _retries(job, error, tries):
            return _failure(job, attempt, tries, error, result.logs)
        if ctx.stop.is_set():
            return _stopped(job, attempt, tries, error, result.logs)
        try:
            if not _retry(ctx, job, attempt, tries, error, result.logs):
                return _stopped(job, attempt, tries, error, result.logs)
        except LooplineError as exc:  # the store failed between attempts: say which attempt
            return TaskOutcome(job.node.key, TaskState.FAILED, None, exc, attempt, tries,
                               job.cache_key, exc.message)
        attempt += 1
