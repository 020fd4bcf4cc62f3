"""Pipeline runs, task runs and attempts in the metadata store (the SQL side of ``pipelines``).

Every function that changes state runs Core statements inside the caller's unit of work, so
each transition is one committed transaction. Task transitions are fenced: a finish names the
attempt it belongs to, and a write for an attempt that is no longer current is refused, so a
late result from a reclaimed attempt cannot overwrite the state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from loopline.core.errors import (
    AlreadyExistsError,
    ConflictError,
    LeaseLostError,
    NotFoundError,
)
from loopline.core.events import EventType
from loopline.core.ids import new_id
from loopline.core.runs import PipelineRun, RunState, RunTrigger, TaskRun, TaskState
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import PIPELINE_RUNS, TASK_ATTEMPTS, TASK_RUNS
from loopline.store.run_queries import RunQueries, pending_triggered_runs

__all__ = ["RunQueries", "TaskFinish", "TaskStart", "claim_run", "create_run",
           "finish_attempt", "pending_triggered_runs", "reclaim_task", "release_run",
           "renew_leases", "renew_run", "set_run_state", "settle_task", "start_attempt"]


@dataclass(frozen=True, slots=True)
class TaskStart:
    """An attempt about to run: which task, which attempt, who holds it and until when."""

    run_id: str
    task_key: str
    attempt: int
    lease_owner: str
    lease_expires_at: datetime
    at: datetime
    task_id: str | None = None  # known to the runner: saves a lookup per transition


@dataclass(frozen=True, slots=True)
class TaskFinish:
    """How an attempt ended; ``retry_delay`` is set when another attempt will follow."""

    run_id: str
    task_key: str
    attempt: int
    state: TaskState
    at: datetime
    outputs: Mapping[str, Any] | None = None
    cache_key: str | None = None
    error: str | None = None
    retry_delay: float | None = None
    # For RETRYING: the lease is kept (until here) so no resume takes a task in backoff.
    lease_expires_at: datetime | None = None
    task_id: str | None = None
    logs: Mapping[str, Any] | None = None
    traceback: str | None = None


def _emit_run(uow: UnitOfWork, run_id: str, pipeline: str, state: RunState) -> None:
    uow.emit(EventType.PIPELINE_RUN_CHANGED, f"pipeline_run:{run_id}",
             {"run_id": run_id, "pipeline": pipeline, "state": str(state)})


def create_run(uow: UnitOfWork, pipeline: str, parameters: Mapping[str, Any],
               task_keys: Sequence[str], now: datetime,
               trigger: RunTrigger | None = None) -> PipelineRun:
    """Record a new pending run of ``pipeline`` with one pending task run per key.

    Raises:
        AlreadyExistsError: when ``trigger.key`` already started a run (it fires once).
    """
    run = PipelineRun(id=new_id(), pipeline=pipeline, state=RunState.PENDING,
                      parameters=dict(parameters), created_at=now, created_by=uow.actor,
                      trigger=trigger)
    connection = uow.session.connection()
    if trigger is not None and connection.execute(
            sa.select(PIPELINE_RUNS.c.id).where(PIPELINE_RUNS.c.trigger_key == trigger.key)
    ).first() is not None:  # the unique constraint settles a race between two schedulers
        raise AlreadyExistsError("run trigger", trigger.key)
    connection.execute(sa.insert(PIPELINE_RUNS), {
        "id": run.id, "pipeline": pipeline, "state": str(run.state),
        "parameters": dict(parameters), "created_at": now, "created_by": uow.actor,
        "started_at": None, "finished_at": None, "error": None, "owner": None,
        "lease_expires_at": None, "trigger_key": trigger.key if trigger else None,
        "trigger_name": trigger.name if trigger else None,
        "trigger": {"kind": trigger.kind, **trigger.details} if trigger else None,
        "scheduled_for": trigger.scheduled_for if trigger else None,
        "code_version": None, "environment": None, "cancel_requested_at": None})
    if task_keys:
        connection.execute(sa.insert(TASK_RUNS), [
            {"id": new_id(), "run_id": run.id, "task_key": key, "state": str(TaskState.PENDING),
             "attempt": 0, "cache_key": None, "outputs": None, "error": None,
             "lease_owner": None, "lease_expires_at": None, "started_at": None,
             "finished_at": None} for key in task_keys])
    # Who started which run with what is an audited fact, as a cancel is; the parameters
    # are recorded as given (secrets belong in settings, not in run parameters).
    uow.audit("pipeline_run.created", f"pipeline_run:{run.id}", None, {
        "pipeline": pipeline, "parameters": dict(parameters), "tasks": len(task_keys),
        "trigger": trigger.key if trigger else None})
    _emit_run(uow, run.id, pipeline, run.state)
    return run


def set_run_state(uow: UnitOfWork, run_id: str, state: RunState, now: datetime,
                  error: str | None = None, owner: str | None = None) -> None:
    """Move a run to ``state`` (stamping start or finish time) and emit its event.

    With ``owner``, only while that runner still holds the run's lease.

    Raises:
        NotFoundError: when there is no such run.
        LeaseLostError: when ``owner`` no longer holds the run.
    """
    connection = uow.session.connection()
    row = connection.execute(sa.select(PIPELINE_RUNS.c.pipeline, PIPELINE_RUNS.c.owner)
                             .where(PIPELINE_RUNS.c.id == run_id)).first()
    if row is None:
        raise NotFoundError("pipeline run", run_id)
    values: dict[str, Any] = {"state": str(state), "error": error}
    if state is RunState.RUNNING:
        values.update(started_at=now, finished_at=None)
    else:
        values["finished_at"] = now
    query = sa.update(PIPELINE_RUNS).where(PIPELINE_RUNS.c.id == run_id)
    if owner is not None:
        query = query.where(PIPELINE_RUNS.c.owner == owner)
    if connection.execute(query.values(**values)).rowcount != 1:
        raise LeaseLostError(f"run {run_id} is now executed by {row.owner}; this runner "
                             "lost its lease and stops without recording a state")
    _emit_run(uow, run_id, row.pipeline, state)


def claim_run(uow: UnitOfWork, run_id: str, owner: str, until: datetime,
              owner_is_gone: Callable[[str], bool]) -> None:
    """Make ``owner`` the run's only executor until ``until``.

    Raises:
        NotFoundError: when there is no such run.
        ConflictError: when another runner holds a live lease on the run.
    """
    connection = uow.session.connection()
    row = connection.execute(sa.select(PIPELINE_RUNS.c.owner, PIPELINE_RUNS.c.lease_expires_at)
                             .where(PIPELINE_RUNS.c.id == run_id)).first()
    if row is None:
        raise NotFoundError("pipeline run", run_id)
    held, expires = row.owner, row.lease_expires_at
    if held is not None and held != owner and expires is not None and \
            expires > uow.now() and not owner_is_gone(held):
        raise ConflictError(f"run {run_id} is being executed by {held} (lease until {expires});"
                            " wait for it to finish or for its lease to expire")
    same = PIPELINE_RUNS.c.owner.is_(None) if held is None else PIPELINE_RUNS.c.owner == held
    claimed = connection.execute(sa.update(PIPELINE_RUNS)
                                 .where(PIPELINE_RUNS.c.id == run_id, same)
                                 .values(owner=owner, lease_expires_at=until)).rowcount
    if claimed != 1:
        raise ConflictError(f"run {run_id} was claimed by another runner just now")


def renew_run(uow: UnitOfWork, run_id: str, owner: str, until: datetime) -> bool:
    """Extend ``owner``'s lease on the run; return False when it lost the run."""
    return bool(uow.session.connection().execute(
        sa.update(PIPELINE_RUNS).where(PIPELINE_RUNS.c.id == run_id,
                                       PIPELINE_RUNS.c.owner == owner)
        .values(lease_expires_at=until)).rowcount == 1)


