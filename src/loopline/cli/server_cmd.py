"""``loopline server [FILE.py ...]``: the control-plane API and the loop's background work.

One process serves the HTTP API (``/api/v1``) and, unless ``--no-background``, does what
``loopline scheduler`` does: schedules and triggers of the ``@pipeline``s in the files,
canary judging, monitoring, alert hand-over and playbooks. Runs started or resumed through
the API execute on the same bounded pool (``--max-runs`` at once), as the caller; while
``--max-backlog`` runs are queued or executing there, the API refuses more with 503. Several
server processes may share one metadata store: each slot and event starts one run, and each
duty runs in the one process holding its lease (``loopline.api.background``).

The first Ctrl-C or SIGTERM stops accepting connections and finishes the requests in
flight, then stops the background work and waits for its runs; a second one stops at once
(the runs resume from their last finished task on the next start). ``--ssl-certfile`` and
``--ssl-keyfile`` (both or neither) serve HTTPS.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import threading
from contextlib import closing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import uvicorn

from loopline.api import ApiOptions, create_api
from loopline.api.background import BackgroundOptions, BackgroundWork
from loopline.cli.context import open_workspace, options
from loopline.cli.output import console
from loopline.cli.scheduler_cmd import load_scheduled
from loopline.core.errors import InvalidArgumentError
from loopline.serving.server import STOP_SIGNALS, DrainingServer

log = logging.getLogger(__name__)
GRACEFUL_SECONDS = 30  # how long requests in flight may take to finish after a stop signal

Files = Annotated[list[str] | None, typer.Argument(
    metavar="[FILE.py]...",
    help="FILE.py (its @pipelines) or FILE.py:PIPELINE; several may be given. Their schedules "
         "and triggers fire; callers may start them through the API (POST /runs).")]


class LogLevel(StrEnum):
    """How much the server logs."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the API listens and with which certificate."""

    host: str
    port: int
    certfile: Path | None
    keyfile: Path | None
    log_level: str

    @property
    def url(self) -> str:
        """The API's base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.certfile else 'http'}://{host}:{self.port}/api/v1"


def _check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Refuse one TLS file without the other, a missing file, or a pair that does not load.

    Raises:
        InvalidArgumentError: naming the flag at fault.
    """
    if certfile is None and keyfile is None:
        return
    if keyfile is None:
        raise InvalidArgumentError("--ssl-keyfile", "is needed with --ssl-certfile (give both "
                                                    "for HTTPS, or neither)")
    if certfile is None:
        raise InvalidArgumentError("--ssl-certfile", "is needed with --ssl-keyfile (give both "
                                                     "for HTTPS, or neither)")
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not path.is_file():
            raise InvalidArgumentError(flag, f"{str(path)!r} is not a file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidArgumentError("--ssl-certfile", f"the certificate and key do not load "
                                                     f"(PEM files of one pair?): {exc}") from exc


