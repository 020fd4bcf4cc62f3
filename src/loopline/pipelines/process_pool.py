"""The process executor's invoker: task attempts in a pool of reusable worker processes.

Workers are spawned (never forked: the driver has threads and database pools), started
lazily, at most ``max_workers``, and each serves one call at a time. A timeout kills the
worker's process, so a hanging attempt really stops; a worker that dies fails only its
attempt; either way the worker is discarded and the next call starts a fresh one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.util import Finalize

from loopline.core.errors import InvalidArgumentError
from loopline.pipelines.executors import check_workers
from loopline.pipelines.process_worker import READY, STARTED, STOP, serve
from loopline.pipelines.remote import (
    AttemptTimeoutError,
    CallResult,
    RemoteTaskFailure,
    TaskCall,
    WorkerLostError,
)

START_SECONDS = 120.0  # a spawned worker imports loopline before it is ready
LOAD_SECONDS = 120.0  # a worker unpickles a call (importing its task's module) before it runs
STOP_SECONDS = 2.0  # how long close() waits for idle workers to stop before killing them
REAP_SECONDS = 10.0  # how long to wait for a killed or dying worker to be reaped


@dataclass(eq=False, slots=True)
class _Worker:
    """One worker process and the driver's end of its pipe."""

    process: BaseProcess
    connection: Connection
    disposed: bool = False
    exit_code: int | None = None

    def dispose(self, grace: float = 0.0) -> int | None:
        """Wait up to ``grace`` seconds for the process to end, kill it; return its exit code.

        Only the thread that holds the worker calls this; later calls return the same code.
        """
        if self.disposed:
            return self.exit_code
        self.disposed = True
        process = self.process
        if grace > 0:
            process.join(grace)
        if process.is_alive():
            process.kill()
            process.join(REAP_SECONDS)
        self.exit_code = process.exitcode
        self.connection.close()
        if self.exit_code is not None:  # close() refuses a process that is still running
            process.close()
        return self.exit_code


class _Pool:
    """The workers of one invoker; shut down by ``close()`` or when the invoker is collected."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.busy: set[_Worker] = set()
        self.closed = False

    def take_idle(self) -> _Worker | None:
        """Return an idle worker that is still alive, discarding dead ones."""
        while True:
            with self.lock:
                if not self.idle:
                    return None
                worker = self.idle.pop()
                self.busy.add(worker)
            if worker.process.is_alive():
                return worker
            self.release(worker, keep=False)

    def release(self, worker: _Worker, keep: bool) -> None:
        """Make a borrowed worker idle again, or dispose of it (always once the pool closed)."""
        with self.lock:
            self.busy.discard(worker)
            if keep and not self.closed:
                self.idle.append(worker)
                return
        worker.dispose()

    def shutdown(self) -> None:
        """Stop idle workers (asking first) and kill busy ones; their callers report them."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            idle, self.idle = self.idle, []
            busy = list(self.busy)
        for worker in busy:
            # ValueError: its caller disposed of it meanwhile (the process object is closed).
            with contextlib.suppress(ValueError):
                worker.process.kill()
        for worker in idle:
            with contextlib.suppress(OSError):  # already gone: dispose() reaps it
                worker.connection.send_bytes(STOP)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in idle:
            worker.dispose(grace=max(0.0, deadline - time.monotonic()))


