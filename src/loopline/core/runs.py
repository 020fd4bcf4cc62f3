"""Pipeline run and task run records, and the states they move through.

Pure: no I/O. A run is ``pending`` → ``running`` → ``succeeded`` | ``failed`` (a failed or
interrupted run may be resumed back to ``running``); a run asked to stop ends ``cancelled``.
A task run is ``pending`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``, may pass
through ``retrying`` between attempts, is ``cached`` when an earlier run's outputs were
reused, and ``upstream_failed`` when it could not run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    """Where a pipeline run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    """Where one task of a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"


DONE_TASK_STATES = frozenset({TaskState.SUCCEEDED, TaskState.CACHED})
FINAL_TASK_STATES = DONE_TASK_STATES | {TaskState.FAILED, TaskState.UPSTREAM_FAILED,
                                         TaskState.CANCELLED}


@dataclass(frozen=True, slots=True)
class RunTrigger:
    """What started a run: a schedule slot or an event; ``key`` starts at most one run."""

    key: str
    name: str  # the schedule or trigger: "PIPELINE/NAME"
    kind: str  # "schedule" | "event"
    scheduled_for: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One execution of a pipeline with its parameters."""

    id: str
    pipeline: str
    state: RunState
    parameters: Mapping[str, Any]
    created_at: datetime
    created_by: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    trigger: RunTrigger | None = None
    code_version: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None
    cancel_requested_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One task of a run; ``outputs`` is the stored output record once it finished."""

    id: str
    run_id: str
    task_key: str
    state: TaskState
    attempt: int
    cache_key: str | None = None
    outputs: Mapping[str, Any] | None = None
    error: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskAttempt:
    """One attempt at a task: its outcome, its error, the delay before the next attempt."""

    task_run_id: str
    attempt: int
    state: TaskState
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    retry_delay: float | None = None
    logs: Mapping[str, Any] | None = None  # stream -> {"digest", "size", "tail"}
    traceback: str | None = None
