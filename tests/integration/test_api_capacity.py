"""Expensive work over the API is admitted by slots of its kind, on every backend: when its
slots are taken a request is refused at once with 503 ``busy`` and ``Retry-After`` (other
kinds still answer), and answered again once a slot is free; health answers while every
worker thread the routes share is busy."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio.to_thread
import httpx
import pytest
from api_support import USERS, ApiServer

from loopline.api import ApiOptions, create_api
from loopline.api.auth import Reader, authenticate
from loopline.api.capacity import Capacity, Work
from loopline.app import Workspace
from loopline.core.errors import BackendError
from loopline.serving.server import ThreadedServer

RETENTION = {"retention.yml": "kind: retention\nname: default\nclasses:\n"
                              "  run_logs: {max_age: 30d}\n"}
MISSING = "0" * 32
WORKER_THREADS = 2


@dataclass
class Served:
    """The API over the workspace, the capacity it admits work by, and a gate to block on."""

    api: ApiServer
    capacity: Capacity
    gate: threading.Event
    entered: threading.Semaphore


@pytest.fixture
def served(ws: Workspace) -> Iterator[Served]:
    """The API with one slot per kind and two test routes: shrink the pool, block a thread."""
    app = create_api(ws, ApiOptions(auth_failures_per_minute=0))
    capacity = Capacity(slots=1, retry_after=7)
    app.state.capacity = capacity
    gate, entered = threading.Event(), threading.Semaphore(0)

    async def shrink(_: Reader) -> dict[str, int]:
        # The routes' worker threads (anyio's default limiter of this server's event loop).
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        return {"threads": WORKER_THREADS}

    def block(_: Reader) -> dict[str, bool]:
        entered.release()
        return {"released": gate.wait(30)}

    app.add_api_route("/api/v1/test/shrink", shrink, methods=["GET"])
    app.add_api_route("/api/v1/test/block", block, methods=["GET"])
    secrets = {role: ws.tokens.create(user, role)[1] for role, user in USERS.items()}
    server = ThreadedServer(app)
    api = ApiServer(ws, server.url, secrets)
    try:
        yield Served(api, capacity, gate, entered)
    finally:
        gate.set()
        api.close()
        server.stop()


HEAVY: list[tuple[str, str, dict[str, str], Work, str, int]] = [
    ("GET", "/monitoring/report", {"deployment": "web"}, Work.MONITORING_REPORT, "viewer", 404),
    ("POST", f"/monitoring/evaluations/{MISSING}/rerun", {}, Work.EVALUATION_RERUN, "viewer",
     404),
    ("GET", "/governance/report", {}, Work.GOVERNANCE_REPORT, "viewer", 200),
    ("GET", "/audit/verify", {}, Work.AUDIT_VERIFY, "viewer", 200),
    ("GET", "/retention", {}, Work.RETENTION, "admin", 200),
    ("POST", "/retention/apply", {}, Work.RETENTION, "admin", 200),
]


@pytest.mark.parametrize(("method", "path", "params", "work", "role", "free"), HEAVY,
                         ids=[f"{m} {p}" for m, p, *_ in HEAVY])
def test_heavy_work_is_refused_503_with_retry_after_while_its_slots_are_taken(
        served: Served, method: str, path: str, params: dict[str, str], work: Work,
        role: str, free: int) -> None:
    ws = served.api.workspace
    ws.policies.apply(ws.actor, RETENTION)
    http = served.api.http(role)
    with served.capacity.slot(work):
        # refused, not queued: the slot is held until the block ends
        busy = http.request(method, "/api/v1" + path, params=params)
        assert busy.status_code == 503, busy.text
        assert busy.headers["Retry-After"] == "7"
        assert busy.json()["error"]["code"] == "busy"
        assert str(work) in busy.json()["error"]["message"]
        other = next(w for w in Work if w is not work)
        assert served.capacity.taken(other) == 0
        assert http.get("/api/v1/audit/head").status_code == 200
    answer = http.request(method, "/api/v1" + path, params=params)
    assert answer.status_code == free, answer.text
    assert served.capacity.taken(work) == 0


def test_the_client_sees_a_busy_server_as_a_backend_error_naming_the_kind(
        served: Served) -> None:
    client = served.api.client("viewer")
    with served.capacity.slot(Work.AUDIT_VERIFY), pytest.raises(BackendError) as refused:
        client.audit.verify()
    assert "audit chain verification" in str(refused.value)
    assert client.audit.verify().ok


def test_other_kinds_still_answer_while_one_kind_is_full(served: Served) -> None:
    http = served.api.http("viewer")
    with served.capacity.slot(Work.MONITORING_REPORT):
        assert http.get("/api/v1/audit/verify").status_code == 200
        assert http.get("/api/v1/governance/report").status_code == 200


def test_capacity_refuses_kinds_without_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Capacity({Work.AUDIT_VERIFY: 0})
    with pytest.raises(ValueError, match="Retry-After"):
        Capacity(retry_after=0)
    two = Capacity({Work.AUDIT_VERIFY: 2})
    with two.slot(Work.AUDIT_VERIFY), two.slot(Work.AUDIT_VERIFY):
        assert two.taken(Work.AUDIT_VERIFY) == 2
    assert two.taken(Work.AUDIT_VERIFY) == 0


def test_health_answers_while_every_worker_thread_is_busy(served: Served) -> None:
    # Health answers on the event loop, and so does the app-wide ``authenticate`` for the
    # public paths (it hands only the token check to a worker thread).
    assert inspect.iscoroutinefunction(authenticate)
    http = served.api.http("viewer")
    assert http.get("/api/v1/test/shrink").json() == {"threads": WORKER_THREADS}
    with ThreadPoolExecutor(WORKER_THREADS) as pool:
        blocked = [pool.submit(http.get, "/api/v1/test/block") for _ in range(WORKER_THREADS)]
        try:
            for _ in range(WORKER_THREADS):  # both worker threads are held in the handler
                assert served.entered.acquire(timeout=20)
            # answered while the gate holds both worker threads: it needed none of them
            health = httpx.get(f"{served.api.url}/api/v1/health", timeout=10)
        finally:
            served.gate.set()
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert all(b.result().json() == {"released": True} for b in blocked)
