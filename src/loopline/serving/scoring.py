"""One inference request, whatever its protocol: route, validate, predict, log, mirror.

``Scoring.serve`` reads the body within the limits, picks the route from the current
routing table (a sticky key from the header or field the deployment names), checks the rows
against the model's signature (errors and unseen categories refuse the request with 422;
out-of-range values are counted in ``loopline_signature_warnings_total`` and answered),
predicts (never on the event loop: in the model's worker thread, or through its
``MicroBatcher`` when batching is on), and answers. Rows in flight are bounded
(``max_queue_rows``): past it a request is refused at once with 503 and ``Retry-After``.
After the answer is sent, the prediction goes to the ``PredictionWriter`` (never awaited)
and the shadow routes' work to a bounded queue drained by its own thread (dropped and
counted when full); shadow outputs are logged under their own version, never returned.
The table is one reference swapped whole: a request is answered wholly by the version it
was routed to; the workers of versions no longer routed close once their requests drain.

Metric labels hold only the routed deployment and version: a request refused before routing
(unknown deployment, malformed body, too large, overloaded) is counted under
``deployment="unknown"``. For rollout analysis, a request the routed version's signature
refuses counts as an error of that version, like a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from prometheus_client import Counter
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from loopline.core.clock import Clock
from loopline.core.deployments import Route
from loopline.core.ports import ServableModel
from loopline.core.predictions import PredictionRecord, log_name_of
from loopline.data.prediction_writer import PredictionWriter
from loopline.serving.answers import NO_VERSION, RequestRefused, answer, refusal
from loopline.serving.batching import QueueFull
from loopline.serving.metrics import ServingMetrics
from loopline.serving.payloads import Limits, read_json, scalar_field
from loopline.serving.request_ids import HEADER, is_valid, request_id
from loopline.serving.routing import RouteChoice, RoutingTable
from loopline.serving.stats_recorder import StatsRecorder
from loopline.serving.workers import OffLoopQueue, RunnerPool, as_predictions, datatype_of

logger = logging.getLogger(__name__)

"""The longest name the prediction log takes (``core.names``)."""
UNROUTED = "unknown"
"""The ``deployment`` label of requests refused before they were routed."""
SHADOW_QUEUE = 1024
"""Shadow requests waiting to be scored at most; more are dropped and counted."""


def log_version(route: Route) -> str:
    """Return the prediction log's name for a route's version (``core.predictions``)."""
    return log_name_of(route.model, route.version)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A request's rows as a frame, and the JSON value the prediction log keeps as inputs."""

    frame: pd.DataFrame
    inputs: Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """What answered a request: the route, its predictions and their V2 datatype."""

    deployment: str
    request_id: str
    choice: RouteChoice
    predictions: list[Any]
    datatype: str
    body: Any

    @property
    def version(self) -> str:
        """The answering version's URI."""
        return self.choice.route.uri


class Wire(Protocol):
    """What a protocol supplies: the deployment a request names, its rows, its answer."""

    def deployment(self, request: Request, body: Any, table: RoutingTable) -> str:
        """Return the deployment the request is for."""
        ...

    def parse(self, body: Any, model: ServableModel, limits: Limits) -> Parsed:
        """Return the request's rows (raises ``RequestRefused`` naming the field)."""
        ...

    def render(self, outcome: Outcome) -> Any:
        """Return the JSON answer."""
        ...


def _first_record(body: Any) -> Any:
    """Return the first row of a body that is, or holds, a list of rows (else None)."""
    rows = body if isinstance(body, list) else next(
        (v for v in body.values() if isinstance(v, list)), []) if isinstance(body, dict) else []
    return rows[0] if rows else None


def _key_spec(spec: str | None) -> tuple[str, str] | None:
    """Return (kind, name) of a deployment's ``sticky_key``: ``header:NAME``/``field:NAME``.

    A bare name means a header of that name, else a field.
    """
    if not spec:
        return None
    kind, _, name = spec.partition(":")
    return (kind, name) if name and kind in ("header", "field") else ("any", spec)


