"""Local execution: the bounded worker pool, and the invoker that runs attempts in threads.

An executor only runs callables; the runner decides what is ready and records every state.
A thread attempt with a timeout runs in a helper thread; when time runs out the engine raises
``AttemptTimeoutError`` inside that thread (``PyThreadState_SetAsyncExc``), which stops Python
code at its next instruction. Code blocked inside C (a long ``sleep``, a socket read) stops
only when the call returns: such an attempt is reported as not stopped and is not retried
beside itself. ``executor="process"`` kills the worker process instead, always.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError
from loopline.pipelines.remote import AttemptTimeoutError, CallResult, TaskCall, execute_call

T = TypeVar("T")
MAX_WORKERS = 256
STOP_GRACE_SECONDS = 2.0


def check_workers(max_workers: object) -> int:
    """Return ``max_workers`` when it is an integer from 1 to 256.

    Raises:
        InvalidArgumentError: otherwise.
    """
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not (
            1 <= max_workers <= MAX_WORKERS):
        raise InvalidArgumentError("max_workers", f"must be an integer from 1 to {MAX_WORKERS}")
    return max_workers


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
        self.max_workers = check_workers(max_workers)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="loopline-task")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` on the pool."""
        return self._pool.submit(fn)

    def shutdown(self) -> None:
        """Wait for queued callables and stop the threads."""
        self._pool.shutdown(wait=True)


class TimedOutAttempt(AttemptTimeoutError):
    """A timed-out thread attempt; ``stopped`` says whether its thread really ended."""

    def __init__(self, message: str, stopped: bool) -> None:
        self.stopped = stopped
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (TimedOutAttempt, (str(self), self.stopped))


def _raise_in_thread(thread: threading.Thread) -> None:
    ident = thread.ident
    if ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                   ctypes.py_object(AttemptTimeoutError))


def call_with_timeout(fn: Callable[[], CallResult], timeout: float) -> CallResult:
    """Call ``fn`` in a helper thread; stop the thread when ``timeout`` seconds pass."""
    box: list[CallResult] = []
    thread = threading.Thread(target=lambda: box.append(fn()), name="loopline-attempt",
                              daemon=True)
    thread.start()
    thread.join(timeout)
    if not thread.is_alive():
        return box[0]
    _raise_in_thread(thread)
    thread.join(STOP_GRACE_SECONDS)
    stopped = not thread.is_alive()
    how = "it was stopped" if stopped else "it could not be stopped (blocked outside Python)"
    return CallResult(None, TimedOutAttempt(
        f"the attempt ran longer than its timeout of {timeout:g} s; {how}", stopped))


class ThreadInvoker:
    """Runs attempts in this process, on the calling worker thread."""

    name = "thread"

    def __init__(self, blobs: ContentAddressedStore) -> None:
        self._blobs = blobs

    def invoke(self, call: TaskCall, timeout: float | None) -> CallResult:
        """Run ``call`` here; with a timeout, in a helper thread that is stopped on expiry."""
        if timeout is None:
            return execute_call(call, self._blobs)
        return call_with_timeout(lambda: execute_call(call, self._blobs), timeout)

    def close(self) -> None:
        """Release nothing: threads end with their attempts."""
