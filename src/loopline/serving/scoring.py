"""One inference request, whatever its protocol: route, validate, predict, log, mirror.

``Scoring.serve`` reads the body within the limits, picks the route from the current
routing table (a sticky key from the header or field the deployment names), checks the rows
against the model's signature (errors and unseen categories refuse the request with 422;
out-of-range values are counted in ``loopline_signature_warnings_total`` and answered),
predicts (inline, or through the model's ``MicroBatcher`` when batching is on), and answers.
After the answer is sent, a background task submits the prediction to the
``PredictionWriter`` (never awaited on the request path) and scores the shadow routes, whose
outputs are logged under their own version and never returned. The table is one reference,
swapped whole, so a request is answered wholly by the version it was routed to.
"""

from __future__ import annotations

import asyncio
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
from loopline.core.errors import UserCodeError
from loopline.core.ports import ServableModel
from loopline.core.predictions import PredictionRecord
from loopline.data.prediction_writer import PredictionWriter
from loopline.serving.answers import NO_VERSION, RequestRefused, answer, refusal
from loopline.serving.batching import MicroBatcher
from loopline.serving.metrics import ServingMetrics
from loopline.serving.payloads import Limits, read_json, scalar_field
from loopline.serving.request_ids import HEADER, is_valid, request_id
from loopline.serving.routing import RouteChoice, RoutingTable
from loopline.serving.stats_recorder import StatsRecorder

logger = logging.getLogger(__name__)


def log_version(route: Route) -> str:
    """Return the prediction log's name for a route's version: ``MODEL.vVERSION``.

    The log's ``model_version`` must be a plain name (no ``:`` or ``/``), so the URI
    ``models:/MODEL/VERSION`` that answers carry is written this way.
    """
    return f"{route.model}.v{route.version}"


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


def _datatype(values: Any) -> str:
    kind = values.dtype.kind if isinstance(values, np.ndarray) else np.asarray(values).dtype.kind
    return {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}.get(kind, "BYTES")


def _as_list(result: Any, rows: int) -> list[Any]:
    """Return one JSON-ready prediction per row.

    Raises:
        UserCodeError: when the model did not return one prediction per row.
    """
    if isinstance(result, pd.DataFrame):
        values: list[Any] = result.to_dict("records")
    elif hasattr(result, "tolist"):
        values = result.tolist()
    else:
        values = list(result)
    if len(values) != rows:
        raise UserCodeError(f"the model returned {len(values)} predictions for {rows} rows")
    return values


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


def _typed_nulls(frame: pd.DataFrame, model: ServableModel) -> pd.DataFrame:
    """Make a numeric column whose values are all JSON nulls a float column of NaN.

    JSON has no typed null, so ``[null]`` would read as a column of objects and be refused
    as the wrong type; as NaN it is refused (or taken) as a null, which is what it is.
    """
    types = dict(zip(model.input_names, model.input_types, strict=False))
    for column in frame.columns:
        if frame[column].dtype == object and types.get(column) in ("FP64", "INT64") and \
                frame[column].isna().all():
            frame = frame.assign(**{column: frame[column].astype("float64")})
    return frame


def _refuse_violations(violations: list[Mapping[str, Any]]) -> None:
    """Refuse a batch with signature errors or unseen categories, naming the first column."""
    refused = [v for v in violations if v["severity"] == "error" or v["kind"] == "category"]
    if refused:
        raise RequestRefused(422, str(refused[0]["column"]),
                             "; ".join(str(v["message"]) for v in refused))


