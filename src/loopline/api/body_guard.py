"""Limits enforced before a handler sees a body: size, media type, JSON well-formedness, depth.

A pure ASGI middleware. State-changing requests (POST, PUT, PATCH, DELETE) that carry a body
must say ``application/json`` (415 otherwise), except upload paths, which take
``application/octet-stream`` and are bounded by their own larger limit (the handler streams
them). A JSON body is read whole up to ``max_body_bytes`` (413 past it, from
``Content-Length`` before reading when it is given), parsed once with orjson (400 when it is
not JSON) and refused when it nests deeper than ``max_json_depth`` (422), so nothing deeper
reaches the recursive parser of the framework. The checked bytes are then replayed to the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopline.api.errors import error_response
from loopline.api.uploads import UPLOAD_TYPE
from loopline.serving.payloads import too_deep

__all__ = ["BodyGuard", "BodyLimits"]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The limits, and which paths are uploads (raw bytes, streamed by their handler)."""

    max_body_bytes: int
    max_upload_bytes: int
    max_json_depth: int
    is_upload: Callable[[str], bool]


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def header_of(scope: Scope, name: bytes) -> str | None:
    """Return the request header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _declared_length(scope: Scope) -> int | None:
    text = header_of(scope, b"content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise _Refused(400, "malformed", "Content-Length is not a number", "Content-Length")
    return int(text)


class BodyGuard:
    """Refuse oversized, mistyped, malformed or too deeply nested bodies before the app."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check a state-changing request's body, then pass the request on (or refuse it)."""
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        try:
            replay = await self._check(scope, receive)
        except _Refused as refused:
            response = error_response(refused.status, refused.code, refused.message,
                                      refused.field)
            await response(scope, receive, send)
            return
        await self.app(scope, replay or receive, send)

    async def _check(self, scope: Scope, receive: Receive) -> Receive | None:
        length = _declared_length(scope)
        media = (header_of(scope, b"content-type") or "").split(";")[0].strip().lower()
        if self.limits.is_upload(scope["path"]):
            if media != UPLOAD_TYPE:
                raise _Refused(415, "unsupported_media_type",
                               f"uploads take {UPLOAD_TYPE}, not {media or 'no media type'}",
                               "Content-Type")
            if length is not None and length > self.limits.max_upload_bytes:
                raise _too_large(self.limits.max_upload_bytes, "max_upload_bytes")
            return None  # the handler streams it, counting against the same limit
        if length == 0:
            return None
        if length is not None and length > self.limits.max_body_bytes:
            raise _too_large(self.limits.max_body_bytes)
        if media and media != JSON_TYPE:
            raise _unsupported(media)
        # A body sent in chunks declares no length: it is read here, bounded, whatever its
        # headers say, so nothing unchecked reaches the framework (which reads whole).
        body = await self._read(receive)
        if body and media != JSON_TYPE:
            raise _unsupported(media)
        if body:
            self._check_json(body)
        return _replay(body, receive)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "malformed", "the client went away while sending", "body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _too_large(self.limits.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check_json(self, body: bytes) -> None:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth" in str(exc):
                raise _too_deep(self.limits.max_json_depth) from None
            raise _Refused(400, "malformed", "the body is not valid JSON", "body") from None
        if too_deep(value, self.limits.max_json_depth):
            raise _too_deep(self.limits.max_json_depth)


def _unsupported(media: str) -> _Refused:
    return _Refused(415, "unsupported_media_type",
                    f"send {JSON_TYPE}, not {media or 'no media type'}", "Content-Type")


def _too_large(limit: int, option: str = "max_body_bytes") -> _Refused:
    return _Refused(413, "too_large", f"the body is larger than the limit of {limit} bytes "
                                      f"(the server's {option})", "body")


def _too_deep(limit: int) -> _Refused:
    return _Refused(422, "invalid_argument",
                    f"the body nests arrays and objects deeper than the limit of {limit}",
                    "body")


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the app the checked body once, then the client's own messages (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()
    return receive
