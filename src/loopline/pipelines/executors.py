"""Local execution: the bounded worker pool, and the invoker that runs attempts in threads.

An executor only runs callables; the runner decides what is ready and records every state.
A thread attempt with a timeout runs in a helper thread; when time runs out the engine raises
``AttemptTimeoutError`` inside that thread (``PyThreadState_SetAsyncExc``), which stops Python
code at its next instruction. Code blocked inside C (a long ``sleep``, a socket read) stops
only when the call returns: such an attempt is reported as not stopped and is not retried
beside itself. ``executor="process"`` kills the worker process instead, always.
"""

from __future__ import annotations

import contextvars
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

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Release the workers (waiting for running callables when ``wait``)."""
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

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop the threads: after the queued callables, or dropping those not started."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class TimedOutAttempt(AttemptTimeoutError):
    """A timed-out thread attempt; ``stopped`` says whether its thread really ended."""

    def __init__(self, message: str, stopped: bool) -> None:
        self.stopped = stopped
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (TimedOutAttempt, (str(self), self.stopped))


class _Stop(BaseException):
    """Raised inside a timed-out task's thread (``except Exception`` cannot swallow it)."""


class _Deadline:
    """One call of a task function in a helper thread that is stopped when time runs out."""

    def __init__(self, thunk: Callable[[], object]) -> None:
        self._thunk = thunk
        self._context = contextvars.copy_context()  # current_task() works in the helper
        self._lock = threading.Lock()
        self._done = False
        self.outcome: dict[str, object] = {}
        self.thread = threading.Thread(target=self._target, name="loopline-attempt",
                                       daemon=True)

    def _target(self) -> None:
        try:
            try:
                value = self._context.run(self._thunk)
                with self._lock:  # from here on no stop is sent
                    self._done = True
                self.outcome["value"] = value
            except _Stop:
                self.outcome["stopped"] = True
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                with self._lock:
                    self._done = True
                self.outcome["error"] = exc
        except _Stop:  # a stop sent just before the task finished, delivered late
            self.outcome.setdefault("stopped", True)

    def stop(self) -> None:
        """Raise ``_Stop`` in the thread, unless the task already finished."""
        with self._lock:
            ident = self.thread.ident
            if self._done or ident is None or not self.thread.is_alive():
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                       ctypes.py_object(_Stop))


def call_with_timeout(thunk: Callable[[], T], timeout: float) -> T:
    """Call ``thunk`` in a helper thread; stop the thread when ``timeout`` seconds pass.

    Only the task's own function runs there: reading inputs and storing the output stay in
    the calling thread, so a stop never lands in loopline's code.

    Raises:
        TimedOutAttempt: when the call did not return in time (``stopped`` tells whether the
            thread ended; code blocked in C cannot be interrupted until it returns).
        BaseException: whatever the task raised.
    """
    deadline = _Deadline(thunk)
    deadline.thread.start()
    deadline.thread.join(timeout)
    if deadline.thread.is_alive():
        deadline.stop()
        deadline.thread.join(STOP_GRACE_SECONDS)
    outcome = deadline.outcome
    if "value" in outcome:
        return outcome["value"]  # type: ignore[return-value]
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    stopped = not deadline.thread.is_alive()
    how = "it was stopped" if stopped else (
        f"it did not stop within {STOP_GRACE_SECONDS:g} s (blocked outside Python, or it "
        "catches BaseException); it is left running and is not retried")
    raise TimedOutAttempt(f"the attempt ran longer than its timeout of {timeout:g} s; {how}",
                          stopped)


class ThreadInvoker:
    """Runs attempts in this process, on the calling worker thread."""

    name = "thread"

    def __init__(self, blobs: ContentAddressedStore) -> None:
        self._blobs = blobs

    def invoke(self, call: TaskCall, timeout: float | None) -> CallResult:
        """Run ``call`` here; with a timeout, its function in a helper thread stopped on expiry."""
        if timeout is None:
            return execute_call(call, self._blobs)
        return execute_call(call, self._blobs,
                            lambda thunk: call_with_timeout(thunk, timeout))

    def close(self) -> None:
        """Release nothing: threads end with their attempts."""
