"""The engine's hot path: a batch of task transitions written as one transaction, fast.

A trivial pipeline task costs a start and a finish; through SQLAlchemy's statement layer
those cost three times what the database itself takes, which made the engine's overhead
per task exceed its budget. So these few fixed statements run on the driver's cursor
directly, inside the same transaction machinery (``BEGIN IMMEDIATE`` on SQLite,
``synchronous_commit`` on PostgreSQL) as every other write. Values are converted here
exactly as the column types would (UTC datetimes, JSON text). Fencing is unchanged: a
start or finish for an attempt that is no longer current matches no row and the whole
batch is refused with ``ConflictError``; the caller then writes one transition at a time
through ``store.runs`` to find the stale one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from loopline.core.errors import ConflictError, LeaseLostError
from loopline.core.runs import TaskState
from loopline.store.engine import WRITE_OPTION
from loopline.store.errors import database_errors
from loopline.store.runs import TaskFinish, TaskStart

_START = (
    "UPDATE task_runs SET state = 'running', attempt = :attempt, error = NULL, "
    "lease_owner = :owner, lease_expires_at = :expires, started_at = :now, finished_at = NULL "
    "WHERE id = :id AND attempt = :prev AND state IN ('pending', 'retrying')")
_INSERT_ATTEMPT = (
    "INSERT INTO task_attempts (task_run_id, attempt, state, started_at, finished_at, error, "
    "retry_delay, logs, traceback) VALUES (:id, :attempt, 'running', :now, NULL, NULL, NULL, "
    "NULL, NULL)")
_FINISH = (
    "UPDATE task_runs SET state = :state, outputs = {outputs}, cache_key = :cache_key, "
    "error = :error, lease_owner = NULL, lease_expires_at = NULL, finished_at = :now "
    "WHERE id = :id AND attempt = :attempt AND state IN ('running', 'retrying')")
_FINISH_ATTEMPT = (
    "UPDATE task_attempts SET state = :state, finished_at = :now, error = :error, "
    "retry_delay = NULL, logs = {logs}, traceback = :traceback "
    "WHERE task_run_id = :id AND attempt = :attempt")
# Touching the run row under the runner's own name proves the lease is still held and, on
# PostgreSQL, locks the row so a concurrent claim waits for this batch to commit.
_HOLD = "UPDATE pipeline_runs SET owner = owner WHERE id = :run AND owner = :owner"
_SETTLE = (
    "UPDATE task_runs SET state = :state, outputs = {outputs}, cache_key = :cache_key, "
    "error = :error, started_at = :now, finished_at = :now WHERE id = :id AND state = 'pending'")


def _dialect_sql(text: str, postgres: bool) -> str:
    if not postgres:
        return text.format(outputs=":outputs", logs=":logs")
    text = text.format(outputs="CAST(:outputs AS JSON)", logs="CAST(:logs AS JSON)")
    return re.sub(r":(\w+)", r"%(\1)s", text)


class TransitionWriter:
    """Writes starts, final finishes and settlements of tasks in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(**{WRITE_OPTION: True})
        postgres = engine.dialect.name == "postgresql"
        self._postgres = postgres
        self._sql = {name: _dialect_sql(text, postgres) for name, text in (
            ("start", _START), ("insert_attempt", _INSERT_ATTEMPT), ("finish", _FINISH),
            ("finish_attempt", _FINISH_ATTEMPT), ("settle", _SETTLE), ("hold", _HOLD))}

    def _time(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        # SQLite keeps what SQLAlchemy's DateTime writes: naive UTC text, microseconds.
        return utc if self._postgres else utc.replace(tzinfo=None).isoformat(" ", "microseconds")

    def write(self, lease: tuple[str, str], starts: Sequence[TaskStart],
              finishes: Sequence[TaskFinish], settles: Sequence[TaskFinish]) -> None:
        """Write every transition given, or none of them, while ``lease`` (run, owner) holds.

        Every transition must carry its ``task_id``; ``finishes`` are final (not retrying).

        Raises:
            LeaseLostError: when the owner no longer holds the run; nothing was written.
            ConflictError: when one of them is stale (fenced out); nothing was written.
            BackendError: when the database fails.
        """
        run_id, owner = lease
        with database_errors(), self._engine.begin() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                if self._run(cursor, "hold", {"run": run_id, "owner": owner}) != 1:
                    raise LeaseLostError(f"run {run_id} is now executed by another runner; "
                                         "this one lost its lease and stops")
                for finish in finishes:
                    self._finish(cursor, finish)
                for settle in settles:
                    self._settle(cursor, settle)
                for start in starts:
                    self._start(cursor, start)
            finally:
                cursor.close()

    def _run(self, cursor: Any, name: str, params: Mapping[str, Any]) -> int:
        cursor.execute(self._sql[name], params)
        return int(cursor.rowcount)

    def _start(self, cursor: Any, start: TaskStart) -> None:
        now = self._time(start.at)
        if self._run(cursor, "start", {
                "id": start.task_id, "prev": start.attempt - 1, "attempt": start.attempt,
                "owner": start.lease_owner, "expires": self._time(start.lease_expires_at),
                "now": now}) != 1:
            raise ConflictError(f"task {start.task_key!r} of run {start.run_id} cannot start "
                                f"attempt {start.attempt}: it finished or another attempt "
                                "took it")
        self._run(cursor, "insert_attempt", {"id": start.task_id, "attempt": start.attempt,
                                             "now": now})

    def _finish(self, cursor: Any, finish: TaskFinish) -> None:
        if finish.state is TaskState.RETRYING:
            raise ValueError("a retrying finish keeps its lease: write it with finish_attempt")
        now = self._time(finish.at)
        if self._run(cursor, "finish", {
                "id": finish.task_id, "attempt": finish.attempt, "state": str(finish.state),
                "outputs": _json(finish.outputs), "cache_key": finish.cache_key,
                "error": finish.error, "now": now}) != 1:
            raise ConflictError(f"task {finish.task_key!r} of run {finish.run_id}: attempt "
                                f"{finish.attempt} is no longer current; its result is "
                                "refused")
        self._run(cursor, "finish_attempt", {
            "id": finish.task_id, "attempt": finish.attempt, "state": str(finish.state),
            "now": now, "error": finish.error, "logs": _json(finish.logs or None),
            "traceback": finish.traceback})

    def _settle(self, cursor: Any, settle: TaskFinish) -> None:
        if self._run(cursor, "settle", {
                "id": settle.task_id, "state": str(settle.state),
                "outputs": _json(settle.outputs), "cache_key": settle.cache_key,
                "error": settle.error, "now": self._time(settle.at)}) != 1:
            raise ConflictError(f"task {settle.task_key!r} of run {settle.run_id} is not "
                                "pending")


def _json(value: Mapping[str, Any] | None) -> str | None:
    # SQL NULL for "no value" (the ORM path writes a JSON 'null' instead; readers treat both
    # as None, and every query on these columns also filters by state).
    return None if value is None else json.dumps(dict(value))
