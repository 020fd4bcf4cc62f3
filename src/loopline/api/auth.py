"""Deny by default: one authentication dependency for the whole API, and role requirements.

``authenticate`` is an app-wide dependency: every route runs it except the exact paths in
``PUBLIC_PATHS``. It turns the bearer token into a ``Caller`` whose workspace view acts as
the token's user and asks a ``TokenAuthorizer`` (the token's role caps the user's bindings),
so the audit log names that user for every change. Each route also declares the
permission it needs with one of ``Reader``, ``Writer``, ``Approver``, ``Trusting`` or
``Admin``: the token's role must permit it, and the user must hold it on at least one
binding (a disabled identity holds none); the services check the models an action touches.
``create_api`` refuses to build an app with a route that declares none, and publishes each
route's permission in the OpenAPI document as ``x-permission``. An address that keeps
failing authentication gets 429 instead of 401 for a while (``FailedAuthLimiter``); a valid
token always passes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from loopline.api.errors import ApiError
from loopline.app import Workspace
from loopline.core.errors import AccessDeniedError, AuthenticationError
from loopline.core.governance import ROLE_PERMISSIONS, Permission
from loopline.core.tokens import ApiToken
from loopline.governance.tokens import TokenAuthorizer

__all__ = ["PUBLIC_PATHS", "Admin", "Approver", "Caller", "CurrentCaller", "FailedAuthLimiter",
           "Reader", "Writer", "authenticate", "permission_of", "requires"]

API_PREFIX = "/api/v1"
PUBLIC_PATHS = frozenset({f"{API_PREFIX}/health"})
PERMISSION_ATTRIBUTE = "__loopline_permission__"
MAX_TRACKED_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the token they presented and the workspace view acting as its user."""

    token: ApiToken
    workspace: Workspace


class FailedAuthLimiter:
    """Count failed authentications per client address in fixed windows.

    Once an address has failed ``limit`` times in the current ``window`` seconds, its further
    failures are answered 429 instead of 401 until the window ends: a caller that keeps
    guessing is slowed down, while a valid token from the same address (a NAT, a proxy)
    always passes. Memory is bounded: one (start, count) pair per address, at most
    ``MAX_TRACKED_CLIENTS`` addresses, the least recent dropped first. ``limit`` 0 turns
    the limiter off.
    """

    def __init__(self, limit: int, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, client: str) -> float | None:
        """Record a failed authentication by ``client``; return seconds to wait when limited.

        None means the failure is answered as usual (401).
        """
        if self._limit <= 0:
            return None
        with self._lock:
            now = self._clock()
            start, count = self._windows.pop(client, (now, 0))
            if now - start >= self._window:
                start, count = now, 0
            count += 1
            self._windows[client] = (start, count)
            while len(self._windows) > MAX_TRACKED_CLIENTS:
                self._windows.popitem(last=False)
            if count <= self._limit:
                return None
            return max(0.0, self._window - (now - start))


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def authenticate(request: Request) -> Caller | None:
    """Resolve the request's bearer token to a ``Caller`` (None on the public paths).

    Async so a public path (health) never waits for a worker thread; the token lookup runs
    on one.

    Raises:
        AuthenticationError: when the token is missing, malformed, unknown, expired or
            revoked (401).
        ApiError: 429 with ``Retry-After`` when the client failed too often lately.
    """
    if request.url.path in PUBLIC_PATHS:
        return None
    return await run_in_threadpool(_authenticate, request)


def _authenticate(request: Request) -> Caller:
    workspace: Workspace = request.app.state.workspace
    try:
        token = workspace.tokens.authenticate(_bearer(request))
    except AuthenticationError:
        limiter: FailedAuthLimiter = request.app.state.auth_limiter
        wait = limiter.failed(request.client.host if request.client else "unknown")
        if wait is not None:
            raise ApiError(429, "rate_limited", "too many failed authentications from this "
                           f"address; retry in {wait:.0f}s", None,
                           {"Retry-After": str(max(1, round(wait)))}) from None
        raise
    view = workspace.as_actor(token.user, TokenAuthorizer(workspace.access, token))
    caller = Caller(token, view)
    request.state.caller = caller
    return caller


def current_caller(request: Request) -> Caller:
    """Return the caller ``authenticate`` resolved for this request.

    Raises:
        AuthenticationError: on a public path, where nobody was authenticated.
    """
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Caller):
        raise AuthenticationError("this path does not authenticate its callers")
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def requires(permission: Permission) -> Callable[..., Workspace]:
    """Return the dependency that lets a caller through when the token's role permits it.

    It returns the caller's workspace view; the services it holds check the user's role
    bindings per model as they act.
    """
    def dependency(caller: CurrentCaller) -> Workspace:
        if permission not in ROLE_PERMISSIONS[caller.token.role]:
            raise AccessDeniedError(caller.token.user, str(permission), None,
                                    (f"a {caller.token.role} token",))
        # The user must hold the permission somewhere too (a disabled identity holds
        # nothing); which models it covers, the services check as they act.
        if not caller.workspace.access.permits_anywhere(caller.token.user, permission):
            raise AccessDeniedError(caller.token.user, str(permission), None,
                                    caller.workspace.access.held(caller.token.user))
        return caller.workspace
    setattr(dependency, PERMISSION_ATTRIBUTE, permission)
    dependency.__name__ = f"requires_{permission}"
    return dependency


def permission_of(call: Any) -> Permission | None:
    """Return the permission a dependency callable made by ``requires`` demands, if any."""
    found = getattr(call, PERMISSION_ATTRIBUTE, None)
    return found if isinstance(found, Permission) else None


Reader = Annotated[Workspace, Depends(requires(Permission.READ))]
Writer = Annotated[Workspace, Depends(requires(Permission.WRITE))]
Approver = Annotated[Workspace, Depends(requires(Permission.APPROVE))]
Trusting = Annotated[Workspace, Depends(requires(Permission.TRUST))]
Admin = Annotated[Workspace, Depends(requires(Permission.ADMIN))]
