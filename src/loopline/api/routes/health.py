"""``GET /health``: the one public path — is this server up, and can it reach its store.

It answers on the event loop and pings the store on two threads of its own (``_Pinger``),
never on the worker threads the other routes share: when every one of those is busy, health
still answers. Callers that ask while a ping is under way share that ping, so a load balancer
polling a hung database adds no threads; a ping that takes longer than ``PING_SECONDS``
answers 503 (with ``Retry-After``), as RELIABILITY.md promises for an outage.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse

from loopline._version import __version__
from loopline.app import Workspace
from loopline.store import MetadataStore

router = APIRouter(tags=["health"])

PING_SECONDS = 2.0
PING_THREADS = 2
RETRY_AFTER = "2"


class Health(BaseModel):
    """Liveness and the metadata store's reachability."""

    status: str
    version: str
    store: str


class _Pinger:
    """Pings stores on threads of its own; callers asking at the same time share one ping."""

    def __init__(self) -> None:
        # No thread starts until the first ping (ThreadPoolExecutor starts them on submit).
        self._pool = ThreadPoolExecutor(PING_THREADS, thread_name_prefix="loopline-health")
        self._pending: dict[int, Future[str | None]] = {}
        self._lock = threading.Lock()

    def ping(self, store: MetadataStore) -> Future[str | None]:
        """Return the ping of ``store`` under way, or start one."""
        key = id(store)
        with self._lock:
            found = self._pending.get(key)
            started = found is None
            if found is None:
                found = self._pool.submit(store.ping)
                self._pending[key] = found
        if started:  # outside the lock: a finished future calls back at once, here
            found.add_done_callback(partial(self._forget, key))
        return found

    def _forget(self, key: int, done: Future[str | None]) -> None:
        with self._lock:
            if self._pending.get(key) is done:
                del self._pending[key]


_PINGER = _Pinger()


async def _reachable(store: MetadataStore) -> bool:
    """Tell whether ``store`` answered a ping within ``PING_SECONDS``."""
    try:
        # shielded: a caller giving up must not cancel the ping others share
        problem = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(
            _PINGER.ping(store))), PING_SECONDS)
    except TimeoutError:
        return False
    return problem is None


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    """Answer 200 when the metadata store answers, 503 (with ``Retry-After``) when not."""
    workspace: Workspace = request.app.state.workspace
    # A ping, not the schema check of ``store.health``: load balancers call this often.
    reachable = await _reachable(workspace.store)
    body = Health(status="ok" if reachable else "degraded", version=__version__,
                  store=workspace.store.backend if reachable else "unreachable")
    return JSONResponse(body.model_dump(), status_code=200 if reachable else 503,
                        headers={} if reachable else {"Retry-After": RETRY_AFTER})
