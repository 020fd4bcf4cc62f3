"""The API's error answers turned back into the error tree, so callers catch the same classes.

The codes are ``core.errors.ERROR_CODES``, the table the API answers from. An answer that
is not the API's error shape (a proxy's page, say) becomes a ``BackendError`` naming the
status.
"""

from __future__ import annotations

from typing import Any

from loopline.core.errors import (
    ERROR_CODES,
    BackendError,
    InvalidArgumentError,
    LooplineError,
    NotFoundError,
)

__all__ = ["ERROR_CLASSES", "error_from_answer"]

ERROR_CLASSES: dict[str, type[LooplineError]] = {code: kind for kind, code in ERROR_CODES}
# Refusals of the HTTP layer itself, by the class a caller would catch for them.
_HTTP_LAYER: dict[str, type[LooplineError]] = {
    "malformed": InvalidArgumentError, "too_large": InvalidArgumentError,
    "unsupported_media_type": InvalidArgumentError, "rate_limited": BackendError,
    "method_not_allowed": NotFoundError,
}


def _rebuild(kind: type[LooplineError], message: str, field: str | None) -> LooplineError:
    # The classes' constructors take typed parts the answer does not carry; the message is
    # already the whole sentence, so build the instance around it.
    error = kind.__new__(kind)
    LooplineError.__init__(error, message)
    if isinstance(error, InvalidArgumentError):
        error.field = field or "request"
        error.problem = message
    return error


def error_from_answer(status: int, body: Any) -> LooplineError:
    """Return the exception an error answer stands for."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict) or not isinstance(detail.get("code"), str):
        return BackendError(f"the server answered HTTP {status} without an error body")
    code = detail["code"]
    message = str(detail.get("message") or code)
    field = detail.get("field") if isinstance(detail.get("field"), str) else None
    kind = ERROR_CLASSES.get(code) or _HTTP_LAYER.get(code) or \
        (BackendError if status >= 500 else LooplineError)
    return _rebuild(kind, message, field)