def _bind(host: str, port: int) -> socket.socket:
    """Return a socket bound to ``host:port`` (uvicorn listens on it).

    Raises:
        InvalidArgumentError: naming ``--port`` when the address cannot be bound.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidArgumentError("--port", f"cannot listen on {host}:{port}: "
                                             f"{exc.strerror or exc}") from exc
    return sock


def _uvicorn_config(app: Any, listen: Listen) -> uvicorn.Config:
    """Return uvicorn's configuration: ``serving.server``'s, plus the TLS files."""
    return uvicorn.Config(
        app, host=listen.host, port=listen.port, loop="uvloop", http="httptools",
        lifespan="on", access_log=False, log_level=listen.log_level,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        ssl_certfile=str(listen.certfile) if listen.certfile else None,
        ssl_keyfile=str(listen.keyfile) if listen.keyfile else None)


class _StopSignals:
    """The stop-signal handlers of the two phases of a stop: serving, then background work.

    While serving, a signal asks uvicorn to stop (uvicorn installs its own handlers while it
    runs, and when it returns restores these and raises the signal it caught again: they
    must not end the process before the runs finish). Once serving is done, a second signal
    stops the process at once. On exit the handlers found at the start come back. Outside
    the main thread (where handlers cannot be set) this does nothing.
    """

    def __init__(self, server: uvicorn.Server) -> None:
        self._server = server
        self._previous: dict[int, Any] = {}

    def _install(self, handler: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous.setdefault(sig, signal.getsignal(sig))
                signal.signal(sig, handler)

    def _stop_serving(self, sig: int, frame: FrameType | None) -> None:
        self._server.should_exit = True

    @staticmethod
    def _stop_now(sig: int, frame: FrameType | None) -> None:
        log.warning("second stop signal: stopping now; unfinished runs resume on the next start")
        os._exit(128 + sig)

    def draining(self) -> None:
        """Make a stop signal end the process at once from now on (serving is over)."""
        self._install(self._stop_now)

    def __enter__(self) -> _StopSignals:
        self._install(self._stop_serving)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _announce(listen: Listen, background: bool, work: BackgroundWork, pipelines: int) -> None:
    lines = [f"loopline server listening on {listen.url}"]
    lines.append(f"background work: {pipelines} pipelines, a round every "
                 f"{work.options.interval:g}s, {work.options.max_runs} runs at once (the API "
                 f"refuses more at {work.options.backlog_limit} queued or executing), duty "
                 f"leases held as {work.holder}" if background
                 else "background work off (--no-background); runs started through the API "
                      "still execute here")
    lines.append("every call but /api/v1/health needs a token: loopline tokens create "
                 "--user NAME --role viewer|developer|approver|admin")
    lines.append("Ctrl-C or SIGTERM stops it (requests and runs in flight finish first)")
    for line in lines:
        console.print(line, soft_wrap=True)


def _run(server: DrainingServer, sock: socket.socket, work: BackgroundWork,
         background: bool) -> None:
    """Serve until a stop signal, then stop the background work and wait for its runs."""
    with _StopSignals(server) as signals:
        try:
            if background:
                work.start()
            server.run(sockets=[sock])
        finally:
            signals.draining()
            if work.in_flight:
                console.print(f"stopping: waiting for {work.in_flight} runs to finish "
                              "(a second Ctrl-C or SIGTERM stops at once)", soft_wrap=True)
            work.stop()
    console.print("stopped")


def server(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    files: Files = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    interval: Annotated[float, typer.Option(
        min=0.05, max=3600.0, help="Seconds between rounds of the background work.")] = 1.0,
    max_runs: Annotated[int, typer.Option(
        "--max-runs", min=1, max=256,
        help="Runs this server executes at once, all together: scheduled, triggered, started "
             "by playbooks, and started or resumed through the API; more wait in its queue. "
             "Each run's tasks run on the workspace's executor.")] = 4,
    max_backlog: Annotated[int | None, typer.Option(
        "--max-backlog", min=1, max=100_000,
        help="Runs queued or executing here at which the API refuses to start or resume one "
             "more (503, Retry-After); at least --max-runs. [default: 4 x --max-runs]",
        show_default=False)] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(
        "--ssl-certfile", help="PEM certificate (chain) to serve HTTPS with; needs "
                               "--ssl-keyfile.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(
        "--ssl-keyfile", help="PEM private key of --ssl-certfile.")] = None,
    no_background: Annotated[bool, typer.Option(
        "--no-background", help="Serve the API only: no schedules, triggers or duties "
                                "(runs started through the API still execute here).")] = False,
    log_level: Annotated[LogLevel, typer.Option(
        "--log-level", help="How much to log.")] = LogLevel.info,
) -> None:
    """Serve the control-plane API and run the loop's background work."""
    _check_tls(ssl_certfile, ssl_keyfile)
    rounds = BackgroundOptions(interval, max_runs, max_backlog).checked()
    pipelines = load_scheduled(files or [])
    if not options(ctx).debug:  # --debug already logs everything
        logging.getLogger("loopline").setLevel(log_level.value.upper())
    with closing(_bind(host, port)) as sock, open_workspace(ctx) as workspace:
        listen = Listen(host, int(sock.getsockname()[1]), ssl_certfile, ssl_keyfile,
                        log_level.value)
        work = BackgroundWork(workspace, pipelines, options=rounds)
        app = create_api(workspace, ApiOptions(), pipelines, execute=work)
        _announce(listen, not no_background, work, len(pipelines))
        _run(DrainingServer(_uvicorn_config(app, listen)), sock, work, not no_background)


def register(root: typer.Typer) -> None:
    """Add ``server`` to the root command."""
    root.command("server")(server)