def _sticky_key(spec: tuple[str, str] | None, request: Request, body: Any) -> str | None:
    """Return the key a sticky deployment assigns by, from its header or its body field.

    A field is looked for at the top of the body, then in its first record.
    """
    if spec is None:
        return None
    kind, name = spec
    if kind != "field":
        header = request.headers.get(name)
        if header:
            return header
    if kind == "header":
        return None
    found = scalar_field(body, name)
    return found if found is not None else scalar_field(_first_record(body), name)


_OBJECT = np.dtype(object)


def _typed_nulls(frame: pd.DataFrame, model: ServableModel) -> pd.DataFrame:
    """Make a numeric column whose values are all JSON nulls a float column of NaN.

    JSON has no typed null, so ``[null]`` would read as a column of objects and be refused
    as the wrong type; as NaN it is refused (or taken) as a null, which is what it is.
    """
    objects: list[Any] = [column for column, dtype in frame.dtypes.items() if dtype == _OBJECT]
    if not objects:  # the usual case: nothing to look at
        return frame
    types = dict(zip(model.input_names, model.input_types, strict=False))
    for column in objects:
        if types.get(column) in ("FP64", "INT64") and frame[column].isna().all():
            frame = frame.assign(**{column: frame[column].astype("float64")})
    return frame


class SignatureRefused(RequestRefused):
    """422: the routed version's signature refused the rows (an error of that version)."""

def _refuse_violations(violations: list[Mapping[str, Any]]) -> None:
    """Refuse a batch with signature errors or unseen categories, naming the first column.

    Raises:
        SignatureRefused: when there is one.
    """
    refused = [v for v in violations if v["severity"] == "error" or v["kind"] == "category"]
    if refused:
        raise SignatureRefused(422, str(refused[0]["column"]),
                               "; ".join(str(v["message"]) for v in refused))


@dataclass(frozen=True, slots=True)
class _ShadowJob:
    outcome: Outcome
    shadow: RouteChoice
    inputs: Any
    frame: pd.DataFrame




@dataclass(frozen=True, slots=True)
class _Check:
    """A request's signature check, run in the worker thread.

    Equal for requests a batch may check together (same deployment and version).
    """

    scoring: Scoring
    deployment: str
    choice: RouteChoice

    def __call__(self, frame: pd.DataFrame) -> None:
        self.scoring.check(self.deployment, self.choice, frame)


