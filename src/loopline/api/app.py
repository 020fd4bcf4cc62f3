"""The control-plane HTTP API: ``create_api(workspace)`` builds the FastAPI app under ``/api/v1``.

Every route but ``PUBLIC_PATHS`` authenticates (an app-wide dependency) and declares the
permission it needs; building an app whose route declares none fails, so no route can forget
it. Handlers are plain functions over the caller's workspace view (FastAPI runs them on its
thread pool). Errors of the tree, request validation, routing and the body guard all answer
with the one error shape of ``api.errors``; anything else is logged with a request id and
answered 500 without details.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from loopline._version import __version__
from loopline.api.auth import (
    API_PREFIX,
    PUBLIC_PATHS,
    FailedAuthLimiter,
    Reader,
    authenticate,
    permission_of,
)
from loopline.api.body_guard import BodyGuard, BodyLimits
from loopline.api.capacity import Capacity
from loopline.api.errors import (
    ApiError,
    ErrorBody,
    error_response,
    loopline_error_response,
    validation_response,
)
from loopline.api.idempotency import IdempotencyKeys
from loopline.api.routes import ROUTERS
from loopline.api.run_starter import RunPool, RunStarter
from loopline.api.uploads import sweep_stale
from loopline.app import Workspace
from loopline.core.errors import InvalidArgumentError, LooplineError
from loopline.core.governance import Permission
from loopline.pipelines import PipelineDefinition

__all__ = ["ApiOptions", "create_api"]

log = logging.getLogger(__name__)
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
RUN_DRAIN_SECONDS = 60.0
_HTTP_CODES = {400: "malformed", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type"}


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """Limits of the API (RELIABILITY.md, rule 7) and the failed-authentication limiter."""

    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 2 << 30
    # What an uploaded dataset may decode to (Parquet compresses and encodes: a small body can
    # hold gigabytes of rows); 413 past it.
    max_decoded_bytes: int = 8 << 30
    max_json_depth: int = 64
    auth_failures_per_minute: int = 30

    def checked(self) -> ApiOptions:
        """Return the options when usable.

        Raises:
            InvalidArgumentError: naming the option out of range.
        """
        ranges = {"max_body_bytes": (1024, 1 << 30), "max_upload_bytes": (1024, 1 << 40),
                  "max_decoded_bytes": (1024, 1 << 42), "max_json_depth": (2, 1000),
                  "auth_failures_per_minute": (0, 1_000_000)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise InvalidArgumentError(name, f"{value} must be {low}-{high}")
        return self


# Every operation may answer these, all in the one error shape; declaring them also keeps
# FastAPI from publishing its own 422 schema, which is not what this API answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "Malformed request (not JSON, bad Content-Length)"),
        (401, "Missing, unknown, expired or revoked token"),
        (403, "The token's role or the user's roles do not permit it; or a policy denied it"),
        (404, "Not found"), (409, "Conflict with the current state"),
        (413, "Body larger than the limit"), (415, "Wrong media type"),
        (422, "Well-formed but invalid; `field` names the input"),
        (429, "Too many failed authentications from this address"),
        (503, "The metadata store is unreachable, or the server runs as much of this work "
              "as it allows (busy); retry after Retry-After"))}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start, sweep uploads a dead server left; at shutdown, let runs here finish."""
    swept = await asyncio.to_thread(sweep_stale, app.state.workspace)
    if swept:
        log.info("removed %d upload folders left by an earlier server", swept)
    yield
    starter: RunStarter = app.state.run_starter
    if not await asyncio.to_thread(starter.join, RUN_DRAIN_SECONDS):
        log.warning("API shutdown: %d runs still executing after %.0fs; they can be resumed",
                    starter.running(), RUN_DRAIN_SECONDS)


# The upload routes, exactly: raw bytes streamed by their handler. Anything else that merely
# ends in /upload (an alias or a deployment named so) is an ordinary JSON route.
UPLOAD_PATHS = re.compile(
    rf"^{API_PREFIX}/(datasets/[^/]+/upload|models/[^/]+/payloads/upload)/?$")


