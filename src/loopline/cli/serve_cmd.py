"""``loopline serve``: run the model server over this workspace's deployments.

One process by default: the first Ctrl-C or SIGTERM drops readiness, waits
``--drain-seconds``, then finishes the requests in flight and flushes the prediction log.
``--workers N`` runs N processes on one port under uvicorn's supervisor, each building the
app with ``worker_app`` from the options this command passes in ``LOOPLINE_SERVE_SPEC``;
each worker drains the same way when the supervisor passes the signal on, and ``/metrics``
adds up every worker's series (Prometheus multiprocess mode, in a directory made for this
run and removed after it).
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from starlette.applications import Starlette

from loopline.app import Workspace
from loopline.cli.context import open_workspace, options
from loopline.cli.output import console
from loopline.serving.app import create_app
from loopline.serving.metrics import shared_metrics_dir
from loopline.serving.server import ServerOptions, drain_on_signals, serve

SPEC_ENV = "LOOPLINE_SERVE_SPEC"
WORKER_APP = "loopline.cli.serve_cmd:worker_app"


def worker_app() -> Starlette:
    """Build the app in a worker process from the spec ``loopline serve`` left in the env.

    Raises:
        ConfigurationError, NotFoundError: when the workspace cannot be opened.
    """
    spec = json.loads(os.environ[SPEC_ENV])
    workspace = Workspace.open(spec["workspace"], overrides=spec["overrides"])
    try:
        config = workspace.serving_config(**spec["options"])
    except Exception:
        workspace.close()
        raise
    drain_seconds = float(spec["drain_seconds"])
    return create_app(config, on_shutdown=workspace.close,
                      on_startup=lambda runtime: drain_on_signals(runtime.begin_drain,
                                                                  drain_seconds))


def serve_command(  # noqa: PLR0913 - one parameter per flag is how typer declares them
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes sharing the port.")] = 1,
    deployment: Annotated[list[str] | None, typer.Option(
        "--deployment", help="Serve only this deployment (repeat for several; default all).",
    )] = None,
    batch_max_rows: Annotated[int, typer.Option(
        help="Micro-batch up to this many rows per predict call (0: score each request "
             "directly in the model's worker thread; 1: queue them one at a time).")] = 0,
    batch_wait_ms: Annotated[float, typer.Option(
        help="How long a batch may wait for company while traffic is concurrent.")] = 2.0,
    max_rows: Annotated[int, typer.Option(help="Rows allowed per request.")] = 1024,
    max_queue_rows: Annotated[int, typer.Option(
        help="Rows admitted and not yet answered at most; past it requests get 503 with "
             "Retry-After.")] = 4096,
    drain_seconds: Annotated[float, typer.Option(
        help="On shutdown, report not-ready this long before closing the listener.")] = 0.0,
) -> None:
    """Serve the deployments' models over HTTP (Open Inference Protocol v2, MLflow, native)."""
    server = ServerOptions(host=host, port=port, workers=workers,
                           drain_seconds=drain_seconds).checked()
    chosen: dict[str, Any] = {"deployments": list(deployment) if deployment else None,
                              "batch_max_rows": batch_max_rows,
                              "batch_wait_ms": batch_wait_ms, "max_rows": max_rows,
                              "max_queue_rows": max_queue_rows}
    workspace = open_workspace(ctx)
    try:
        config = workspace.serving_config(**chosen)  # bad options fail here, before binding
        console.print(f"serving on http://{host}:{port} ({workers} worker"
                      f"{'s' if workers > 1 else ''}); Ctrl-C to stop")
        if workers == 1:
            serve(create_app(config), server)
            return
        os.environ[SPEC_ENV] = json.dumps({
            "workspace": str(workspace.root), "overrides": options(ctx).overrides(),
            "options": chosen, "drain_seconds": drain_seconds})
    finally:
        workspace.close()
    with shared_metrics_dir():
        serve(WORKER_APP, server)


def register(root: typer.Typer) -> None:
    """Add ``serve`` to the root command."""
    root.command("serve")(serve_command)
