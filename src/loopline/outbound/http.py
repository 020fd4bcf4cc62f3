"""The one client loopline's outbound HTTP calls go through (OpenLineage, webhooks).

Every call is bounded: the target URL is checked (``outbound.urls.check_url``) before the
first request and again on every redirect hop, at most ``max_redirects`` hops are followed,
the whole call has a deadline, and at most ``max_response_bytes`` of a response are read.
On the network (no test transport), a host name is resolved here, every address it resolves
to is checked (``outbound.urls.check_address``) and the connection goes to a checked
address, so neither a DNS name pointing at 169.254.169.254 nor a re-resolution between check
and connect reaches a forbidden address. A redirect to another origin (scheme, host, port)
carries none of the caller's headers except Content-Type. Errors name the method, the URL's
origin only (paths and queries hold secrets) and the status code; they never repeat the
response body, which may echo secrets or be hostile.

Resolution uses the system resolver (``getaddrinfo``), which the call's timeout does not
bound; httpx's own connect resolves the same way.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from loopline._version import __version__
from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.outbound.urls import IPAddress, check_address, check_url, display_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The only caller header a redirect to another origin keeps: it describes the body, and
# anything else (Authorization, X-Api-Key, Cookie, ...) may be a credential.
CROSS_ORIGIN_HEADERS = frozenset({"content-type"})
USER_AGENT = f"loopline/{__version__}"


class TooManyRedirectsError(BackendError):
    """The call was redirected more than ``OutboundLimits.max_redirects`` times."""


@dataclass(frozen=True, slots=True)
class OutboundLimits:
    """How long a call may take and how much it may follow and read.

    Raises:
        InvalidArgumentError: when a timeout is not positive, ``connect_timeout`` exceeds
            ``timeout``, or a count is negative.
    """

    connect_timeout: float = 2.0  # seconds to establish the connection
    timeout: float = 10.0  # seconds for the whole call, redirects included
    max_redirects: int = 3
    max_response_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if not self.timeout > 0:  # written so that NaN fails too
            raise InvalidArgumentError(
                "limits.timeout", f"{self.timeout} must be more than 0 seconds")
        if not 0 < self.connect_timeout <= self.timeout:
            raise InvalidArgumentError(
                "limits.connect_timeout",
                f"{self.connect_timeout} must be more than 0 and at most timeout "
                f"({self.timeout})")
        for name in ("max_redirects", "max_response_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(
                    f"limits.{name}", f"{value!r} must be a whole number, 0 or more")


@dataclass(frozen=True, slots=True)
class _Hop:
    method: str
    url: httpx.URL
    body: bytes | None
    headers: dict[str, str]


class OutboundClient:
    """A synchronous HTTP client for calls loopline makes to other systems.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); by default calls
    go out over httpx's own transport, with no proxy settings read from the environment,
    after the host's addresses are resolved and checked (see the module docstring).
    Close the client (or use it as a context manager) to release its connections.
    """

    def __init__(self, limits: OutboundLimits | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.limits = limits or OutboundLimits()
        # trust_env=False: proxy and netrc settings from the environment would send the
        # call (and its Authorization header) somewhere the checked URL does not say.
        self._client = httpx.Client(transport=transport or _CheckedTransport(),
                                    follow_redirects=False,
                                    trust_env=False, headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> OutboundClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the client's connections."""
        self._client.close()

    def post_json(self, url: str, payload: Any,
                  headers: Mapping[str, str] | None = None) -> int:
        """POST ``payload`` as JSON to ``url``; return the final (2xx or 3xx) status code.

        Raises:
            InvalidArgumentError: naming ``url`` when the URL, or a redirect target, may not
                be called (see ``check_url``); naming ``payload`` when it is not
                JSON-serialisable.
            BackendError: when the call times out, cannot connect, is redirected more than
                ``max_redirects`` times, or ends with a status of 400 or more.
        """
        target = check_url(url)
        try:
            body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError("payload", f"is not JSON-serialisable: {exc}") from exc
        sent = {"Content-Type": "application/json", **dict(headers or {})}
        return self._call(_Hop("POST", target, body, sent))

    def _call(self, hop: _Hop) -> int:
        deadline = time.monotonic() + self.limits.timeout
        for _ in range(self.limits.max_redirects + 1):
            status, location = self._send(hop, deadline)
            if location is None:
                if status >= 400:
                    raise BackendError(
                        f"{hop.method} {display_url(hop.url)} answered HTTP {status}")
                return status
            hop = _redirected(hop, status, location)
        raise TooManyRedirectsError(f"{hop.method} {display_url(hop.url)}: more than "
                                    f"{self.limits.max_redirects} redirects")

    def _send(self, hop: _Hop, deadline: float) -> tuple[int, str | None]:
        """Send one request; return its status and, for a redirect, its Location."""
        left = deadline - time.monotonic()
        shown = f"{hop.method} {display_url(hop.url)}"
        if left <= 0:
            raise BackendError(f"{shown} timed out after {self.limits.timeout}s")
        timeout = httpx.Timeout(left, connect=min(self.limits.connect_timeout, left))
        request = self._client.build_request(hop.method, hop.url, content=hop.body,
                                             headers=hop.headers, timeout=timeout)
        try:
            response = self._client.send(request, stream=True)
            try:
                self._drain(response, deadline)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise BackendError(f"{shown} timed out after {self.limits.timeout}s") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"{shown} failed: {type(exc).__name__}") from exc
        location = response.headers.get("Location")
        if response.status_code in REDIRECT_STATUSES and location:
            return response.status_code, location
        return response.status_code, None

    def _drain(self, response: httpx.Response, deadline: float) -> None:
        """Read at most ``max_response_bytes`` of the body (raw: no decompression bomb)."""
        if response.is_stream_consumed:
            return  # an in-memory response (a test transport): nothing left on the wire
        read = 0
        for chunk in response.iter_raw():
            read += len(chunk)
            if read >= self.limits.max_response_bytes or time.monotonic() > deadline:
                break  # the rest is not needed: post_json returns only the status


