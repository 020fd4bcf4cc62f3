"""The model server's ASGI app: endpoints, and the lifecycle of what serves them.

``create_app(ServingConfig(...))`` builds a Starlette app. At start-up (the ASGI lifespan)
it starts the prediction writer, the serving-stats recorder and, in a thread, the first load
of the routing table (``TableSource``), so the server listens at once: liveness answers 200,
readiness 503 until every routed version is loaded, inference 503 with ``Retry-After``. The
table source then polls for deployment changes and swaps tables off the request path. At
shutdown (the lifespan's end) readiness reports 503, queued batches and shadows finish, and
the prediction log is flushed. Readiness drops *before* the listener closes, and
``drain_seconds`` before it (``serving.server``), in one process and in each of several
workers.

    GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}, /v2/models/{name}/ready
    POST /v2/models/{name}/infer          Open Inference Protocol v2 (protocol_v2)
    POST /invocations                     MLflow scoring formats (protocol_mlflow)
    POST /predict/{deployment}            JSON records (protocol_native)
    POST /feedback                        labels by request id (protocol_native)
    GET  /metrics                         Prometheus text
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopline._version import __version__
from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name
from loopline.core.ports import ModelLoader
from loopline.data.prediction_log import PredictionLog
from loopline.data.prediction_writer import PredictionWriter, WriterOptions
from loopline.serving.answers import RequestRefused, answer, plain, refusal
from loopline.serving.metrics import CONTENT_TYPE, ServingMetrics
from loopline.serving.payloads import MIB, Limits
from loopline.serving.protocol_mlflow import MlflowWire
from loopline.serving.protocol_native import NativeWire, feedback
from loopline.serving.protocol_v2 import V2Wire, metadata
from loopline.serving.request_ids import HEADER, request_id
from loopline.serving.scoring import Scoring, Wire
from loopline.serving.stats_recorder import StatsRecorder, default_instance
from loopline.serving.table_source import DeploymentReader, TableSource
from loopline.store import MetadataStore
from loopline.store.deployment_queries import DeploymentQueries

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT = 30.0
MAX_LOAD_RETRY = 30.0
GAUGE_REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """What a model server needs: where deployments and models come from, and its limits.

    ``deployments`` limits the server to those names (all when None). ``predict`` never runs
    on the event loop. ``batch_max_rows``: 0 scores each request directly in the model's
    worker thread (the least latency); 1 queues requests to it one at a time; above 1
    micro-batches concurrent requests (models that cannot batch are still scored one request
    at a time). ``max_queue_rows`` bounds the rows admitted and not yet answered: past it
    requests are refused at once with 503 and ``Retry-After``. ``queries`` replaces the store's
    deployment reads (tests); ``record_stats`` writes per-version counts for rollout
    analysis. ``actor`` is who the server acts as in the records it writes.
    """

    store: MetadataStore
    loader: ModelLoader
    prediction_log: PredictionLog
    actor: str
    deployments: Sequence[str] | None = None
    batch_max_rows: int = 0
    batch_wait_ms: float = 2.0
    max_body_bytes: int = 10 * MIB
    max_rows: int = 1024
    max_queue_rows: int = 4096
    poll_seconds: float = 0.5
    writer_options: WriterOptions | None = None
    record_stats: bool = True
    instance: str | None = None
    queries: DeploymentReader | None = None

    def __post_init__(self) -> None:
        """Check the limits and names.

        Raises:
            InvalidArgumentError: naming the option that is out of range.
        """
        for field, value, low, high in (
                ("max_rows", self.max_rows, 1, 1_000_000),
                ("max_body_bytes", self.max_body_bytes, 1, 1 << 30),
                ("max_queue_rows", self.max_queue_rows, 1, 10_000_000),
                ("batch_max_rows", self.batch_max_rows, 0, 1_000_000)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgumentError(field, f"{value!r} must be a whole number from {low} "
                                                  f"to {high}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise InvalidArgumentError("batch_wait_ms", f"{self.batch_wait_ms!r} must be 0-1000")
        if not 0 < self.poll_seconds <= 3600:
            raise InvalidArgumentError("poll_seconds", f"{self.poll_seconds!r} must be in "
                                                       "(0, 3600]")
        for name in self.deployments or ():
            validate_name(name, "deployment")


class ServingRuntime:
    """The parts that live as long as the server process: table, writer, stats, metrics."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.limits = Limits(config.max_body_bytes, config.max_rows)
        self.metrics = ServingMetrics()
        self._stop = threading.Event()
        self._loader_thread: threading.Thread | None = None
        self._writer: PredictionWriter | None = None
        self._stats: StatsRecorder | None = None
        self._source: TableSource | None = None
        self._scoring: Scoring | None = None

    @property
    def loaded_scoring(self) -> Scoring | None:
        """The request path, or None before start-up."""
        return self._scoring

    @property
    def scoring(self) -> Scoring:
        """The request path.

        Raises:
            RequestRefused: 503 before start-up.
        """
        if self._scoring is None:
            raise RequestRefused(503, "server", "is starting; retry shortly")
        return self._scoring

    def start(self) -> None:
        """Start the writer and stats threads, and load the first routing table in a thread."""
        config = self.config
        self._writer = PredictionWriter(config.prediction_log, config.writer_options)
        if config.record_stats:
            self._stats = StatsRecorder.for_store(config.store,
                                                  config.instance or default_instance())
        self._scoring = Scoring(self.metrics, self._writer, self._stats, config.store.clock,
                                self.limits, (config.batch_max_rows, config.batch_wait_ms),
                                config.max_queue_rows)
        self._source = TableSource(config.queries or DeploymentQueries(config.store.engine),
                                   config.loader, self._scoring.swap, config.poll_seconds,
                                   config.deployments, self.metrics)
        self._loader_thread = threading.Thread(target=self._load_first, daemon=True,
                                               name="loopline-first-table")
        self._loader_thread.start()
        if self.metrics.shared_dir is not None:
            # each worker's gauges must be current whichever worker renders the sum
            threading.Thread(target=self._refresh_gauges, daemon=True,
                             name="loopline-gauges").start()

    def _refresh_gauges(self) -> None:
        while not self._stop.wait(GAUGE_REFRESH_SECONDS):
            if self._scoring is not None:
                self._scoring.refresh_gauges()

    def _load_first(self) -> None:
        """Load the first table, retrying with backoff while the store is unreachable."""
        delay = min(self.config.poll_seconds, 1.0)
        while not self._stop.is_set() and self._source is not None and \
                self._scoring is not None:
            try:
                table = self._source.load_initial()
            except Exception:  # the database may be starting too: keep trying, stay unready
                logger.exception("could not load the routing table; retrying in %.1f s", delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_LOAD_RETRY)
            else:
                self._scoring.swap(table)
                return

    def begin_drain(self) -> None:
        """Report not ready from now on (the first step of a graceful shutdown)."""
        if self._scoring is not None:
            self._scoring.draining = True

    async def stop(self) -> None:
        """Drop readiness, stop polling, finish batches, flush the log and the stats."""
        self.begin_drain()
        self._stop.set()
        loop = asyncio.get_running_loop()
        if self._loader_thread is not None:
            await loop.run_in_executor(None, self._loader_thread.join)
        if self._source is not None:
            await loop.run_in_executor(None, self._source.close)
        if self._scoring is not None:
            await self._scoring.close()
        if self._writer is not None:
            try:
                await loop.run_in_executor(None, self._writer.close, FLUSH_TIMEOUT)
            except Exception:  # report, and still flush the stats below
                logger.exception("the prediction log could not be flushed at shutdown")
        if self._stats is not None:
            await loop.run_in_executor(None, self._stats.close)
        self.metrics.close()