def release_run(uow: UnitOfWork, run_id: str, owner: str) -> None:
    """Give the run up: it is finished or interrupted, and may be resumed."""
    uow.session.connection().execute(
        sa.update(PIPELINE_RUNS).where(PIPELINE_RUNS.c.id == run_id,
                                       PIPELINE_RUNS.c.owner == owner)
        .values(owner=None, lease_expires_at=None))


def _task_id(connection: sa.Connection, run_id: str, task_key: str) -> str:
    task_id = connection.execute(
        sa.select(TASK_RUNS.c.id).where(TASK_RUNS.c.run_id == run_id,
                                        TASK_RUNS.c.task_key == task_key)).scalar()
    if task_id is None:
        raise NotFoundError("task run", f"{run_id}/{task_key}")
    return str(task_id)


# The two hottest statements of the engine, built once: a trivial task's overhead is mostly
# these (statement construction alone cost more than the statements' execution).
_STARTABLE = (str(TaskState.PENDING), str(TaskState.RETRYING))
_START_TASK = (
    sa.update(TASK_RUNS)
    .where(TASK_RUNS.c.id == sa.bindparam("b_id"), TASK_RUNS.c.attempt == sa.bindparam("b_prev"),
           TASK_RUNS.c.state.in_(_STARTABLE))
    .values(state=str(TaskState.RUNNING), attempt=sa.bindparam("b_attempt"), error=None,
            lease_owner=sa.bindparam("b_owner"), lease_expires_at=sa.bindparam("b_expires"),
            started_at=sa.bindparam("b_now"), finished_at=None))
