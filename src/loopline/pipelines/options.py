"""How a runner runs: executor, workers, leases, caching, and the seams tests replace."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from loopline.core.ports import Authorizer
from loopline.core.runs import TaskState
from loopline.pipelines.faults import FaultInjector
from loopline.pipelines.outputs import INLINE_LIMIT

ExecutorName = Literal["thread", "process", "ray"]
EXECUTORS: tuple[str, ...] = ("thread", "process", "ray")


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """One task changed state: what a live view shows."""

    run_id: str
    task_key: str
    state: TaskState
    attempt: int
    at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How a runner runs: executor, workers, who it writes as, leases, caching, seams."""

    max_workers: int = 4
    executor: ExecutorName = "thread"
    ray_address: str | None = None  # None: LOOPLINE_RAY_ADDRESS, else a local Ray
    actor: str = "loopline"
    # A running task's lease is renewed every heartbeat and lasts three of them, so a dead
    # runner's task can be reclaimed within three heartbeats (RELIABILITY.md).
    heartbeat_seconds: float = 10.0
    lease_seconds: float = 30.0
    cache: bool = True  # False: run every task (``--no-cache``)
    record_provenance: bool = True  # code version, environment and lineage of each run
    faults: FaultInjector | None = None  # fail named tasks on purpose (tests, evaluation)
    # Roles are checked before a run is created, resumed or cancelled (governance wires it).
    authorizer: Authorizer | None = None
    inline_limit: int = INLINE_LIMIT
    observer: Callable[[TaskUpdate], None] | None = None
    sleep: Callable[[float], None] = field(default=time.sleep)
    random: Callable[[], float] = field(default=random.random)
