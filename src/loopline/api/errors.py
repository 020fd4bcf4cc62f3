"""HTTP statuses for the error tree, and the one JSON shape every error answer has.

The only place errors become HTTP statuses. Every refusal is
``{"error": {"code": ..., "message": ..., "field": ...}}``: ``code`` is stable (clients
branch on it; ``loopline.client`` turns it back into the same exception class), ``message``
is the error's own sentence, ``field`` names the input at fault or is null. A 5xx never
carries a stack trace: the server logs it with the request id the answer names.
"""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.responses import JSONResponse

from loopline.core.errors import (
    ERROR_CODES,
    InvalidArgumentError,
    LooplineError,
)

__all__ = ["STATUSES", "ApiError", "ErrorBody", "error_response", "status_and_code",
           "validation_response"]

# The status of each error code (``core.errors.ERROR_CODES`` names the codes).
STATUSES: dict[str, int] = {
    "unauthenticated": 401, "access_denied": 403, "untrusted_model": 403,
    "policy_denied": 403, "not_found": 404, "already_exists": 409, "invalid_transition": 409,
    "conflict": 409, "invalid_argument": 422, "validation_failed": 422, "user_code": 422,
    "integrity": 500, "configuration": 500, "backend_unavailable": 503,
}
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """A refusal made by the HTTP layer itself (size, media type, rate limit, routing)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a sentence, and the field at fault (or null)."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


def status_and_code(error: LooplineError) -> tuple[int, str]:
    """Return the HTTP status and the error code for ``error``."""
    for kind, code in ERROR_CODES:
        if isinstance(error, kind):
            return STATUSES[code], code
    return 500, "internal"


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """Return the one error shape as a response."""
    extra = dict(headers or {})
    if status == 503:
        extra.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse({"error": {"code": code, "message": message, "field": field}},
                        status_code=status, headers=extra)


def loopline_error_response(error: LooplineError) -> JSONResponse:
    """Return the answer for an error of the tree (its field when it names one)."""
    status, code = status_and_code(error)
    field = error.field if isinstance(error, InvalidArgumentError) else None
    return error_response(status, code, error.message, field)


def _location(loc: tuple[Any, ...]) -> str:
    # ``("body", "routes", 0, "weight")`` → ``routes[0].weight``, as the services name
    # fields; the first part says where, which the field name implies for a body, a query
    # or a path parameter.
    text = ""
    for part in loc[1:] if len(loc) > 1 else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_response(error: RequestValidationError) -> JSONResponse:
    """Return 400 for a body that is not JSON, else 422 naming the first field at fault."""
    problems = jsonable_encoder(error.errors())
    first = problems[0] if problems else {"loc": ("body",), "msg": "is invalid"}
    if first.get("type") == "json_invalid":
        return error_response(400, "malformed", "the body is not valid JSON", "body")
    field = _location(tuple(first.get("loc", ("body",))))
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return error_response(422, "invalid_argument",
                          f"invalid {field}: {first.get('msg', 'is invalid')}{more}", field)
