"""loopline's own endpoints: ``POST /predict/{deployment}`` with records, ``POST /feedback``.

A prediction request is ``{"records": [{column: value, ...}, ...]}`` or the list of records
itself; the answer is ``{"predictions": [...], "model_version": "models:/NAME/VERSION",
"request_id": ...}``. Feedback is ``{"request_id": ..., "label": ...}`` or a list of them; the
labels go to the prediction log at once (feedback is rare beside predictions) and reads of
the log join the newest label to the prediction with the same request id.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopline.core.clock import Clock
from loopline.core.names import validate_name
from loopline.core.ports import ServableModel
from loopline.core.predictions import FeedbackRecord
from loopline.data.prediction_log import PredictionLog
from loopline.serving.answers import RequestRefused, plain, refusal
from loopline.serving.payloads import Limits, check_rows, frame_from_records, read_json
from loopline.serving.request_ids import HEADER, is_valid, request_id
from loopline.serving.routing import RoutingTable
from loopline.serving.scoring import Outcome, Parsed


class NativeWire:
    """``POST /predict/{deployment}``: JSON records in, predictions out."""

    def deployment(self, request: Request, body: Any, table: RoutingTable) -> str:
        """Return the deployment named in the path.

        Raises:
            InvalidArgumentError: 422 naming ``deployment`` when it is not a valid name.
        """
        return validate_name(str(request.path_params["deployment"]), "deployment")

    def parse(self, body: Any, model: ServableModel, limits: Limits) -> Parsed:
        """Return the records as a frame.

        Raises:
            RequestRefused: naming ``records`` (or ``records[i]``) when they are not a list of
                objects with the same columns, or are too many.
        """
        if isinstance(body, dict):
            if "records" not in body:
                raise RequestRefused(422, "records", 'is required: send {"records": [{...}]} '
                                                     "or a list of records")
            body = body["records"]
        return Parsed(frame_from_records(body, "records", limits), body)

    def render(self, outcome: Outcome) -> Any:
        """Return the predictions with the version and request id."""
        return {"predictions": outcome.predictions, "model_version": outcome.version,
                "request_id": outcome.request_id}


def _feedback(body: Any, clock: Clock, limits: Limits) -> list[FeedbackRecord]:
    """Return the feedback records of ``body``.

    Raises:
        RequestRefused: naming ``feedback[i].request_id`` / ``.label`` when one is missing or
            invalid, or 413 for too many labels.
    """
    items = body if isinstance(body, list) else [body]
    check_rows(len(items), "feedback", limits)
    now = clock.now()
    records = []
    for index, item in enumerate(items):
        where = f"feedback[{index}]"
        if not isinstance(item, dict):
            raise RequestRefused(422, where, 'must be {"request_id": ..., "label": ...}')
        if not is_valid(item.get("request_id")):
            raise RequestRefused(422, f"{where}.request_id", "must be the request id an answer "
                                                             "carried (X-Request-Id)")
        if "label" not in item:
            raise RequestRefused(422, f"{where}.label", "is required")
        records.append(FeedbackRecord(str(item["request_id"]), now, item["label"]))
    return records


async def feedback(request: Request, log: PredictionLog, clock: Clock, limits: Limits
                   ) -> Response:
    """Write the labels of a ``POST /feedback`` and answer how many were accepted."""
    rid = request_id(request.headers.get(HEADER))
    try:
        records = _feedback(await read_json(request, limits), clock, limits)
        await run_in_threadpool(log.log_feedback, records)
    except Exception as exc:  # noqa: BLE001  # every failure is answered, never raised
        return refusal(exc, rid)
    return plain({"accepted": len(records), "request_id": rid}, rid)
