"""Runs started or resumed over the API execute as the caller on the server's run pool (the
``BackgroundWork`` of ``loopline server``), on SQLite and PostgreSQL: the runner is the
caller's, so a run succeeds for a developer in a workspace whose server identity may not
write, and its records, events and audit name the caller; callers without write are refused."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from api_support import USERS, ApiServer

from loopline import pipeline, task
from loopline.api import ApiOptions, create_api
from loopline.api.background import BackgroundOptions, BackgroundWork
from loopline.app import Workspace
from loopline.core.runs import RunState
from loopline.serving.server import ThreadedServer
from loopline.store.audit_log import AuditFilter

SERVER_USER = "srv"  # the server process's own identity: it holds no role
FAIL = {"now": False}


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    FAIL["now"] = False
    yield
    FAIL["now"] = False


@task
def identity_seed(n: int) -> int:
    return n


@task
def identity_double(value: int) -> int:
    if FAIL["now"]:
        raise ValueError("identity_double failed on purpose")
    return 2 * value


@pipeline
def identity_flow(n: int = 1) -> Any:
    return identity_double(identity_seed(n))


@contextmanager
def _enforced_server(ws: Workspace,
                     extra_tokens: dict[str, tuple[str, str]] | None = None,
                     ) -> Iterator[tuple[ApiServer, BackgroundWork]]:
    """Serve the API with a ``BackgroundWork`` acting as ``srv`` (no role) as its run pool.

    Roles are enforced: the workspace's actor is admin, ``dev`` developer and ``vic`` viewer.
    """
    tokens = {role: (user, role) for role, user in USERS.items()} | (extra_tokens or {})
    secrets = {name: ws.tokens.create(user, role)[1] for name, (user, role) in tokens.items()}
    root = ws.actor
    ws.access.grant(root, root, "admin")
    ws.access.grant(root, "dev", "developer")
    ws.access.grant(root, "vic", "viewer")
    work = BackgroundWork(ws.as_actor(SERVER_USER), [identity_flow],
                          options=BackgroundOptions(max_runs=2), loop_duties=False)
    app = create_api(ws, ApiOptions(auth_failures_per_minute=0), [identity_flow],
                     execute=work)
    server = ThreadedServer(app)
    api = ApiServer(ws, server.url, secrets)
    try:
        yield api, work
    finally:
        api.close()
        server.stop()
        assert work.stop(60), "a run on the pool did not end"


def _actors_of(ws: Workspace, run_id: str) -> tuple[set[str], set[str], set[Any]]:
    """Return the actors of the run's audit entries and events, and the states it went to."""
    subject = f"pipeline_run:{run_id}"
    audit = {e.actor for e in ws.audit.entries(AuditFilter(subject=subject))}
    events = [e for e in ws.store.events.read_after(0) if e.subject == subject]
    return audit, {e.actor for e in events}, {e.payload.get("state") for e in events}


def test_a_run_started_over_the_api_executes_on_the_pool_as_the_caller_not_the_server(
        ws: Workspace) -> None:
    with _enforced_server(ws) as (api, work):
        developer = api.client("developer").pipelines
        started = developer.submit("identity_flow", {"n": 3})

        finished = developer.wait(started.id, timeout=60)

        assert finished.state is RunState.SUCCEEDED, finished.error
        assert finished.created_by == "dev"
        audit, events, states = _actors_of(ws, started.id)
        assert audit == {"dev"} and events == {"dev"}
        assert {"running", "succeeded"} <= {str(s) for s in states}
        # The pool's own runner acts as the server's identity, which may not write here:
        # the caller's run succeeding above is the caller's runner at work.
        control = ws.pipelines.create(identity_flow, {"n": 1})
        work.execute(identity_flow, control)
        assert work.scheduler.wait(60)
        assert ws.pipelines.runs.run(control.id).state is RunState.PENDING


def test_a_failed_run_resumed_over_the_api_executes_on_the_pool_as_the_caller(
        ws: Workspace) -> None:
    with _enforced_server(ws) as (api, work):
        developer = api.client("developer").pipelines
        FAIL["now"] = True
        run = developer.submit("identity_flow", {"n": 2})
        assert developer.wait(run.id, timeout=60).state is RunState.FAILED
        FAIL["now"] = False

        resumed = developer.resume(run.id)

        assert (resumed.id, resumed.state) == (run.id, RunState.FAILED)
        assert developer.wait(resumed, timeout=60).state is RunState.SUCCEEDED
        assert work.scheduler.wait(60)
        audit, events, _ = _actors_of(ws, run.id)
        assert audit == {"dev"} and events == {"dev"}
        assert SERVER_USER not in {e.actor for e in ws.audit.entries()}


def test_callers_without_write_cannot_start_or_resume_runs_in_an_enforced_workspace(
        ws: Workspace) -> None:
    extra = {"eve-developer": ("eve", "developer")}  # a developer token, a viewer's binding
    with _enforced_server(ws, extra) as (api, work):
        ws.access.grant(ws.actor, "eve", "viewer")
        pending = ws.pipelines.create(identity_flow, {"n": 1})
        body = {"pipeline": "identity_flow", "parameters": {"n": 1}}
        for token in ("viewer", "eve-developer", "admin"):  # ada, the admin token, holds none
            http = api.http(token)
            answer = http.post("/api/v1/runs", json=body)
            assert answer.status_code == 403, (token, answer.text)
            answer = http.post(f"/api/v1/runs/{pending.id}/resume", json={})
            assert answer.status_code == 403, (token, answer.text)
        assert [r.id for r in ws.pipelines.runs.runs()] == [pending.id]
        assert ws.pipelines.runs.run(pending.id).state is RunState.PENDING
        assert work.in_flight == 0