def _is_upload(path: str) -> bool:
    return UPLOAD_PATHS.fullmatch(path) is not None


def _route_permission(route: APIRoute) -> Permission | None:
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        found = permission_of(dependant.call)
        if found is not None:
            return found
        pending.extend(dependant.dependencies)
    return None


def _declare_permissions(router: APIRouter) -> None:
    """Publish each route's permission as ``x-permission``; refuse a route without one.

    Done on a router's own routes before it is included, so it holds however the framework
    composes included routers.

    Raises:
        RuntimeError: naming a route that is neither public nor declares a permission.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute) or API_PREFIX + route.path in PUBLIC_PATHS:
            continue
        permission = _route_permission(route)
        if permission is None:
            raise RuntimeError(f"API route {sorted(route.methods or ())} {route.path} declares no "
                               "permission (use Reader, Writer, Approver, Trusting or Admin)")
        route.openapi_extra = {**(route.openapi_extra or {}), "x-permission": str(permission)}


def _add_error_handlers(app: FastAPI) -> None:
    async def tree(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, LooplineError)
        return loopline_error_response(exc)

    async def api(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                              str(exc.detail), None, dict(exc.headers or {}))

    async def unexpected(request: Request, exc: Exception) -> Response:
        request_id = uuid.uuid4().hex
        log.error("API %s %s failed (request %s)", request.method, request.url.path,
                  request_id, exc_info=exc)
        return error_response(500, "internal", f"internal error; the server log has it "
                                               f"under request {request_id}")

    app.add_exception_handler(LooplineError, tree)
    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, unexpected)


def _errors_as_json(app: FastAPI) -> None:
    """Publish every 4xx/5xx answer as JSON in the one error shape.

    Whatever a route's own media type, it refuses in JSON (a route answering text or HTML).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for status, answer in operation.get("responses", {}).items():
                    if str(status)[0] in "45":
                        answer["content"] = error
        app.openapi_schema = document
        return document
    app.openapi = openapi  # type: ignore[method-assign]


def _add_openapi_route(app: FastAPI) -> None:
    @app.get(OPENAPI_PATH, include_in_schema=False)
    def openapi(_: Reader) -> JSONResponse:
        return JSONResponse(app.openapi())


def create_api(workspace: Workspace, options: ApiOptions | None = None,
               pipelines: Sequence[PipelineDefinition] = (),
               execute: RunPool | None = None) -> FastAPI:
    """Build the API over ``workspace`` (its own actor is never used: callers act as theirs).

    ``pipelines`` are those callers may start by name (``POST /runs``). ``execute`` is the
    server's run pool (``loopline server`` passes its ``BackgroundWork``): a run a caller
    starts or resumes executes there through the caller's own runner, and is refused 503
    while the pool's backlog is at its limit; without it the run executes on a thread of
    this process (``api.run_starter``).

    Raises:
        InvalidArgumentError: naming an option out of range.
        RuntimeError: when a route declares no permission (a programming error).
    """
    chosen = (options or ApiOptions()).checked()
    app = FastAPI(title="loopline control plane", version=__version__,
                  description="Datasets, runs, models, deployments, monitoring and governance "
                              "of one loopline workspace. Every path but health needs "
                              "`Authorization: Bearer <token>` (`loopline tokens create`).",
                  openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(authenticate)], lifespan=_lifespan)
    app.state.workspace = workspace
    app.state.pipelines = {p.name: p for p in pipelines}
    app.state.run_starter = RunStarter(execute)
    app.state.capacity = Capacity()
    app.state.options = chosen
    app.state.auth_limiter = FailedAuthLimiter(chosen.auth_failures_per_minute)
    for router in ROUTERS:
        _declare_permissions(router)
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    _add_openapi_route(app)
    _errors_as_json(app)
    _add_error_handlers(app)
    # Added first, so it runs inside the body guard: the body it hashes is checked already.
    app.add_middleware(IdempotencyKeys, store=workspace.store, is_upload=_is_upload)
    app.add_middleware(BodyGuard, limits=BodyLimits(
        chosen.max_body_bytes, chosen.max_upload_bytes, chosen.max_json_depth, _is_upload))
    return app