_INSERT_ATTEMPT = sa.insert(TASK_ATTEMPTS)
_FINISH_TASK = (
    sa.update(TASK_RUNS)
    .where(TASK_RUNS.c.id == sa.bindparam("b_id"),
           TASK_RUNS.c.attempt == sa.bindparam("b_attempt"),
           TASK_RUNS.c.state == str(TaskState.RUNNING))
    .values(state=sa.bindparam("b_state"), outputs=sa.bindparam("b_outputs"),
            cache_key=sa.bindparam("b_cache_key"), error=sa.bindparam("b_error"),
            lease_owner=sa.bindparam("b_owner"), lease_expires_at=sa.bindparam("b_expires"),
            finished_at=sa.bindparam("b_finished")))
_FINISH_ATTEMPT = (
    sa.update(TASK_ATTEMPTS)
    .where(TASK_ATTEMPTS.c.task_run_id == sa.bindparam("b_id"),
           TASK_ATTEMPTS.c.attempt == sa.bindparam("b_attempt"))
    .values(state=sa.bindparam("b_state"), finished_at=sa.bindparam("b_now"),
            error=sa.bindparam("b_error"), retry_delay=sa.bindparam("b_delay"),
            logs=sa.bindparam("b_logs"), traceback=sa.bindparam("b_traceback")))


def start_attempt(uow: UnitOfWork, start: TaskStart) -> None:
    """Mark a task running under ``start.attempt`` and record the attempt.

    Raises:
        ConflictError: when the task already finished or another attempt took it.
        NotFoundError: when there is no such task run.
    """
    connection, now = uow.session.connection(), start.at
    task_id = start.task_id or _task_id(connection, start.run_id, start.task_key)
    updated = connection.execute(_START_TASK, {
        "b_id": task_id, "b_prev": start.attempt - 1, "b_attempt": start.attempt,
        "b_owner": start.lease_owner, "b_expires": start.lease_expires_at, "b_now": now,
    }).rowcount
    if updated != 1:
        raise ConflictError(f"task {start.task_key!r} of run {start.run_id} cannot start "
                            f"attempt {start.attempt}: it finished or another attempt took it")
    connection.execute(_INSERT_ATTEMPT, {
        "task_run_id": task_id, "attempt": start.attempt, "state": str(TaskState.RUNNING),
        "started_at": now, "finished_at": None, "error": None, "retry_delay": None,
        "logs": None, "traceback": None})


