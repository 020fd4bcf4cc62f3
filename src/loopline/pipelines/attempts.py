"""One task of a run, on a worker: cache lookup, attempts with retries, outputs recorded.

Each attempt's start and end is its own committed transaction. A user exception becomes a
``UserCodeError`` keeping the original as ``__cause__``; only the task's ``retry_on``
exceptions are retried, after a backoff delay slept through the runner's injectable sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError, LooplineError, UserCodeError
from loopline.core.runs import TaskState
from loopline.pipelines.executors import AttemptTimeoutError, call_with_timeout
from loopline.pipelines.faults import FaultInjector
from loopline.pipelines.graph import Node
from loopline.pipelines.outputs import (
    INLINE_LIMIT,
    cache_key,
    decode_output,
    encode_output,
    outputs_available,
    resolve_arguments,
)
from loopline.store import MetadataStore
from loopline.store.runs import (
    RunQueries,
    TaskFinish,
    TaskStart,
    finish_attempt,
    settle_task,
    start_attempt,
)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How a runner runs: workers, who it writes as, leases, and the seams tests replace."""

    max_workers: int = 4
    actor: str = "loopline"
    # A running task's lease is renewed every heartbeat and lasts three of them, so a dead
    # runner's task can be reclaimed within three heartbeats (RELIABILITY.md).
    heartbeat_seconds: float = 10.0
    lease_seconds: float = 30.0
    faults: FaultInjector | None = None  # fail named tasks on purpose (tests, evaluation)
    inline_limit: int = INLINE_LIMIT
    sleep: Callable[[float], None] = field(default=time.sleep)
    random: Callable[[], float] = field(default=random.random)


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every task of one run shares on the workers."""

    store: MetadataStore
    blobs: ContentAddressedStore
    options: RunnerOptions
    run_id: str
    lease_owner: str


@dataclass(frozen=True, slots=True)
class TaskJob:
    """One task to run: the node, its inputs' output records and its last attempt number."""

    node: Node
    inputs: Mapping[str, Mapping[str, Any]]
    last_attempt: int


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a task ended on its worker."""

    key: str
    state: TaskState
    record: Mapping[str, Any] | None = None
    error: LooplineError | None = None
    attempts: int = 0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_task(ctx: WorkerContext, job: TaskJob) -> TaskOutcome:
    """Run one task to its end (cached, succeeded or failed), recording every step."""
    node = job.node
    key = cache_key(node, job.inputs)
    if node.task.options.cache:
        hit = RunQueries(ctx.store.engine).cached_outputs(key)
        if hit is not None and outputs_available(hit, ctx.blobs):
            finish = TaskFinish(ctx.run_id, node.key, job.last_attempt, TaskState.CACHED,
                                ctx.store.clock.now(), dict(hit), key)
            with ctx.store.write(ctx.options.actor) as uow:
                settle_task(uow, finish)
            return TaskOutcome(node.key, TaskState.CACHED, hit)
    values = {name: decode_output(record, ctx.blobs) for name, record in job.inputs.items()}
    args, kwargs = resolve_arguments(node, values)
    return _attempts(ctx, job, key, lambda: node.task.fn(*args, **kwargs))


def _start(ctx: WorkerContext, key: str, attempt: int) -> None:
    now = ctx.store.clock.now()
    expires = now + timedelta(seconds=ctx.options.lease_seconds)
    with ctx.store.write(ctx.options.actor) as uow:
        start_attempt(uow, TaskStart(ctx.run_id, key, attempt, ctx.lease_owner, expires, now))


def _finish(ctx: WorkerContext, finish: TaskFinish) -> None:
    with ctx.store.write(ctx.options.actor) as uow:
        finish_attempt(uow, finish)


def _attempts(ctx: WorkerContext, job: TaskJob, key: str,
              call: Callable[[], Any]) -> TaskOutcome:
    node, policy = job.node, job.node.task.options.retry
    tries = 0
    while True:
        tries += 1
        attempt = job.last_attempt + tries
        _start(ctx, node.key, attempt)
        try:
            if ctx.options.faults is not None:
                ctx.options.faults.check(node.task.name, node.key)
            value = call_with_timeout(call, node.task.options.timeout)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user-code boundary
            now = ctx.store.clock.now()
            # A timed-out thread cannot be stopped: retrying would run two copies at once.
            if policy.retries_after(exc, tries) and not isinstance(exc, AttemptTimeoutError):
                delay = policy.delay(tries, ctx.options.random())
                held = now + timedelta(seconds=delay + ctx.options.lease_seconds)
                _finish(ctx, TaskFinish(ctx.run_id, node.key, attempt, TaskState.RETRYING, now,
                                        cache_key=key, error=_describe(exc), retry_delay=delay,
                                        lease_expires_at=held))
                ctx.options.sleep(delay)
                continue
            _finish(ctx, TaskFinish(ctx.run_id, node.key, attempt, TaskState.FAILED, now,
                                    cache_key=key, error=_describe(exc)))
            error = UserCodeError(f"task {node.key!r} failed after {tries} attempt"
                                  f"{'s' if tries > 1 else ''}: {_describe(exc)}")
            error.__cause__ = exc
            return TaskOutcome(node.key, TaskState.FAILED, error=error, attempts=tries)
        return _succeed(ctx, node, (attempt, tries), key, value)


def _succeed(ctx: WorkerContext, node: Node, attempt_tries: tuple[int, int], key: str,
             value: Any) -> TaskOutcome:
    attempt, tries = attempt_tries
    try:
        record = encode_output(node.key, value, ctx.blobs, ctx.options.inline_limit)
    except InvalidArgumentError as exc:
        _finish(ctx, TaskFinish(ctx.run_id, node.key, attempt, TaskState.FAILED,
                                ctx.store.clock.now(), cache_key=key, error=exc.message))
        return TaskOutcome(node.key, TaskState.FAILED, error=exc, attempts=tries)
    _finish(ctx, TaskFinish(ctx.run_id, node.key, attempt, TaskState.SUCCEEDED,
                            ctx.store.clock.now(), record, key))
    return TaskOutcome(node.key, TaskState.SUCCEEDED, record, attempts=tries)