class ProcessInvoker:
    """Runs task calls in a pool of at most ``max_workers`` spawned worker processes.

    Satisfies ``loopline.pipelines.remote.Invoker``. ``invoke`` may be called from up to
    ``max_workers`` threads at once; more callers wait for a free worker. A new worker
    pays for a fresh interpreter importing loopline (about a second) before its first call,
    and each call for unpickling its arguments and importing its task's module; neither
    counts against the call's timeout, which starts when the task does.
    """

    name = "process"

    def __init__(self, max_workers: int = 4) -> None:
        """Create the invoker; no worker starts before the first call.

        Raises:
            InvalidArgumentError: when ``max_workers`` is not an integer from 1 to 256.
        """
        self.max_workers = check_workers(max_workers)
        self._context = multiprocessing.get_context("spawn")
        self._slots = threading.BoundedSemaphore(max_workers)
        self._pool = _Pool()
        # Runs on close(), when the invoker is collected, and at interpreter exit before
        # multiprocessing joins its children (which would wait for idle workers forever).
        self._finalizer = Finalize(self, self._pool.shutdown, exitpriority=10)

    def invoke(self, call: TaskCall, timeout: float | None) -> CallResult:
        """Run ``call`` on a worker process and return how it ended.

        A timeout kills the worker and ends the call with ``AttemptTimeoutError``; a worker
        that dies (or cannot start) ends it with ``WorkerLostError``; an exception from the
        task comes back as a ``RemoteTaskFailure``.

        Raises:
            InvalidArgumentError: when the invoker is closed, the artifact store is
                ``memory://``, the task is not defined at a module's top level, or the
                arguments cannot be pickled.
        """
        payload = self._prepare(call)
        with self._slots:
            try:
                worker = self._pool.take_idle() or self._start()
            except WorkerLostError as exc:
                return CallResult(error=exc)
            keep = False
            try:
                result, keep = self._exchange(worker, payload, timeout)
            finally:  # an interrupted exchange leaves the worker mid-call: dispose of it
                self._pool.release(worker, keep)
        return result

    def close(self) -> None:
        """Stop every worker this invoker started; calls still running end as lost; idempotent."""
        self._finalizer()

    def _prepare(self, call: TaskCall) -> bytes:
        if self._pool.closed:
            raise InvalidArgumentError("invoker", "is closed; create a new ProcessInvoker")
        if call.blobs.in_memory:
            raise InvalidArgumentError(
                "executor", f"cannot run task {call.task_key!r} with artifact store "
                f"{call.blobs.url!r}: the process executor needs an artifact store its "
                "workers can reach; memory:// lives inside one process")
        portable = call.for_process()  # raises for a task defined inside a function
        try:
            return pickle.dumps(portable, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidArgumentError(
                f"task {call.task_key!r} arguments",
                f"must be picklable to run in another process ({exc})") from exc

    def _start(self) -> _Worker:
        """Start a worker and wait until it is ready; it counts as busy from the start.

        Raises:
            InvalidArgumentError: when the invoker was closed meanwhile.
            WorkerLostError: when the worker died or did not become ready in time.
        """
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=serve, args=(theirs,),
                                        name="loopline-process-worker")
        try:
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its own copy; ours must go for EOF to work
        worker = _Worker(process, ours)
        with self._pool.lock:
            closed = self._pool.closed
            if not closed:
                self._pool.busy.add(worker)
        if closed:
            worker.dispose()
            raise InvalidArgumentError("invoker", "is closed; create a new ProcessInvoker")
        try:
            problem = _await_ready(ours)
        except BaseException:
            self._pool.release(worker, keep=False)
            raise
        if problem is None:
            return worker
        self._pool.release(worker, keep=False)
        raise WorkerLostError(f"a worker process {problem} (it ended with "
                              f"{_describe_exit(worker.exit_code)})")

    def _exchange(self, worker: _Worker, payload: bytes,
                  timeout: float | None) -> tuple[CallResult, bool]:
        """Send the call and wait for the answer; return the result and whether to keep it."""
        connection = worker.connection
        try:
            connection.send_bytes(payload)
            answer = _receive(connection, LOAD_SECONDS, (
                f"the worker process did not start the attempt within {LOAD_SECONDS:g} s "
                "and was killed"))
            if answer == STARTED:  # the task runs from here: its timeout starts now
                answer = _receive(connection, timeout, (
                    f"the attempt ran longer than its timeout of {timeout or 0:g} s and its "
                    "process was killed"))
        except TimeoutError as exc:  # before OSError, its base class
            worker.dispose()  # kill now: the attempt must not outlive its timeout
            return CallResult(error=AttemptTimeoutError(str(exc))), False
        except (EOFError, OSError):
            return CallResult(error=self._lost(worker)), False
        try:
            result = pickle.loads(answer)
        except Exception as exc:  # noqa: BLE001 - an error class this process cannot import
            return CallResult(error=RemoteTaskFailure.from_exception(exc)), True
        if not isinstance(result, CallResult):
            return CallResult(error=WorkerLostError(
                f"the worker process answered with a {type(result).__name__}")), False
        return result, True

    def _lost(self, worker: _Worker) -> WorkerLostError:
        pid = worker.process.pid
        code = worker.dispose(grace=REAP_SECONDS)  # it closed the pipe, so it is ending
        why = "the invoker was closed" if self._pool.closed else (
            "killed, out of memory, or the task ended the process")
        return WorkerLostError(
            f"the worker process (pid {pid}) running the attempt ended with "
            f"{_describe_exit(code)} before it answered ({why})")


def _receive(connection: Connection, timeout: float | None, late: str) -> bytes:
    """Return the next message, or raise ``TimeoutError(late)`` when none came in time."""
    if not connection.poll(timeout):
        raise TimeoutError(late)
    return connection.recv_bytes()


def _await_ready(connection: Connection) -> str | None:
    """Wait for a new worker's ``READY``; return what went wrong, or None."""
    try:
        if not connection.poll(START_SECONDS):
            return f"did not become ready within {START_SECONDS:g} s"
        if connection.recv_bytes() != READY:
            return "sent something else than READY"
    except (EOFError, OSError):
        return "died while starting"
    return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
