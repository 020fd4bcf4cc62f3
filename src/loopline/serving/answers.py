"""Answers of the model server: JSON bodies, the id headers, and errors mapped to statuses.

Every answer carries ``X-Request-Id`` and ``X-Model-Version`` (``none`` when no version was
chosen). An error answers ``{"error": {"field": ..., "problem": ...}, "request_id": ...}``:

    RequestRefused        its own status (400 malformed, 413 too large, 415 media type, 503)
    InvalidArgumentError  422  well formed, but not what the model takes
    NotFoundError         404  no such deployment or model
    PolicyDeniedError     403
    ConflictError         503  the server is shutting down (with Retry-After)
    BackendError          503  a dependency is down (with Retry-After)
    anything else         500  the model or the server failed; logged, never echoed

So bad input always gets a 4xx naming the field, and no stack trace leaves the process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from loopline.core.errors import (
    BackendError,
    ConflictError,
    InvalidArgumentError,
    LooplineError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.serving.request_ids import HEADER, MODEL_VERSION_HEADER

logger = logging.getLogger(__name__)

JSON = "application/json"
NO_VERSION = "none"
RETRY_AFTER = "1"


class RequestRefused(InvalidArgumentError):
    """Bad input answered with a specific status (400, 413, 415) or a 503 not-ready."""

    def __init__(self, status: int, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.status = status


def answer(body: Any, request_id: str, model_version: str = NO_VERSION, status: int = 200,
           background: BackgroundTask | None = None) -> Response:
    """Return a JSON answer with the request id and model version headers."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, {
        HEADER: request_id, MODEL_VERSION_HEADER: model_version}, JSON, background)


def _status_of(exc: BaseException) -> tuple[int, str | None, str]:
    """Return the status, field and problem an exception answers with."""
    if isinstance(exc, RequestRefused):
        return exc.status, exc.field, exc.problem
    if isinstance(exc, InvalidArgumentError):
        return 422, exc.field, exc.problem
    if isinstance(exc, NotFoundError):
        return 404, exc.kind, exc.message
    if isinstance(exc, PolicyDeniedError):
        return 403, None, exc.message
    if isinstance(exc, ConflictError | BackendError):
        return 503, None, exc.message
    if isinstance(exc, LooplineError):
        return 500, None, exc.message
    return 500, None, "internal error while answering; the server log has the details"


def refusal(exc: BaseException, request_id: str, model_version: str = NO_VERSION
            ) -> Response:
    """Return the error answer for ``exc`` (logging it when it is a server failure)."""
    status, field, problem = _status_of(exc)
    if status >= 500 and status != 503:
        logger.error("request %s failed: %s", request_id, exc,
                     exc_info=not isinstance(exc, LooplineError))
    response = answer({"error": {"field": field, "problem": problem},
                       "request_id": request_id}, request_id, model_version, status)
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER
    return response


def plain(body: Mapping[str, Any], request_id: str, status: int = 200) -> Response:
    """Return a JSON answer for endpoints that involve no model (health, feedback)."""
    return answer(body, request_id, NO_VERSION, status)