def _redirected(hop: _Hop, status: int, location: str) -> _Hop:
    """Return the next hop of a redirect, checked like the first URL.

    303 (and 301/302 after a POST, as browsers and httpx do) turn into a GET without a body;
    307 and 308 repeat the request. Once a hop leaves the first URL's origin, the caller's
    headers other than Content-Type are dropped for good (they may be credentials).

    Raises:
        InvalidArgumentError: naming ``url`` when the redirect target may not be called.
    """
    try:
        target = hop.url.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidArgumentError(
            "url", f"{display_url(hop.url)} redirected to an invalid URL") from exc
    try:
        target = check_url(target)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(
            "url", f"redirect from {display_url(hop.url)} refused: {exc.problem}") from exc
    headers = dict(hop.headers)
    if (target.scheme, target.host, target.port) != (hop.url.scheme, hop.url.host, hop.url.port):
        headers = {k: v for k, v in headers.items() if k.lower() in CROSS_ORIGIN_HEADERS}
    if status == 303 or (status in {301, 302} and hop.method == "POST"):
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        return _Hop("GET", target, None, headers)
    return _Hop(hop.method, target, hop.body, headers)


class _CheckedTransport(httpx.BaseTransport):
    """httpx's transport, connecting only to checked addresses of the request's host.

    The host is resolved once, every address is checked, and the request goes to those
    addresses in turn (the next one after a connection failure, as ``create_connection``
    does) with the Host header and TLS server name still the host name, so certificates
    are verified against the name. One pool per host name, so a TLS connection made for
    one name is never reused for another name on the same address.
    """

    def __init__(self) -> None:
        self._pools: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to the first checked address of its host that accepts it.

        Raises:
            InvalidArgumentError: naming ``url`` when any address the host resolves to is
                forbidden (``check_address``).
            httpx.ConnectError: when the host does not resolve or no address connects.
        """
        host = request.url.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS see
        *others, last = [check_address(request.url, address) for address in _resolve(request)]
        pool = self._pools.setdefault(host, httpx.HTTPTransport(trust_env=False))
        for address in others:
            try:
                return pool.handle_request(_pinned(request, host, address))
            except httpx.ConnectError:
                continue  # the next address, as socket.create_connection would
        return pool.handle_request(_pinned(request, host, last))

    def close(self) -> None:
        """Release every pool's connections."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _pinned(request: httpx.Request, host: str, address: IPAddress) -> httpx.Request:
    """Return ``request`` sent to ``address``, still naming ``host`` in Host and TLS SNI."""
    return httpx.Request(request.method, request.url.copy_with(host=str(address)),
                         headers=request.headers, stream=request.stream,
                         extensions={**request.extensions, "sni_hostname": host})


def _resolve(request: httpx.Request) -> list[str]:
    """Return the addresses of the request's host, an IP literal as itself, in order.

    Raises:
        httpx.ConnectError: when the name does not resolve.
    """
    host = request.url.raw_host.decode("ascii")
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass  # a name
    port = request.url.port or (443 if request.url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise httpx.ConnectError(f"cannot resolve {host!r}", request=request) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise httpx.ConnectError(f"{host!r} resolves to no address", request=request)
    return addresses
