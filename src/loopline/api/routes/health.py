"""``GET /health``: the one public path — is this server up, and can it reach its store."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse

from loopline._version import __version__
from loopline.app import Workspace

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Liveness and the metadata store's reachability."""

    status: str
    version: str
    store: str


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request) -> JSONResponse:
    """Answer 200 when the metadata store answers, 503 (with ``Retry-After``) when not."""
    workspace: Workspace = request.app.state.workspace
    # A ping, not the schema check of ``store.health``: load balancers call this often.
    reachable = workspace.store.ping() is None
    body = Health(status="ok" if reachable else "degraded", version=__version__,
                  store=workspace.store.backend if reachable else "unreachable")
    return JSONResponse(body.model_dump(), status_code=200 if reachable else 503,
                        headers={} if reachable else {"Retry-After": "2"})