def _rid(request: Request) -> str:
    return request_id(request.headers.get(HEADER))


class Endpoints:
    """The handlers, each a small method over the runtime."""

    def __init__(self, runtime: ServingRuntime) -> None:
        self._runtime = runtime
        self._v2, self._mlflow, self._native = V2Wire(), MlflowWire(), NativeWire()

    def routes(self) -> list[Route]:
        """Return the app's routes."""
        return [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/invocations", self.invocations, methods=["POST"]),
            Route("/predict/{deployment}", self.predict, methods=["POST"]),
            Route("/feedback", self.feedback, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    async def live(self, request: Request) -> Response:
        """Answer 200 while the process runs."""
        return plain({"live": True}, _rid(request))

    async def ready(self, request: Request) -> Response:
        """Answer 200 once every routed version is loaded, 503 before and while draining."""
        scoring = self._runtime.loaded_scoring
        table = scoring.table if scoring is not None else None
        ok = scoring is not None and scoring.ready
        body = {"ready": ok, "deployments": list(table.deployments()) if table else [],
                "unavailable": list(table.unavailable) if table else []}
        response = plain(body, _rid(request), 200 if ok else 503)
        if not ok:
            response.headers["Retry-After"] = "1"
        return response

    async def server_metadata(self, request: Request) -> Response:
        """Answer the V2 server metadata."""
        return plain({"name": "loopline", "version": __version__, "extensions": []},
                     _rid(request))

    async def model_metadata(self, request: Request) -> Response:
        """Answer the V2 metadata of a deployment's primary version."""
        rid = _rid(request)
        try:
            name = request.path_params["name"]
            choice = self._runtime.scoring.current().model(name)
            return answer(metadata(name, choice.model), rid, choice.route.uri)
        except Exception as exc:  # noqa: BLE001  # answered, never raised
            return refusal(exc, rid)

    async def model_ready(self, request: Request) -> Response:
        """Answer whether a deployment can be served (404 when unknown)."""
        rid = _rid(request)
        try:
            name = request.path_params["name"]
            choice = self._runtime.scoring.current().model(name)
            return answer({"name": name, "ready": True}, rid, choice.route.uri)
        except Exception as exc:  # noqa: BLE001  # answered, never raised
            return refusal(exc, rid)

    async def infer(self, request: Request) -> Response:
        """Answer a V2 infer request."""
        return await self._serve(request, self._v2)

    async def invocations(self, request: Request) -> Response:
        """Answer an MLflow scoring request."""
        return await self._serve(request, self._mlflow)

    async def predict(self, request: Request) -> Response:
        """Answer a request of JSON records."""
        return await self._serve(request, self._native)

    async def feedback(self, request: Request) -> Response:
        """Write feedback labels."""
        config = self._runtime.config
        return await feedback(request, config.prediction_log, config.store.clock,
                              self._runtime.limits)

    async def metrics(self, request: Request) -> Response:
        """Answer the Prometheus metrics."""
        scoring = self._runtime.loaded_scoring
        body = scoring.render_metrics() if scoring is not None else \
            self._runtime.metrics.render()
        return Response(body, media_type=CONTENT_TYPE)

    async def _serve(self, request: Request, wire: Wire) -> Response:
        try:
            scoring = self._runtime.scoring
        except RequestRefused as exc:
            return refusal(exc, _rid(request))
        return await scoring.serve(request, wire)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Answer an unknown path or method in the same JSON shape as every other error."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    problem = "no such endpoint" if status == 404 else str(getattr(exc, "detail", exc))
    return refusal(RequestRefused(status, "path", f"{request.method} {request.url.path}: "
                                                  f"{problem}"), _rid(request))


def create_app(config: ServingConfig, on_shutdown: Callable[[], None] | None = None,
               on_startup: Callable[[ServingRuntime], object] | None = None) -> Starlette:
    """Return the model server's ASGI app for ``config`` (nothing starts until its lifespan).

    ``app.state.serving`` is the ``ServingRuntime`` (``begin_drain`` drops readiness);
    ``on_startup`` runs with it when the lifespan starts (in a uvicorn worker: wrapping the
    signal handlers), ``on_shutdown`` last at the lifespan's end (closing what the caller
    opened).
    """
    runtime = ServingRuntime(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime.start()
        try:
            if on_startup is not None:
                on_startup(runtime)
            yield
        finally:
            try:
                await runtime.stop()
            finally:
                if on_shutdown is not None:
                    on_shutdown()

    app = Starlette(routes=Endpoints(runtime).routes(), lifespan=lifespan,
                    exception_handlers={404: _http_error, 405: _http_error})
    app.state.serving = runtime
    return app
