"""The running task's context: which run, task and attempt, the artifact store, captured logs.

A task body (or a command task) reads it with ``current_task()``; the engine sets it around
each attempt, on whichever worker runs it (thread, process or Ray), so a task can put files in
the artifact store, leave captured output on its attempt's record, and name what it read for
the run's lineage.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError
from loopline.core.lineage import NodeRef

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
    reads: list[str] = field(default_factory=list)  # lineage nodes the task read

    def used(self, node: NodeRef | str) -> None:
        """Record that this task read ``node`` (``dataset_snapshot:orders@2`` ...).

        Dataset reads through a workspace are recorded without calling this; use it for
        inputs loopline cannot see. The run's lineage gets the edge ``node → task run``.

        Raises:
            InvalidArgumentError: when ``node`` is not ``<kind>:<ref>``.
        """
        ref = node if isinstance(node, NodeRef) else NodeRef.parse(node, "node")
        if ref.id not in self.reads:
            self.reads.append(ref.id)

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
