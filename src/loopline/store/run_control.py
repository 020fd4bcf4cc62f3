"""Run control in the metadata store: cancel requests, provenance records, task ids.

A cancel is a request the run's runner reads at its next heartbeat; it is audited, because
stopping someone's run is an action people ask about afterwards, and so is a person's resume
of a run (the scheduler's executions of pending runs are not: creating the run was).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loopline.core.errors import InvalidTransitionError, NotFoundError
from loopline.core.events import EventType
from loopline.core.runs import RunState, TaskState
from loopline.store.errors import translated
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import PIPELINE_RUNS, TASK_RUNS

FINISHED_RUN_STATES = (str(RunState.SUCCEEDED), str(RunState.CANCELLED), str(RunState.FAILED))
UNFINISHED_TASK_STATES = (str(TaskState.PENDING), str(TaskState.RUNNING),
                          str(TaskState.RETRYING))


def record_resume(uow: UnitOfWork, run_id: str) -> None:
    """Audit that the unit's actor resumes run ``run_id`` (``pipeline_run.resumed``).

    Raises:
        NotFoundError: when there is no such run.
    """
    row = uow.session.connection().execute(
        sa.select(PIPELINE_RUNS.c.state, PIPELINE_RUNS.c.pipeline)
        .where(PIPELINE_RUNS.c.id == run_id)).first()
    if row is None:
        raise NotFoundError("pipeline run", run_id, "list runs with `loopline runs list`")
    uow.audit("pipeline_run.resumed", f"pipeline_run:{run_id}", {"state": row.state},
              {"pipeline": row.pipeline})


def request_cancel(uow: UnitOfWork, run_id: str, now: datetime) -> bool:
    """Ask run ``run_id`` to stop; return False when it was already asked.

    A run no live runner holds (pending, or its runner gone and its lease expired) is
    cancelled here and now, with its unfinished tasks; a running one is stopped by its runner
    at its next heartbeat.

    Raises:
        NotFoundError: when there is no such run.
        InvalidTransitionError: when the run already succeeded, failed or was cancelled.
    """
    connection = uow.session.connection()
    row = connection.execute(sa.select(PIPELINE_RUNS.c.state, PIPELINE_RUNS.c.pipeline,
                                       PIPELINE_RUNS.c.cancel_requested_at,
                                       PIPELINE_RUNS.c.owner, PIPELINE_RUNS.c.lease_expires_at)
                             .where(PIPELINE_RUNS.c.id == run_id)).first()
    if row is None:
        raise NotFoundError("pipeline run", run_id, "list runs with `loopline runs list`")
    if row.state in FINISHED_RUN_STATES:
        raise InvalidTransitionError("pipeline run", run_id, row.state, "cancelled")
    if row.cancel_requested_at is not None:
        return False
    connection.execute(sa.update(PIPELINE_RUNS).where(PIPELINE_RUNS.c.id == run_id)
                       .values(cancel_requested_at=now))
    uow.audit("pipeline_run.cancel_requested", f"pipeline_run:{run_id}",
              {"state": row.state}, {"pipeline": row.pipeline, "cancel_requested_at":
                                     now.isoformat()})
    held = row.owner is not None and row.lease_expires_at is not None and \
        row.lease_expires_at > now
    if not held:
        _cancel_now(uow, run_id, row.pipeline, now)
    return True


def _cancel_now(uow: UnitOfWork, run_id: str, pipeline: str, now: datetime) -> None:
    connection = uow.session.connection()
    connection.execute(
        sa.update(TASK_RUNS).where(TASK_RUNS.c.run_id == run_id,
                                   TASK_RUNS.c.state.in_(UNFINISHED_TASK_STATES))
        .values(state=str(TaskState.CANCELLED), lease_owner=None, lease_expires_at=None,
                error="the run was cancelled", finished_at=now))
    connection.execute(sa.update(PIPELINE_RUNS).where(PIPELINE_RUNS.c.id == run_id)
                       .values(state=str(RunState.CANCELLED), finished_at=now, owner=None,
                               lease_expires_at=None, error="cancelled on request"))
    uow.emit(EventType.PIPELINE_RUN_CHANGED, f"pipeline_run:{run_id}",
             {"run_id": run_id, "pipeline": pipeline, "state": str(RunState.CANCELLED)})


def record_provenance(uow: UnitOfWork, run_id: str, code_version: Mapping[str, Any] | None,
                      environment: Mapping[str, Any] | None) -> None:
    """Store the code version and environment a run executes with."""
    uow.session.connection().execute(
        sa.update(PIPELINE_RUNS).where(PIPELINE_RUNS.c.id == run_id)
        .values(code_version=dict(code_version) if code_version is not None else None,
                environment=dict(environment) if environment is not None else None))


class RunControl:
    """Reads the runner makes while it executes: cancel requests and task ids."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def cancel_requested(self, run_id: str) -> bool:
        """Tell whether someone asked run ``run_id`` to stop."""
        query = sa.select(PIPELINE_RUNS.c.cancel_requested_at).where(PIPELINE_RUNS.c.id == run_id)
        with self._engine.connect() as connection:
            return connection.execute(query).scalar() is not None

    @translated
    def task_ids(self, run_id: str) -> dict[str, str]:
        """Return the id of each task run of ``run_id`` by task key."""
        query = sa.select(TASK_RUNS.c.task_key, TASK_RUNS.c.id).where(TASK_RUNS.c.run_id == run_id)
        with self._engine.connect() as connection:
            return {row.task_key: row.id for row in connection.execute(query)}

    @translated
    def cached_outputs(self, cache_keys: list[str]) -> dict[str, Mapping[str, Any]]:
        """Return, per cache key, the outputs of the newest finished task run that had it."""
        if not cache_keys:
            return {}
        done = [str(TaskState.SUCCEEDED), str(TaskState.CACHED)]
        found: dict[str, Mapping[str, Any]] = {}
        with self._engine.connect() as connection:
            for start in range(0, len(cache_keys), 500):  # bound the IN list
                query = (sa.select(TASK_RUNS.c.cache_key, TASK_RUNS.c.outputs)
                         .where(TASK_RUNS.c.cache_key.in_(cache_keys[start:start + 500]),
                                TASK_RUNS.c.state.in_(done), TASK_RUNS.c.outputs.is_not(None))
                         .order_by(TASK_RUNS.c.finished_at))
                for row in connection.execute(query):
                    found[row.cache_key] = row.outputs  # ordered: the newest wins
        return found
