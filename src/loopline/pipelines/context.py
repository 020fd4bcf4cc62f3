"""The running task's context: which run, task and attempt, the artifact store, captured logs.

A task body (or a command task) reads it with ``current_task()``; the engine sets it around
each attempt, on whichever worker runs it (thread, process or Ray), so a task can put files in
the artifact store and leave captured output on its attempt's record.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError

LOG_TAIL_CHARS = 4000


@dataclass(slots=True)
class TaskContext:
    """One attempt of one task, as its code sees it."""

    run_id: str
    task_key: str
    attempt: int
    blobs: ContentAddressedStore
    # stream name ("stdout", "stderr") -> {"digest", "size", "tail"}: kept on the attempt.
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record_log(self, stream: str, data: bytes) -> None:
        """Store ``data`` captured from ``stream`` and keep its digest and tail on the attempt."""
        info = self.blobs.put_bytes(data)
        tail = data[-LOG_TAIL_CHARS:].decode("utf-8", errors="replace")
        self.logs[stream] = {"digest": info.digest, "size": info.size, "tail": tail}


_CURRENT: ContextVar[TaskContext | None] = ContextVar("loopline_task_context", default=None)


def current_task() -> TaskContext:
    """Return the context of the task attempt running in this thread.

    Raises:
        InvalidArgumentError: when called outside a running task.
    """
    context = _CURRENT.get()
    if context is None:
        raise InvalidArgumentError("current_task", "is only available inside a running task")
    return context


def set_current(context: TaskContext | None) -> Any:
    """Make ``context`` current; return the token ``reset_current`` takes."""
    return _CURRENT.set(context)


def reset_current(token: Any) -> None:
    """Restore the context that was current before ``set_current``."""
    _CURRENT.reset(token)