def finish_attempt(uow: UnitOfWork, finish: TaskFinish) -> None:
    """Record how an attempt ended; the task moves to ``finish.state``.

    A ``retrying`` finish keeps the lease (its owner and ``finish.lease_expires_at``).

    Raises:
        ConflictError: when ``finish.attempt`` is no longer the task's running attempt.
        NotFoundError: when there is no such task run.
    """
    connection, now = uow.session.connection(), finish.at
    task_id = finish.task_id or _task_id(connection, finish.run_id, finish.task_key)
    final = finish.state is not TaskState.RETRYING
    owner = None
    if not final:
        owner = connection.execute(sa.select(TASK_RUNS.c.lease_owner)
                                   .where(TASK_RUNS.c.id == task_id)).scalar()
    updated = connection.execute(_FINISH_TASK, {
        "b_id": task_id, "b_attempt": finish.attempt, "b_state": str(finish.state),
        "b_outputs": finish.outputs, "b_cache_key": finish.cache_key, "b_error": finish.error,
        "b_owner": owner, "b_expires": None if final else finish.lease_expires_at,
        "b_finished": now if final else None}).rowcount
    if updated != 1:
        raise ConflictError(f"task {finish.task_key!r} of run {finish.run_id}: attempt "
                            f"{finish.attempt} is no longer current; its result is refused")
    attempt_state = TaskState.FAILED if finish.state is TaskState.RETRYING else finish.state
    connection.execute(_FINISH_ATTEMPT, {
        "b_id": task_id, "b_attempt": finish.attempt, "b_state": str(attempt_state),
        "b_now": now, "b_error": finish.error, "b_delay": finish.retry_delay,
        "b_logs": dict(finish.logs) if finish.logs else None, "b_traceback": finish.traceback})


def settle_task(uow: UnitOfWork, finish: TaskFinish) -> None:
    """Finish a task that runs no attempt: ``cached`` (reused outputs) or ``upstream_failed``.

    Raises:
        ConflictError: when the task is no longer pending.
    """
    connection, now = uow.session.connection(), finish.at
    task_id = finish.task_id or _task_id(connection, finish.run_id, finish.task_key)
    updated = connection.execute(
        sa.update(TASK_RUNS).where(TASK_RUNS.c.id == task_id,
                                   TASK_RUNS.c.state == str(TaskState.PENDING))
        .values(state=str(finish.state), outputs=finish.outputs, cache_key=finish.cache_key,
                error=finish.error, started_at=now, finished_at=now)).rowcount
    if updated != 1:
        raise ConflictError(f"task {finish.task_key!r} of run {finish.run_id} is not pending")


def renew_leases(uow: UnitOfWork, run_id: str, owner: str, until: datetime) -> int:
    """Extend to ``until`` the leases ``owner`` holds on running tasks of ``run_id``.

    Returns how many leases were renewed (a lease that was reclaimed is not: fencing). On
    PostgreSQL, rows the runner's own batch holds are skipped rather than waited for, so the
    heartbeat and the batch never deadlock on each other's row locks.
    """
    connection = uow.session.connection()
    mine = sa.and_(TASK_RUNS.c.run_id == run_id, TASK_RUNS.c.lease_owner == owner,
                   TASK_RUNS.c.state == str(TaskState.RUNNING))
    query = sa.update(TASK_RUNS).values(lease_expires_at=until)
    if connection.dialect.name == "postgresql":
        free = sa.select(TASK_RUNS.c.id).where(mine).order_by(TASK_RUNS.c.id) \
            .with_for_update(skip_locked=True).scalar_subquery()
        query = query.where(TASK_RUNS.c.id.in_(free))
    else:
        query = query.where(mine)
    return int(connection.execute(query).rowcount)


def reclaim_task(uow: UnitOfWork, task: TaskRun, now: datetime) -> None:
    """Put an unfinished task (as read: running, retrying or failed) back to pending.

    Raises:
        ConflictError: when the task moved on since it was read.
    """
    connection, task_id, attempt = uow.session.connection(), task.id, task.attempt
    reclaimable = [str(s) for s in (TaskState.RUNNING, TaskState.RETRYING, TaskState.FAILED,
                                    TaskState.UPSTREAM_FAILED)]
    updated = connection.execute(
        sa.update(TASK_RUNS).where(TASK_RUNS.c.id == task_id, TASK_RUNS.c.attempt == attempt,
                                   TASK_RUNS.c.state.in_(reclaimable))
        .values(state=str(TaskState.PENDING), lease_owner=None, lease_expires_at=None,
                finished_at=None)).rowcount
    if updated != 1:
        raise ConflictError(f"task {task.task_key!r} of run {task.run_id} changed while "
                            "being reclaimed")
    connection.execute(
        sa.update(TASK_ATTEMPTS).where(TASK_ATTEMPTS.c.task_run_id == task_id,
                                       TASK_ATTEMPTS.c.attempt == attempt,
                                       TASK_ATTEMPTS.c.state == str(TaskState.RUNNING))
        .values(state=str(TaskState.FAILED), finished_at=now,
                error="interrupted: the runner stopped during this attempt"))
