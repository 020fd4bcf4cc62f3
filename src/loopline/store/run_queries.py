"""Reads of pipeline runs, task runs and attempts (the query side of ``store/runs.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.orm import Session

from loopline.core.errors import NotFoundError
from loopline.core.runs import (
    PipelineRun,
    RunState,
    RunTrigger,
    TaskAttempt,
    TaskRun,
    TaskState,
)
from loopline.store.errors import translated
from loopline.store.models import PIPELINE_RUNS, TASK_ATTEMPTS, TASK_RUNS


def _trigger(row: RowMapping) -> RunTrigger | None:
    if row["trigger_key"] is None:
        return None
    details = dict(row["trigger"] or {})
    kind = str(details.pop("kind", "event"))
    return RunTrigger(row["trigger_key"], row["trigger_name"] or "", kind,
                      row["scheduled_for"], details)


def _run(row: RowMapping) -> PipelineRun:
    return PipelineRun(id=row["id"], pipeline=row["pipeline"], state=RunState(row["state"]),
                       parameters=row["parameters"], created_at=row["created_at"],
                       created_by=row["created_by"], started_at=row["started_at"],
                       finished_at=row["finished_at"], error=row["error"],
                       trigger=_trigger(row), code_version=row["code_version"],
                       environment=row["environment"],
                       cancel_requested_at=row["cancel_requested_at"])


def _task(row: RowMapping) -> TaskRun:
    return TaskRun(id=row["id"], run_id=row["run_id"], task_key=row["task_key"],
                   state=TaskState(row["state"]), attempt=row["attempt"],
                   cache_key=row["cache_key"], outputs=row["outputs"], error=row["error"],
                   lease_owner=row["lease_owner"], lease_expires_at=row["lease_expires_at"],
                   started_at=row["started_at"], finished_at=row["finished_at"])



def cached_outputs(session: Session, cache_key: str) -> Mapping[str, Any] | None:
    """Return the outputs recorded by the newest finished task run with ``cache_key``."""
    row = session.connection().execute(
        sa.select(TASK_RUNS.c.outputs)
        .where(TASK_RUNS.c.cache_key == cache_key,
               TASK_RUNS.c.state.in_([str(s) for s in (TaskState.SUCCEEDED, TaskState.CACHED)]),
               TASK_RUNS.c.outputs.is_not(None))
        .order_by(TASK_RUNS.c.finished_at.desc()).limit(1)).first()
    return row.outputs if row is not None else None


class RunQueries:
    """Reads of pipeline runs, their task runs and attempts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def run(self, run_id: str) -> PipelineRun:
        """Return the run with this id.

        Raises:
            NotFoundError: when there is none.
        """
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(PIPELINE_RUNS)
                                     .where(PIPELINE_RUNS.c.id == run_id)).mappings().first()
        if row is None:
            raise NotFoundError("pipeline run", run_id, "list runs with `loopline runs list`")
        return _run(row)

    @translated
    def runs(self, pipeline: str | None = None, limit: int = 100) -> list[PipelineRun]:
        """List runs (of one pipeline, or all), newest first."""
        query = sa.select(PIPELINE_RUNS)
        if pipeline is not None:
            query = query.where(PIPELINE_RUNS.c.pipeline == pipeline)
        query = query.order_by(PIPELINE_RUNS.c.created_at.desc(),
                               PIPELINE_RUNS.c.id.desc()).limit(limit)
        with self._engine.connect() as connection:
            return [_run(row) for row in connection.execute(query).mappings()]

    @translated
    def tasks(self, run_id: str) -> list[TaskRun]:
        """List the task runs of a run, by task key."""
        query = (sa.select(TASK_RUNS).where(TASK_RUNS.c.run_id == run_id)
                 .order_by(TASK_RUNS.c.task_key))
        with self._engine.connect() as connection:
            return [_task(row) for row in connection.execute(query).mappings()]

    @translated
    def attempts(self, run_id: str, task_key: str) -> list[TaskAttempt]:
        """List every attempt at one task of a run, oldest first."""
        query = (sa.select(TASK_ATTEMPTS).join(TASK_RUNS,
                                               TASK_RUNS.c.id == TASK_ATTEMPTS.c.task_run_id)
                 .where(TASK_RUNS.c.run_id == run_id, TASK_RUNS.c.task_key == task_key)
                 .order_by(TASK_ATTEMPTS.c.attempt))
        with self._engine.connect() as connection:
            return [TaskAttempt(task_run_id=r["task_run_id"], attempt=r["attempt"],
                                state=TaskState(r["state"]), started_at=r["started_at"],
                                finished_at=r["finished_at"], error=r["error"],
                                retry_delay=r["retry_delay"], logs=r["logs"],
                                traceback=r["traceback"])
                    for r in connection.execute(query).mappings()]

    @translated
    def last_scheduled(self, trigger_name: str) -> datetime | None:
        """Return the latest schedule slot that started a run of ``trigger_name``."""
        query = sa.select(sa.func.max(PIPELINE_RUNS.c.scheduled_for)).where(
            PIPELINE_RUNS.c.trigger_name == trigger_name)
        with self._engine.connect() as connection:
            value: datetime | None = connection.execute(query).scalar()
        return value

    @translated
    def by_trigger(self, trigger_key: str) -> PipelineRun | None:
        """Return the run ``trigger_key`` started, if it started one."""
        query = sa.select(PIPELINE_RUNS).where(PIPELINE_RUNS.c.trigger_key == trigger_key)
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _run(row) if row is not None else None

    @translated
    def cached_outputs(self, cache_key: str) -> Mapping[str, Any] | None:
        """Return the outputs recorded under ``cache_key`` by any finished task run."""
        with Session(self._engine) as session:
            return cached_outputs(session, cache_key)


# -- for the scheduler (loop/scheduler.py) ---------------------------------------------------

@translated
def pending_triggered_runs(engine: Engine, pipelines: Sequence[str],
                           limit: int = 1000) -> list[PipelineRun]:
    """Return pending runs of ``pipelines`` that a schedule or an event trigger created.

    Oldest first: the runs a scheduler recorded but never executed (it stopped in between).
    """
    query = (sa.select(PIPELINE_RUNS)
             .where(PIPELINE_RUNS.c.state == str(RunState.PENDING),
                    PIPELINE_RUNS.c.trigger_key.is_not(None),
                    PIPELINE_RUNS.c.pipeline.in_(list(pipelines)))
             .order_by(PIPELINE_RUNS.c.created_at, PIPELINE_RUNS.c.id).limit(limit))
    with engine.connect() as connection:
        return [_run(row) for row in connection.execute(query).mappings()]