class Scoring:
    """The request path shared by every protocol, over the current routing table."""

    def __init__(self, metrics: ServingMetrics, writer: PredictionWriter,
                 stats: StatsRecorder | None, clock: Clock, limits: Limits,
                 batching: tuple[int, float] = (0, 2.0)) -> None:
        self.metrics = metrics
        self.limits = limits
        self._writer = writer
        self._stats = stats
        self._clock = clock
        self._batch_rows, self._batch_wait = batching
        self._batchers: dict[str, tuple[ServableModel, MicroBatcher]] = {}
        self._warnings = Counter(
            "loopline_signature_warnings", "Rows outside the range seen in training, per column.",
            ("deployment", "model_version", "column", "kind"), registry=metrics.registry)
        self.table: RoutingTable | None = None
        self.draining = False

    def swap(self, table: RoutingTable) -> None:
        """Serve ``table`` from now on (one reference assignment; in-flight requests finish)."""
        self.table = table

    @property
    def ready(self) -> bool:
        """Whether a table is loaded with every deployment available, and not draining."""
        return self.table is not None and self.table.ready and not self.draining

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
        deployment, version = "", NO_VERSION
        try:
            table = self.current()
            body = await read_json(request, self.limits)
            if not is_valid(given) and isinstance(body, dict) and is_valid(body.get("id")):
                rid = str(body["id"])
            deployment = wire.deployment(request, body, table)
            sticky = _key_spec(table.deployment(deployment).sticky_key)
            key = _sticky_key(sticky, request, body)
            choice = table.route(deployment, key)
            version = choice.route.uri
            parsed = wire.parse(body, choice.model, self.limits)
            frame = self._prepared(parsed.frame, choice.model, sticky)
            predictions, datatype = await self._score(deployment, choice, frame)
            outcome = Outcome(deployment, rid, choice, predictions, datatype, body)
            after = BackgroundTask(self._after, outcome, parsed.inputs, frame, key, table,
                                   started)
            response = answer(wire.render(outcome), rid, version, background=after)
        except Exception as exc:  # noqa: BLE001  # every failure is answered, never raised
            response = refusal(exc, rid, version)
        self._observe(deployment, version, response.status_code, started)
        return response

    def _prepared(self, frame: pd.DataFrame, model: ServableModel,
                  sticky: tuple[str, str] | None) -> pd.DataFrame:
        """Drop the sticky key's field from the rows when the model does not take it."""
        name = sticky[1] if sticky is not None and sticky[0] != "header" else None
        if name and name in frame.columns and name not in model.input_names:
            frame = frame.drop(columns=[name])
        return _typed_nulls(frame, model)

    async def _score(self, deployment: str, choice: RouteChoice, frame: pd.DataFrame
                     ) -> tuple[list[Any], str]:
        model = choice.model
        violations = model.check(frame)
        _refuse_violations(violations)
        for warning in violations:
            self._warnings.labels(deployment, choice.route.uri, str(warning["column"]),
                                  str(warning["kind"])).inc(int(warning["rows"]) or 1)
        result = await self._predict(model, frame)
        return _as_list(result, len(frame)), _datatype(result)

    async def _predict(self, model: ServableModel, frame: pd.DataFrame) -> Any:
        if self._batch_rows <= 0:  # batching off: score inline, the fastest single request
            result = model.predict(frame)
            self.metrics.batch(model.uri, len(frame))
            return result
        return await self._batcher(model).submit(frame)

    def _batcher(self, model: ServableModel) -> MicroBatcher:
        found = self._batchers.get(model.uri)
        if found is not None and found[0] is model:
            return found[1]
        rows = self._batch_rows if model.batchable else 1
        batcher = MicroBatcher(model.predict, rows, self._batch_wait,
                               on_batch=self._on_batch(model.uri))
        if found is not None:  # a reloaded version: let the old batcher finish and stop
            asyncio.get_running_loop().create_task(found[1].close())
        self._batchers[model.uri] = (model, batcher)
        return batcher

    def _on_batch(self, uri: str) -> Callable[[int], None]:
        return lambda rows: self.metrics.batch(uri, rows)

    def _observe(self, deployment: str, version: str, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.observe(deployment or "none", version, status, seconds)
        if self._stats is not None and deployment and version != NO_VERSION:
            self._stats.record(deployment, version, status >= 500, seconds * 1000.0)

    # -- after the answer: log it, mirror it to the shadows --------------------------------

    async def _after(self, outcome: Outcome, inputs: Any, frame: pd.DataFrame,
                     key: str | None, table: RoutingTable, started: float) -> None:
        latency = (time.perf_counter() - started) * 1000.0
        self._log(outcome.deployment, outcome.choice.route, outcome.request_id, inputs,
                  outcome.predictions, latency)
        for shadow in table.shadows(outcome.deployment, key):
            await self._shadow(outcome, shadow, inputs, frame)

    async def _shadow(self, outcome: Outcome, shadow: RouteChoice, inputs: Any,
                      frame: pd.DataFrame) -> None:
        started = time.perf_counter()
        try:
            predictions, _ = await self._score(outcome.deployment, shadow, frame)
        except Exception as exc:  # noqa: BLE001  # a shadow's failure never reaches a caller
            logger.warning("shadow %s failed on request %s: %s", shadow.route.uri,
                           outcome.request_id, exc)
            self._observe(outcome.deployment, shadow.route.uri, 500, started)
            return
        self._observe(outcome.deployment, shadow.route.uri, 200, started)
        self._log(outcome.deployment, shadow.route, outcome.request_id, inputs, predictions,
                  (time.perf_counter() - started) * 1000.0)

    def _log(self, deployment: str, route: Route, rid: str, inputs: Any, outputs: list[Any],
             latency_ms: float) -> None:
        record = PredictionRecord(rid, self._clock.now(), deployment, log_version(route),
                                  inputs, outputs, latency_ms)
        try:
            self._writer.submit(record)
        except Exception as exc:  # noqa: BLE001  # logging must never fail a request
            logger.warning("prediction of request %s not logged: %s", rid, exc)

    def render_metrics(self) -> bytes:
        """Return the Prometheus text, the prediction log's gauges brought up to date."""
        stats = self._writer.stats()
        self.metrics.set_queue_depth(stats.pending)
        self.metrics.set_dropped(stats.dropped)
        return self.metrics.render()

    async def close(self) -> None:
        """Finish queued batches and stop every batcher."""
        batchers = [batcher for _, batcher in self._batchers.values()]
        self._batchers.clear()
        for batcher in batchers:
            await batcher.close()
