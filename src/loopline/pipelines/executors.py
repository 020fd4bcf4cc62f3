"""Executors that run task attempts: a local thread pool, with a bounded number of workers.

An executor only runs callables; the runner decides what is ready and records every state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from loopline.core.errors import InvalidArgumentError

T = TypeVar("T")
MAX_WORKERS = 256


class TaskExecutor(Protocol):
    """Runs callables somewhere and hands back futures."""

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Start ``fn`` and return the future of its result."""
        ...

    def shutdown(self) -> None:
        """Wait for running callables and release the workers."""
        ...


class ThreadExecutor:
    """A local pool of at most ``max_workers`` threads."""

    def __init__(self, max_workers: int = 4) -> None:
        """Create the pool.

        Raises:
            InvalidArgumentError: when ``max_workers`` is not 1..256.
        """
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not (
                1 <= max_workers <= MAX_WORKERS):
            raise InvalidArgumentError("max_workers", f"must be an integer from 1 to "
                                                      f"{MAX_WORKERS}")
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="loopline-task")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` on the pool."""
        return self._pool.submit(fn)

    def shutdown(self) -> None:
        """Wait for queued callables and stop the threads."""
        self._pool.shutdown(wait=True)


class AttemptTimeoutError(TimeoutError):
    """A task attempt ran longer than its timeout."""


def call_with_timeout(fn: Callable[[], T], timeout: float | None) -> T:
    """Call ``fn``; with a timeout, in a helper thread that is abandoned when time runs out.

    Python cannot stop a thread: an abandoned attempt keeps running, and its result is
    discarded (the runner has moved on to the next attempt or failed the task).

    Raises:
        AttemptTimeoutError: when ``fn`` did not return within ``timeout`` seconds.
        Exception: whatever ``fn`` raised.
    """
    if timeout is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="loopline-attempt", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AttemptTimeoutError(f"the attempt ran longer than its timeout of {timeout:g} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
