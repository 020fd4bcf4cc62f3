"""``Idempotency-Key`` on creating calls: a retried request gets the first one's answer.

A pure ASGI middleware, inside the body guard (the body it hashes is already checked). A
``POST`` carrying ``Idempotency-Key`` claims the key for its caller (keys are scoped by the
hash of the bearer token, so two callers never share one): the first request runs and its
answer is stored; the same key with the same request (method, path, query and body) is
answered with the stored answer (``Idempotency-Replayed: true``) without running again; the
same key with another request is refused 422 naming ``Idempotency-Key``; a key whose first
request is still running is answered 409. Answers that are not worth replaying (5xx, 401,
403, 429) are forgotten, so a retry runs again. Keys last ``KEY_LIFETIME``; older ones are
pruned at most once per ``PRUNE_EVERY``. Uploads are content-addressed, so naturally
idempotent, and ignore the header.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import timedelta

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopline.api.body_guard import header_of
from loopline.api.errors import error_response
from loopline.core.errors import LooplineError
from loopline.core.tokens import hash_token
from loopline.store import MetadataStore
from loopline.store import idempotency_records as records

__all__ = ["KEY_LIFETIME", "IdempotencyKeys"]

log = logging.getLogger(__name__)
HEADER = b"idempotency-key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
KEY_LIFETIME = timedelta(hours=24)
PRUNE_EVERY = 3600.0
MAX_STORED_BODY = 1 << 20
NOT_REPLAYED = frozenset({401, 403, 429})


def _scope_of(scope: Scope) -> str | None:
    header = header_of(scope, b"authorization") or ""
    kind, _, token = header.partition(" ")
    token = token.strip()
    return hash_token(token) if kind.lower() == "bearer" and token.isascii() and token \
        else None


class IdempotencyKeys:
    """Replay the stored answer of a creating call retried with the same key."""

    def __init__(self, app: ASGIApp, store: MetadataStore, is_upload: Callable[[str], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.store = store
        self.is_upload = is_upload
        self._clock = clock
        self._pruned_at: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run, replay or refuse a ``POST`` with a key; pass anything else on."""
        key = header_of(scope, HEADER) if scope["type"] == "http" else None
        caller = _scope_of(scope) if key is not None else None
        if key is None or scope["method"] != "POST" or self.is_upload(scope["path"]) \
                or caller is None:
            await self.app(scope, receive, send)
            return
        if not KEY_PATTERN.fullmatch(key):
            await error_response(422, "invalid_argument", "Idempotency-Key must be 1-255 "
                                 "printable characters without spaces", "Idempotency-Key"
                                 )(scope, receive, send)
            return
        body, replay = await _read_body(receive)
        digest = hashlib.sha256(b"\n".join([
            scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""),
            body])).hexdigest()
        try:
            stored = await asyncio.to_thread(records.claim, self.store, caller, key, digest)
        except LooplineError as exc:
            await error_response(503, "backend_unavailable", exc.message)(scope, receive, send)
            return
        if stored is not None:
            await _answer_stored(stored, digest, scope, receive, send)
            return
        await self._run_first(scope, replay, send, caller, key)
        await self._prune()

    async def _run_first(self, scope: Scope, receive: Receive, send: Send, caller: str,
                         key: str) -> None:
        # The answer is held until it is stored, so a retry that arrives the moment the
        # caller has it finds it stored (not still running).
        answer: dict[str, object] = {"status": 500, "type": None}
        held: list[Message] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["type"] = next((v.decode("latin-1") for k, v in message.get(
                    "headers", ()) if k.lower() == b"content-type"), None)
            held.append(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            body = b"".join(m.get("body", b"") for m in held
                            if m["type"] == "http.response.body")
            await self._settle(caller, key, answer, body)
        for message in held:
            await send(message)

    async def _settle(self, caller: str, key: str, answer: dict[str, object],
                      body: bytes) -> None:
        status = answer["status"] if isinstance(answer["status"], int) else 500
        keep = status < 500 and status not in NOT_REPLAYED and len(body) <= MAX_STORED_BODY
        try:
            if keep:
                content_type = answer["type"] if isinstance(answer["type"], str) else None
                await asyncio.to_thread(records.complete, self.store, caller, key, status,
                                        content_type, body)
            else:
                await asyncio.to_thread(records.forget, self.store, caller, key)
        except LooplineError as exc:  # the answer went out; a retry will run again
            log.warning("could not settle Idempotency-Key: %s", exc.message)
            await asyncio.to_thread(_forget_quietly, self.store, caller, key)

    async def _prune(self) -> None:
        now = self._clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            before = self.store.clock.now() - KEY_LIFETIME
            await asyncio.to_thread(records.prune, self.store, before)
        except LooplineError as exc:
            log.warning("could not prune idempotency keys: %s", exc.message)


def _forget_quietly(store: MetadataStore, caller: str, key: str) -> None:
    try:
        records.forget(store, caller, key)
    except LooplineError as exc:
        log.warning("could not forget Idempotency-Key: %s", exc.message)


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the (already bounded) body; return it and a receive that hands it on."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return body, replay


async def _answer_stored(stored: records.StoredRequest, digest: str, scope: Scope,
                         receive: Receive, send: Send) -> None:
    if stored.request_hash != digest:
        response = error_response(422, "invalid_argument", "this Idempotency-Key was used "
                                  "with another request; use a new key", "Idempotency-Key")
    elif stored.status is None:
        response = error_response(409, "conflict", "a request with this Idempotency-Key is "
                                  "still running; retry when it has answered",
                                  "Idempotency-Key")
    else:
        headers = [(b"content-length", str(len(stored.body or b"")).encode()),
                   (b"idempotency-replayed", b"true")]
        if stored.content_type:
            headers.append((b"content-type", stored.content_type.encode("latin-1")))
        await send({"type": "http.response.start", "status": stored.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": stored.body or b""})
        return
    await response(scope, receive, send)