class Scoring:
    """The request path shared by every protocol, over the current routing table.

    ``batching`` is (batch_max_rows, batch_wait_ms); ``max_queue_rows`` bounds the rows
    admitted and not yet answered.
    """

    def __init__(self, metrics: ServingMetrics, writer: PredictionWriter,  # noqa: PLR0913
                 stats: StatsRecorder | None, clock: Clock, limits: Limits,
                 batching: tuple[int, float] = (0, 2.0), max_queue_rows: int = 4096) -> None:
        self.metrics = metrics
        self.limits = limits
        self._writer = writer
        self._stats = stats
        self._clock = clock
        self._max_queue_rows = max_queue_rows
        self._in_flight = 0
        self._pool = RunnerPool(batching, self._on_batch)
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # built outside a loop: no retiring on swap
            self._loop = asyncio.get_running_loop()
        self._shadows = OffLoopQueue(self._shadow, SHADOW_QUEUE, "loopline-shadow",
                                     metrics.shadow_dropped)
        self._warnings = Counter(
            "loopline_signature_warnings", "Rows outside the range seen in training, per column.",
            ("deployment", "model_version", "column", "kind"), registry=metrics.registry)
        self.table: RoutingTable | None = None
        self.draining = False

    def swap(self, table: RoutingTable) -> None:
        """Serve ``table`` from now on (one reference assignment; in-flight requests finish).

        Safe from any thread; the workers of versions ``table`` no longer routes are closed
        on the event loop once their requests drain.
        """
        self.table = table
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._retire_stale)

    def _retire_stale(self) -> None:
        """Retire the workers of versions the current table no longer routes (on the loop)."""
        self._pool.retain(self.table.models() if self.table is not None else {})

    @property
    def ready(self) -> bool:
        """Whether a table is loaded with every deployment available, and not draining."""
        return self.table is not None and self.table.ready and not self.draining

    @property
    def runners(self) -> tuple[str, ...]:
        """The URIs of the versions that hold a worker (batcher or thread) now."""
        return self._pool.uris

    @property
    def rows_in_flight(self) -> int:
        """Rows admitted and not yet answered."""
        return self._in_flight

    def current(self) -> RoutingTable:
        """Return the routing table.

        Raises:
            RequestRefused: 503 until the first table is loaded.
        """
        table = self.table
        if table is None:
            raise RequestRefused(503, "server", "is loading its models; retry shortly")
        return table

    async def serve(self, request: Request, wire: Wire) -> Response:
        """Answer one inference request through ``wire``; every failure becomes an answer."""
        started = time.perf_counter()
        given = request.headers.get(HEADER)
        rid = request_id(given)
        routed: tuple[str, str] | None = None
        error: bool | None = False
        try:
            table = self.current()
            if self._in_flight >= self._max_queue_rows:  # shed before reading the body
                raise QueueFull(self._in_flight, self._max_queue_rows)
            body = await read_json(request, self.limits)
            if not is_valid(given) and isinstance(body, dict) and is_valid(body.get("id")):
                rid = str(body["id"])
            deployment = wire.deployment(request, body, table)
            sticky = _key_spec(table.deployment(deployment).sticky_key)
            key = _sticky_key(sticky, request, body)
            choice = table.route(deployment, key)
            routed = (deployment, choice.route.uri)
            parsed = wire.parse(body, choice.model, self.limits)
            frame = self._prepared(parsed.frame, choice.model, sticky)
            predictions, datatype = await self._admitted(deployment, choice, frame)
            outcome = Outcome(deployment, rid, choice, predictions, datatype, body)
            after = BackgroundTask(self._after, outcome, parsed.inputs, frame, key, table,
                                   started)
            response = answer(wire.render(outcome), rid, choice.route.uri, background=after)
        except Exception as exc:  # noqa: BLE001  # every failure is answered, never raised
            response = refusal(exc, rid, routed[1] if routed else NO_VERSION)
            # overload is not the version's fault (no stats); its signature refusing is
            error = None if isinstance(exc, QueueFull) else isinstance(exc, SignatureRefused)
        self._observe(routed, response.status_code, started, error)
        return response

    def _prepared(self, frame: pd.DataFrame, model: ServableModel,
                  sticky: tuple[str, str] | None) -> pd.DataFrame:
        """Drop the sticky key's field from the rows when the model does not take it."""
        name = sticky[1] if sticky is not None and sticky[0] != "header" else None
        if name and name in frame.columns and name not in model.input_names:
            frame = frame.drop(columns=[name])
        return _typed_nulls(frame, model)

    async def _admitted(self, deployment: str, choice: RouteChoice, frame: pd.DataFrame
                        ) -> tuple[list[Any], str]:
        """Score ``frame`` within the bound on rows in flight (a lone request always fits).

        Raises:
            QueueFull: when the rows would pass ``max_queue_rows``.
        """
        rows = len(frame)
        if self._in_flight and self._in_flight + rows > self._max_queue_rows:
            raise QueueFull(self._in_flight, self._max_queue_rows)
        self._in_flight += rows
        try:
            runner = self._pool.acquire(choice.model, self.table.models() if self.table
                                        else {})
            try:
                result = await runner.predict(frame, _Check(self, deployment, choice))
            finally:
                self._pool.release(runner)
        finally:
            self._in_flight -= rows
        return as_predictions(result, len(frame)), datatype_of(result)

    def check(self, deployment: str, choice: RouteChoice, frame: pd.DataFrame) -> None:
        """Refuse ``frame`` when the routed version's signature does; count its warnings.

        Thread-safe (run in the model's worker thread).

        Raises:
            SignatureRefused: on signature errors or unseen categories.
        """
        violations = choice.model.check(frame)
        _refuse_violations(violations)
        for warning in violations:
            self._warnings.labels(deployment, choice.route.uri, str(warning["column"]),
                                  str(warning["kind"])).inc(int(warning["rows"]) or 1)

    def _on_batch(self, uri: str) -> Callable[[int], None]:
        return lambda rows: self.metrics.batch(uri, rows)

    def _observe(self, routed: tuple[str, str] | None, status: int, started: float,
                 error: bool | None = False) -> None:
        """Count an answer; ``error`` None: not in the serving stats."""
        seconds = time.perf_counter() - started
        if routed is None:
            self.metrics.observe(UNROUTED, NO_VERSION, status, seconds)
            return
        self.metrics.observe(routed[0], routed[1], status, seconds)
        if self._stats is not None and error is not None:
            self._stats.record(routed[0], routed[1], error or status >= 500, seconds * 1000.0)

    # -- after the answer: log it, mirror it to the shadows --------------------------------

    async def _after(self, outcome: Outcome, inputs: Any, frame: pd.DataFrame,
                     key: str | None, table: RoutingTable, started: float) -> None:
        latency = (time.perf_counter() - started) * 1000.0
        self._log(outcome.deployment, outcome.choice.route, outcome.request_id, inputs,
                  outcome.predictions, latency)
        for shadow in table.shadows(outcome.deployment, key):
            self._shadows.offer(_ShadowJob(outcome, shadow, inputs, frame))

    def _shadow(self, job: _ShadowJob) -> None:
        """Score one shadow request (in the shadow thread) and log its outputs."""
        started = time.perf_counter()
        deployment, shadow = job.outcome.deployment, job.shadow
        routed = (deployment, shadow.route.uri)
        try:
            self.check(deployment, shadow, job.frame)
            predictions = as_predictions(shadow.model.predict(job.frame), len(job.frame))
        except Exception as exc:  # noqa: BLE001  # a shadow's failure never reaches a caller
            logger.warning("shadow %s failed on request %s: %s", shadow.route.uri,
                           job.outcome.request_id, exc)
            self._observe(routed, 500, started)
            return
        self._observe(routed, 200, started)
        self._log(deployment, shadow.route, job.outcome.request_id, job.inputs, predictions,
                  (time.perf_counter() - started) * 1000.0)

    def _log(self, deployment: str, route: Route, rid: str, inputs: Any, outputs: list[Any],
             latency_ms: float) -> None:
        record = PredictionRecord(rid, self._clock.now(), deployment, log_version(route),
                                  inputs, outputs, latency_ms)
        try:
            self._writer.submit(record)
        except Exception as exc:  # noqa: BLE001  # logging must never fail a request
            self.metrics.log_refused()
            logger.warning("prediction of request %s not logged: %s", rid, exc)

    def refresh_gauges(self) -> None:
        """Bring the prediction log's gauges up to date."""
        stats = self._writer.stats()
        self.metrics.set_queue_depth(stats.pending)
        self.metrics.set_dropped(stats.dropped)

    def render_metrics(self) -> bytes:
        """Return the Prometheus text, the prediction log's gauges brought up to date."""
        self.refresh_gauges()
        return self.metrics.render()

    async def close(self) -> None:
        """Score the queued shadows, finish queued batches and stop every worker."""
        await asyncio.get_running_loop().run_in_executor(None, self._shadows.close)
        await self._pool.close()
