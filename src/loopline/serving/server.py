"""Running the model server on uvicorn (uvloop, httptools), with a graceful shutdown.

In one process, the first SIGTERM/SIGINT drops readiness at once (``ServingRuntime.
begin_drain``), waits ``drain_seconds`` so load balancers stop sending, then lets uvicorn
stop accepting connections and finish the requests in flight; the app's lifespan then
flushes the prediction log. A second signal stops at once. With ``workers > 1`` uvicorn's
supervisor runs the app factory named by ``factory`` in each worker process; there each
worker drains as uvicorn does (listeners closed, in-flight requests finished, then the
lifespan flushes), without the readiness delay.
"""

from __future__ import annotations

import socket
import threading
import time
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


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first stop signal drops readiness before it stops accepting."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float = 0.0) -> None:
        super().__init__(config)
        self._drain_seconds = drain_seconds
        self._draining = False

    def begin_shutdown(self) -> None:
        """Drop readiness, then stop after the drain delay (what a stop signal does)."""
        runtime = _runtime_of(getattr(self.config, "loaded_app", None))
        if runtime is not None:
            runtime.begin_drain()
        if self._drain_seconds <= 0:
            self.should_exit = True
            return
        timer = threading.Timer(self._drain_seconds, self._exit)
        timer.daemon = True
        timer.start()

    def _exit(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Drain on the first signal; behave as uvicorn does on the next."""
        if self._draining:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._captured_signals.append(sig)
        self.begin_shutdown()


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


__all__ = ["DrainingServer", "ServerOptions", "ThreadedServer", "serve", "uvicorn_config"]
