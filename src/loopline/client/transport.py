"""HTTP to a loopline server: the bearer token, JSON in and out, errors, pages, decoding.

One ``httpx.Client`` per ``Transport`` (connection pooling, keep-alive). Answers are decoded
into the same records the local services return (``decode`` validates the JSON against the
record's type with pydantic), and error answers raise the same exceptions. A plain
``http://`` URL to a host that is not loopback is allowed but logged as a warning once per
``Transport``: the token would travel in clear.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlsplit

import httpx
from pydantic import TypeAdapter

from loopline.client.errors import error_from_answer
from loopline.core.errors import BackendError, InvalidArgumentError

__all__ = ["Transport", "decode", "segment"]

T = TypeVar("T")
API_PREFIX = "/api/v1"
PAGE_LIMIT = 1_000
CHUNK = 1 << 20
UPLOAD_TYPE = "application/octet-stream"
LOOPBACK_NAMES = frozenset({"localhost"})

logger = logging.getLogger(__name__)

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    # Building an adapter compiles a validator: once per record type, not per answer.
    found = _ADAPTERS.get(kind)
    if found is None:
        found = _ADAPTERS.setdefault(kind, TypeAdapter(kind))
    return found


def decode(kind: type[T], data: Any) -> T:
    """Return ``data`` (parsed JSON) as ``kind`` (a record type, ``list[...]`` ...).

    Raises:
        BackendError: when the server's answer does not have the record's shape.
    """
    try:
        return cast(T, _adapter(kind).validate_python(data))
    except ValueError as exc:
        raise BackendError(f"the server's answer is not a {kind!r}: {exc}") from exc


def segment(value: object) -> str:
    """Return ``value`` quoted as one path segment (a ``/`` or ``..`` in it stays inside)."""
    return quote(str(value), safe="")


def _is_loopback(host: str) -> bool:
    """Tell whether ``host`` (a URL's host name) names this machine only."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a DNS name: it may resolve anywhere
        return False


def _warn_if_in_clear(url: str) -> None:
    """Log a warning when ``url`` sends the token unencrypted to another machine."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not _is_loopback((parts.hostname or "").lower()):
        logger.warning(
            "the loopline server at %s is reached over plain http://: the bearer token "
            "travels in clear and anyone on the path can act as its user; use https:// "
            "(plain http:// is for loopback addresses)", url)


def _params(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: (str(v).lower() if isinstance(v, bool) else v)
            for k, v in (values or {}).items() if v is not None}


class Transport:
    """Calls to one server with one token."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 verify: bool | str = True) -> None:
        """Prepare calls to ``url`` (``https://host:port``) with ``token``.

        Logs a warning when ``url`` is plain ``http://`` to a host that is not loopback.

        Raises:
            InvalidArgumentError: naming ``url`` or ``token`` when blank or malformed.
        """
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgumentError("url", f"{url!r} must start with http:// or https://")
        if not isinstance(token, str) or not token.strip():
            raise InvalidArgumentError("token", "is required (`loopline tokens create`)")
        self.url = url.rstrip("/")
        _warn_if_in_clear(self.url)
        self._user: str | None = None
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX, timeout=timeout, transport=transport,
            verify=verify, headers={"Authorization": f"Bearer {token.strip()}",
                                    "Accept": "application/json"})

    def request(self, method: str, path: str, *, json: Any = None,  # noqa: PLR0913
                params: Mapping[str, Any] | None = None,
                content: bytes | Iterable[bytes] | None = None,
                headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Any:
        """Send one request and return its parsed JSON body (None for an empty one).

        ``content`` may be an iterable of byte chunks (a file read in chunks), streamed
        without holding it whole; ``timeout`` overrides the client's for this call.

        Raises:
            LooplineError: the subclass the server's error answer names.
            BackendError: when the server cannot be reached or answers something else.
        """
        try:
            answer = self._http.request(
                method, path, json=json, params=_params(params), content=content,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the loopline server at {self.url}: {exc}"
                               ) from exc
        body = _json_of(answer)
        if answer.status_code >= 400:
            raise error_from_answer(answer.status_code, body)
        return body

    def token_user(self) -> str:
        """Return the user the server acts as for this token (asked once, then remembered).

        Raises:
            As :meth:`request`.
        """
        if self._user is None:
            self._user = str(self.get("/whoami")["user"])
        return self._user

    def text(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """GET ``path`` and return its body as text (reports, model cards).

        Raises:
            As :meth:`request`.
        """
        try:
            answer = self._http.get(path, params=_params(params))
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the loopline server at {self.url}: {exc}"
                               ) from exc
        if answer.status_code >= 400:
            raise error_from_answer(answer.status_code, _json_of(answer))
        return answer.text

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path``; see :meth:`request`."""
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None,
             params: Mapping[str, Any] | None = None) -> Any:
        """POST ``json`` to ``path``; see :meth:`request`."""
        return self.request("POST", path, json=json, params=params)

    def items(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Yield every item of a paginated listing, following ``next_cursor``.

        Raises:
            As :meth:`request`.
        """
        query = {**_params(params), "limit": PAGE_LIMIT}
        while True:
            page = self.get(path, query)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def first_items(self, path: str, params: Mapping[str, Any] | None,
                    count: int) -> list[Any]:
        """Return the first ``count`` items of a paginated listing, asking no more than needed.

        Raises:
            As :meth:`request`.
        """
        found: list[Any] = []
        query = {**_params(params), "limit": min(max(count, 1), PAGE_LIMIT)}
        while len(found) < count:
            page = self.get(path, query)
            found.extend(page["items"][:count - len(found)])
            if not page.get("next_cursor"):
                break
            query = {**query, "cursor": page["next_cursor"],
                     "limit": min(count - len(found), PAGE_LIMIT) or 1}
        return found

    def upload(self, path: str, file: Path, params: Mapping[str, Any] | None = None) -> Any:
        """POST ``file``'s bytes to ``path`` streamed in chunks; return the parsed answer.

        Raises:
            As :meth:`request`.
        """
        def chunks() -> Iterator[bytes]:
            with open(file, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk

        return self.request("POST", path, content=chunks(), params=params, headers={
            "Content-Type": UPLOAD_TYPE, "Content-Length": str(file.stat().st_size)})

    def download(self, path: str, target: Path, accept: str = UPLOAD_TYPE) -> str:
        """GET ``path``'s bytes into ``target``; return their SHA-256 (hex) to check.

        Raises:
            As :meth:`request`.
        """
        sha = hashlib.sha256()
        try:
            with self._http.stream("GET", path, headers={"Accept": accept}) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    raise error_from_answer(answer.status_code, _json_of(answer))
                with open(target, "wb") as out:
                    for chunk in answer.iter_bytes(CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the loopline server at {self.url}: {exc}"
                               ) from exc
        return sha.hexdigest()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()


def _json_of(answer: httpx.Response) -> Any:
    if not answer.content:
        return None
    try:
        return answer.json()
    except ValueError:
        if answer.status_code >= 400:
            return None
        raise BackendError(f"the server answered HTTP {answer.status_code} with a body that "
                           "is not JSON") from None
