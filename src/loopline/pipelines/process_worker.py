"""The loop a process-executor worker runs: receive a task call, run it, send its result back.

It runs in a fresh, spawned interpreter and shares nothing with the driver but its pipe: no
database engine, no open files; each call opens the artifact store it names. Messages are
pickled bytes. The worker says ``READY`` once it has started; for each ``TaskCall`` it says
``STARTED`` once the call is unpickled and its task's module imported, so the driver counts the
attempt's timeout from there, then answers with a ``CallResult`` whose error is safe to
unpickle anywhere (``CallResult.for_process``). A call that cannot be unpickled is answered
at once, without ``STARTED``. The worker stops on ``STOP``, when the pipe closes, or when the
driver process dies.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from loopline.pipelines.remote import CallResult, RemoteTaskFailure, TaskCall, execute_call

READY = b"ready"
STARTED = b"started"
STOP = b"stop"  # never a pickle: pickles of protocol 2 and later start with 0x80
EXIT_ORPHANED = 70  # the driver died; the attempt is abandoned with the worker


def serve(connection: Connection) -> None:
    """Answer task calls on ``connection`` until told to stop or the driver goes away."""
    # Ctrl+C reaches the whole process group: the driver decides what happens to attempts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    with connection:
        try:
            connection.send_bytes(READY)
            while True:
                message = connection.recv_bytes()
                if message == STOP:
                    return
                connection.send_bytes(answer(message, connection.send_bytes))
        except (EOFError, OSError):  # the driver closed its end or died
            return


def answer(message: bytes, started: Callable[[bytes], None] | None = None) -> bytes:
    """Run the pickled ``TaskCall`` in ``message``; return its pickled, process-safe result.

    ``started`` is called with ``STARTED`` once the call is unpickled and its function
    imported, right before the task runs.

    Never raises: a call that cannot be unpickled or run, and a result that cannot be
    pickled, come back as a result whose error is a ``RemoteTaskFailure``.
    """
    logs: dict[str, dict[str, object]] = {}
    try:
        call = pickle.loads(message)
        if not isinstance(call, TaskCall):
            raise TypeError(f"expected a TaskCall, got {type(call).__name__}")
        call.function()  # import the task's module now, so its timeout does not pay for it
        if started is not None:
            started(STARTED)
        result = execute_call(call).for_process()
        logs = result.logs
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which fails the attempt
        failure = CallResult(None, RemoteTaskFailure.from_exception(exc), dict(logs))
        return pickle.dumps(failure, protocol=pickle.HIGHEST_PROTOCOL)


def _exit_with_parent() -> None:
    """End this process when the driver dies, even in the middle of a hanging task."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing (a test calling serve directly)
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="loopline-driver-watch", daemon=True).start()
