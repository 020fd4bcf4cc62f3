"""Running the model server on uvicorn (uvloop, httptools), with a graceful shutdown.

The first SIGTERM/SIGINT drops readiness at once (``ServingRuntime.begin_drain``), waits
``drain_seconds`` so load balancers stop sending, then lets uvicorn stop accepting
connections and finish the requests in flight; the app's lifespan then flushes the
prediction log. A second signal stops at once. In one process ``DrainingServer`` does this;
with ``workers > 1`` uvicorn's supervisor runs the app factory named by ``factory`` in each
worker process, passes its stop signal on to every worker, and each worker's app wraps
uvicorn's signal handler the same way at start-up (``drain_on_signals``).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from loopline.core.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how uvicorn serves: address, processes, and the shutdown timing."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    drain_seconds: float = 0.0
    graceful_timeout: float = 30.0
    log_level: str = "warning"

    def checked(self) -> ServerOptions:
        """Return the options when usable.

        Raises:
            InvalidArgumentError: naming the option out of range.
        """
        if not 0 <= self.port <= 65535:
            raise InvalidArgumentError("port", f"{self.port} must be 0-65535")
        if not 1 <= self.workers <= 256:
            raise InvalidArgumentError("workers", f"{self.workers} must be 1-256")
        if not 0 <= self.drain_seconds <= 600:
            raise InvalidArgumentError("drain_seconds", f"{self.drain_seconds} must be 0-600")
        return self


def uvicorn_config(app: Any, options: ServerOptions, factory: bool = False) -> uvicorn.Config:
    """Return uvicorn's configuration: uvloop, httptools, no access log, lifespan on."""
    return uvicorn.Config(
        app, host=options.host, port=options.port, workers=options.workers, loop="uvloop",
        http="httptools", lifespan="on", access_log=False, log_level=options.log_level,
        timeout_graceful_shutdown=int(options.graceful_timeout), factory=factory)


def _runtime_of(app: Any) -> Any:
    """Return ``app.state.serving`` of the app under uvicorn's middleware wrappers, if any."""
    for _ in range(16):
        state = getattr(app, "state", None)
        found = getattr(state, "serving", None) if state is not None else None
        if found is not None:
            return found
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


SignalHandler = Callable[[int, FrameType | None], Any]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalDrain:
    """A stop-signal handler: the first signal drains, then stops; a later one stops at once.

    Draining is ``begin_drain()`` (readiness drops) and, ``drain_seconds`` later (at once
    when 0), ``stop(sig)``: uvicorn's own handler, which closes the listener and
    finishes the requests in flight.
    """

    def __init__(self, begin_drain: Callable[[], None], stop: Callable[[int], None],
                 drain_seconds: float) -> None:
        self._begin_drain = begin_drain
        self._stop = stop
        self._drain_seconds = drain_seconds
        self._draining = False

    @property
    def draining(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._draining

    def __call__(self, sig: int, frame: FrameType | None = None) -> None:
        """Handle one stop signal."""
        if self._draining:
            self._stop(sig)
            return
        self._draining = True
        self._begin_drain()
        if self._drain_seconds <= 0:
            self._stop(sig)
            return
        timer = threading.Timer(self._drain_seconds, self._stop, (sig,))
        timer.daemon = True
        timer.start()


def drain_on_signals(begin_drain: Callable[[], None], drain_seconds: float) -> bool:
    """Wrap the stop-signal handlers uvicorn installed in this process in one ``SignalDrain``.

    Called from a worker app's lifespan start-up, which runs after uvicorn's server has
    installed its handlers; uvicorn restores its own handlers when it stops. Returns whether
    the handlers were wrapped (only the main thread can, and only callable handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    originals: dict[int, SignalHandler] = {}
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if not callable(handler):
            return False
        originals[sig] = handler
    drain = SignalDrain(begin_drain, lambda sig: originals[sig](sig, None), drain_seconds)
    for sig in STOP_SIGNALS:
        signal.signal(sig, drain)
    return True


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first stop signal drops readiness before it stops accepting."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float = 0.0) -> None:
        super().__init__(config)
        self._drain = SignalDrain(self._begin_drain, self._uvicorn_exit, drain_seconds)

    def _begin_drain(self) -> None:
        runtime = _runtime_of(getattr(self.config, "loaded_app", None))
        if runtime is not None:
            runtime.begin_drain()

    def _uvicorn_exit(self, sig: int) -> None:
        super().handle_exit(sig, None)

    def begin_shutdown(self, sig: int = signal.SIGTERM) -> None:
        """Drop readiness, then stop after the drain delay (what a first stop signal does)."""
        self._drain(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Drain on the first signal; behave as uvicorn does on the next."""
        self._drain(sig, frame)


def serve(app: Any, options: ServerOptions) -> None:
    """Serve ``app`` until stopped.

    With ``options.workers > 1``, ``app`` must be the import string of an app factory
    (``"package.module:function"``), called in each worker process.

    Raises:
        InvalidArgumentError: for bad options, or several workers without an import string.
    """
    options = options.checked()
    if options.workers > 1:
        if not isinstance(app, str):
            raise InvalidArgumentError("workers", "several workers need the app as an import "
                                                  "string of a factory")
        config = uvicorn_config(app, options, factory=True)
        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
        return
    DrainingServer(uvicorn_config(app, options), options.drain_seconds).run()


class ThreadedServer:
    """A server running in a thread of this process on a free loopback port (demo, tests).

    ``url`` is where it listens; ``stop`` takes the graceful path (in-flight requests
    finish, the lifespan flushes the prediction log) and waits for the thread.
    """

    def __init__(self, app: Any, options: ServerOptions | None = None,
                 start_timeout: float = 30.0) -> None:
        """Start serving ``app`` (``options.port`` is ignored: the port is chosen free).

        Raises:
            RuntimeError: when uvicorn has not started within ``start_timeout`` seconds.
        """
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        chosen = replace(options or ServerOptions(), host="127.0.0.1", port=port)
        self.url = f"http://127.0.0.1:{port}"
        self.server = DrainingServer(uvicorn_config(app, chosen), chosen.drain_seconds)
        self._timeout = start_timeout
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the model server did not start")
            time.sleep(0.01)

    @property
    def alive(self) -> bool:
        """Whether the server thread still runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop gracefully, wait for the thread, and close the socket."""
        self.server.should_exit = True
        self._thread.join(self._timeout)
        self._sock.close()


__all__ = ["DrainingServer", "ServerOptions", "SignalDrain", "ThreadedServer", "drain_on_signals",
           "serve", "uvicorn_config"]
