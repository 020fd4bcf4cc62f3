"""Pipeline runs over the API and the client, on SQLite and PostgreSQL: starting a pipeline the
server loaded, waiting for it, reading runs, tasks, attempts and logs as the workspace does,
resuming and cancelling as the caller, and refusing what must be refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from api_support import USERS, ApiServer

from loopline import pipeline, task
from loopline.api import ApiOptions, create_api
from loopline.api.run_starter import RunPool, RunStarter, starter_of
from loopline.app import Workspace
from loopline.client.runs import PipelineInfo, PipelineParameter
from loopline.core.errors import (
    AccessDeniedError,
    BackendError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
)
from loopline.core.runs import PipelineRun, RunState, TaskState
from loopline.pipelines import PipelineDefinition, Runner, Schedule
from loopline.pipelines.context import current_task
from loopline.serving.server import ThreadedServer
from loopline.store.audit_log import AuditFilter

BROKEN = {"explode": False}
GATE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    BROKEN["explode"] = False
    GATE.set()
    yield
    GATE.set()


@task
def numbers(n: int) -> list[int]:
    current_task().record_log("stdout", f"made {n} numbers\n".encode())
    return list(range(n))


@task
def total(values: list[int]) -> int:
    if BROKEN["explode"]:
        raise ValueError("total exploded on purpose")
    return sum(values)


@task
def held() -> int:
    GATE.wait(30)
    return 1


@pipeline(schedules=[Schedule("0 3 * * *", parameters={"n": 10})])
def counting(n: int, label: str = "x") -> Any:
    return total(numbers(n))


@pipeline
def waiting() -> Any:
    return held()


PIPELINES = (counting, waiting)


@contextmanager
def _served(ws: Workspace, pipelines: Sequence[PipelineDefinition] = PIPELINES,
            execute: RunPool | None = None,
            starter: RunStarter | None = None) -> Iterator[tuple[ApiServer, RunStarter]]:
    """Serve the API with ``pipelines`` (``api_support.serve_api`` passes none)."""
    secrets = {role: ws.tokens.create(user, role)[1] for role, user in USERS.items()}
    app = create_api(ws, ApiOptions(auth_failures_per_minute=0), pipelines=pipelines,
                     execute=execute)
    if starter is not None:
        app.state.run_starter = starter
    runs = starter_of(app.state)
    server = ThreadedServer(app)
    api = ApiServer(ws, server.url, secrets)
    try:
        yield api, runs
    finally:
        GATE.set()
        assert runs.join(60), "a run started over the API did not end"
        api.close()
        server.stop()


@pytest.fixture
def served(ws: Workspace) -> Iterator[ApiServer]:
    with _served(ws) as (api, _):
        yield api


def test_a_submitted_run_succeeds_on_the_server_and_reads_the_same_as_in_the_workspace(
        served: ApiServer) -> None:
    ws, client = served.workspace, served.client("developer")
    started = client.pipelines.submit(counting, {"n": 4})
    assert (started.pipeline, started.parameters) == ("counting", {"n": 4, "label": "x"})
    assert started.state in (RunState.PENDING, RunState.RUNNING)

    finished = client.pipelines.wait(started.id, timeout=60)

    assert finished.state is RunState.SUCCEEDED
    assert finished == client.pipelines.runs.run(started.id) == ws.pipelines.runs.run(started.id)
    tasks = ws.pipelines.runs.tasks(started.id)
    assert [(t.task_key, t.state) for t in tasks] == [("numbers", TaskState.SUCCEEDED),
                                                      ("total", TaskState.SUCCEEDED)]
    assert client.pipelines.runs.tasks(started.id) == tasks
    assert client.pipelines.runs.attempts(started.id, "numbers") == \
        ws.pipelines.runs.attempts(started.id, "numbers")
    assert client.pipelines.runs.runs() == ws.pipelines.runs.runs()
    assert client.pipelines.runs.runs("counting", state="succeeded") == [finished]
    assert client.pipelines.runs.runs("waiting") == []


def test_the_run_is_created_by_the_token_user_and_its_events_name_them(
        served: ApiServer) -> None:
    started = served.client("developer").pipelines.submit("counting", {"n": 1})
    served.client("developer").pipelines.wait(started.id, timeout=60)
    assert started.created_by == "dev"
    assert served.workspace.pipelines.runs.run(started.id).created_by == "dev"
    events = [e for e in served.workspace.store.events.read_after(0)
              if e.subject == f"pipeline_run:{started.id}"]
    assert events and {e.actor for e in events} == {"dev"}


def test_starting_an_unknown_pipeline_is_refused_404_naming_it_and_what_is_known(
        served: ApiServer) -> None:
    answer = served.http("developer").post("/api/v1/runs", json={"pipeline": "nope"})
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert "'nope'" in message and "counting, waiting" in message
    with pytest.raises(NotFoundError, match="nope"):
        served.client("developer").pipelines.submit("nope")
    assert served.workspace.pipelines.runs.runs() == []


@pytest.mark.parametrize(("body", "field"), [
    ({"pipeline": "counting", "parameters": {"n": "four"}}, "parameters.n"),
    ({"pipeline": "counting", "parameters": {}}, "parameters.n"),
    ({"pipeline": "counting", "parameters": {"n": 1, "zzz": 2}}, "parameters.zzz"),
    ({"pipeline": "counting", "parameters": {"n": 1}, "extra": 1}, "extra"),
    ({"pipeline": "", "parameters": {}}, "pipeline"),
])
def test_bad_parameters_are_refused_422_naming_the_field_and_nothing_is_recorded(
        served: ApiServer, body: dict[str, Any], field: str) -> None:
    answer = served.http("developer").post("/api/v1/runs", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert served.workspace.pipelines.runs.runs() == []


def test_the_client_raises_invalid_argument_for_bad_parameters(served: ApiServer) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        served.client("developer").pipelines.submit("counting", {"n": True})
    assert caught.value.field == "parameters.n"


def test_a_viewer_cannot_start_resume_or_cancel_runs(served: ApiServer) -> None:
    run = served.workspace.pipelines.create(counting, {"n": 1})
    viewer = served.http("viewer")
    for path, body in [("/api/v1/runs", {"pipeline": "counting", "parameters": {"n": 1}}),
                       (f"/api/v1/runs/{run.id}/resume", {}),
                       (f"/api/v1/runs/{run.id}/cancel", None)]:
        answer = viewer.post(path, json=body)
        assert answer.status_code == 403, (path, answer.text)
    with pytest.raises(AccessDeniedError):
        served.client("viewer").pipelines.submit("counting", {"n": 1})
    assert [r.id for r in served.workspace.pipelines.runs.runs()] == [run.id]
    assert served.workspace.pipelines.runs.run(run.id).state is RunState.PENDING
    assert served.client("viewer").pipelines.runs.run(run.id) == run


def test_pipelines_lists_what_the_server_can_start_with_parameters_and_schedules(
        served: ApiServer) -> None:
    found = served.client("viewer").pipelines.available()
    assert [p.name for p in found] == ["counting", "waiting"]
    assert found[0] == PipelineInfo(
        "counting", (PipelineParameter("n", True, "int"),
                     PipelineParameter("label", False, "str", "x")),
        ({"name": "default", "cron": "0 3 * * *", "timezone": "UTC", "catchup": "latest",
          "parameters": {"n": 10}},), ())


def test_a_failed_run_resumed_as_the_caller_finishes_without_rerunning_finished_tasks(
        served: ApiServer) -> None:
    ws, pipelines = served.workspace, served.client("developer").pipelines
    BROKEN["explode"] = True
    run = pipelines.submit("counting", {"n": 3})
    failed = pipelines.wait(run.id, timeout=60)
    assert failed.state is RunState.FAILED and "exploded" in (failed.error or "")
    BROKEN["explode"] = False

    resumed = pipelines.resume(run.id, counting)

    assert (resumed.id, resumed.state) == (run.id, RunState.FAILED)
    assert pipelines.wait(resumed, timeout=60).state is RunState.SUCCEEDED
    assert [a.state for a in ws.pipelines.runs.attempts(run.id, "numbers")] == \
        [TaskState.SUCCEEDED]
    assert [a.state for a in ws.pipelines.runs.attempts(run.id, "total")] == \
        [TaskState.FAILED, TaskState.SUCCEEDED]
    with pytest.raises(InvalidTransitionError):
        pipelines.resume(run.id)


def test_resuming_as_another_pipeline_is_422_and_an_unknown_run_is_404(
        served: ApiServer) -> None:
    run = served.workspace.pipelines.create(counting, {"n": 1})
    http = served.http("developer")
    answer = http.post(f"/api/v1/runs/{run.id}/resume", json={"pipeline": "waiting"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "pipeline"
    missing = "0" * 32
    for method, path in [("GET", f"/api/v1/runs/{missing}"),
                         ("GET", f"/api/v1/runs/{missing}/tasks"),
                         ("GET", f"/api/v1/runs/{missing}/tasks/numbers/attempts"),
                         ("GET", f"/api/v1/runs/{missing}/logs"),
                         ("POST", f"/api/v1/runs/{missing}/resume"),
                         ("POST", f"/api/v1/runs/{missing}/cancel")]:
        assert http.request(method, path).status_code == 404, (method, path)
    assert http.get(f"/api/v1/runs/{run.id}/tasks/nope/attempts").status_code == 404
    assert http.get("/api/v1/runs/not-an-id").status_code == 422


def test_resuming_a_run_of_a_pipeline_the_server_lacks_is_404_naming_it(
        ws: Workspace) -> None:
    @pipeline(name="elsewhere")
    def elsewhere() -> Any:
        return total([1])

    run = ws.pipelines.create(elsewhere)
    with _served(ws) as (api, _):
        answer = api.http("developer").post(f"/api/v1/runs/{run.id}/resume", json={})
    assert answer.status_code == 404 and "'elsewhere'" in answer.json()["error"]["message"]


def test_cancelling_a_pending_run_cancels_it_and_is_audited_as_the_caller(
        served: ApiServer) -> None:
    ws, pipelines = served.workspace, served.client("developer").pipelines
    run = ws.pipelines.create(counting, {"n": 1})

    assert pipelines.cancel(run.id) is True

    assert pipelines.runs.run(run.id) == ws.pipelines.runs.run(run.id)
    assert ws.pipelines.runs.run(run.id).state is RunState.CANCELLED
    entries = ws.audit.entries(AuditFilter(subject=f"pipeline_run:{run.id}"))
    assert sorted((e.action, e.actor) for e in entries) == [
        ("pipeline_run.cancel_requested", "dev"), ("pipeline_run.created", ws.actor)]
    with pytest.raises(InvalidTransitionError):
        pipelines.cancel(run.id)


def test_logs_show_each_attempt_its_error_and_captured_output(served: ApiServer) -> None:
    pipelines = served.client("developer").pipelines
    BROKEN["explode"] = True
    run = pipelines.submit("counting", {"n": 2})
    pipelines.wait(run.id, timeout=60)

    text = pipelines.runs.logs(run.id)

    assert "== numbers attempt 1: succeeded" in text
    assert "-- stdout (15 bytes)\nmade 2 numbers\n" in text
    assert "== total attempt 1: failed" in text and "total exploded on purpose" in text
    assert "Traceback" in text
    only = pipelines.runs.logs(run.id, task="numbers", full=True)
    assert "made 2 numbers" in only and "total" not in only
    with pytest.raises(NotFoundError):
        pipelines.runs.logs(run.id, task="nope")


def test_runs_page_with_a_cursor_and_filter_by_state(served: ApiServer) -> None:
    ws = served.workspace
    made = [ws.pipelines.create(counting, {"n": i}) for i in range(3)]
    http = served.http("viewer")
    first = http.get("/api/v1/runs", params={"limit": 2}).json()
    second = http.get("/api/v1/runs", params={"limit": 2,
                                              "cursor": first["next_cursor"]}).json()
    ids = [r["id"] for r in first["items"] + second["items"]]
    assert ids == [r.id for r in ws.pipelines.runs.runs()] and set(ids) == {r.id for r in made}
    assert second["next_cursor"] is None
    assert http.get("/api/v1/runs", params={"state": "succeeded"}).json()["items"] == []
    assert http.get("/api/v1/runs", params={"state": "bogus"}).status_code == 422
    assert served.client("viewer").pipelines.runs.runs(limit=1) == ws.pipelines.runs.runs(limit=1)


class _Pool:
    """A server run pool that records what it is handed; ``execute`` runs them when asked."""

    def __init__(self, backlog_limit: int = 4, shut: bool = False) -> None:
        self.in_flight = 0
        self.backlog_limit = backlog_limit
        self.shut = shut
        self.handed: list[tuple[PipelineDefinition, PipelineRun, Runner, bool]] = []

    def execute(self, pipeline: PipelineDefinition, run: PipelineRun, runner: Runner, *,
                resume: bool) -> None:
        if self.shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self.handed.append((pipeline, run, runner, resume))

    def run_all(self) -> None:
        for definition, run, runner, _ in self.handed:
            runner.resume(run.id, definition)
            runner.close()


def test_with_a_pool_started_and_resumed_runs_are_handed_to_it_with_the_callers_runner(
        ws: Workspace) -> None:
    pool = _Pool()
    with _served(ws, execute=pool) as (api, runs):
        pipelines = api.client("developer").pipelines
        run = pipelines.submit("counting", {"n": 2})
        resumed = pipelines.resume(run.id)  # still pending: the pool did not execute it
        assert runs.running() == 0
        assert ws.pipelines.runs.run(run.id).state is RunState.PENDING
        assert [(p, r.id, runner.options.actor, resume)
                for p, r, runner, resume in pool.handed] == [
            (counting, run.id, "dev", False), (counting, resumed.id, "dev", True)]
        assert all(runner is not ws.pipelines for _, _, runner, _ in pool.handed)
        pool.handed.pop()
        pool.run_all()
        assert pipelines.wait(run.id, timeout=60).state is RunState.SUCCEEDED
    events = [e for e in ws.store.events.read_after(0) if e.subject == f"pipeline_run:{run.id}"]
    assert {e.actor for e in events} == {"dev"}


def test_a_pool_whose_backlog_is_at_its_limit_refuses_starts_and_resumes_503_recording_nothing(
        ws: Workspace) -> None:
    pool = _Pool(backlog_limit=3)
    pending = ws.pipelines.create(counting, {"n": 1})
    with _served(ws, execute=pool) as (api, _):
        http = api.http("developer")
        pool.in_flight = 3
        for path, body in [("/api/v1/runs", {"pipeline": "counting", "parameters": {"n": 1}}),
                           (f"/api/v1/runs/{pending.id}/resume", {})]:
            answer = http.post(path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"] == "5"
            error = answer.json()["error"]
            assert error["code"] == "overloaded" and "limit (3)" in error["message"]
        assert [r.id for r in ws.pipelines.runs.runs()] == [pending.id] and pool.handed == []
        pool.in_flight = 2
        started = api.client("developer").pipelines.submit("counting", {"n": 1})
        assert [r.id for _, r, _, _ in pool.handed] == [started.id]


def test_a_pool_that_was_shut_down_answers_503_and_the_run_stays_pending(
        ws: Workspace) -> None:
    with _served(ws, execute=_Pool(shut=True)) as (api, _):
        answer = api.http("developer").post("/api/v1/runs", json={"pipeline": "counting",
                                                                   "parameters": {"n": 1}})
        assert answer.status_code == 503 and "resume it later" in answer.json()["error"]["message"]
    [run] = ws.pipelines.runs.runs()
    assert run.state is RunState.PENDING and run.created_by == "dev"


def test_a_run_thread_that_fails_to_start_is_not_counted_and_frees_its_slot(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    starter = RunStarter(None, limit=1)
    view = ws.as_actor("dev")
    original = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith("loopline-api-run-"):
            raise RuntimeError("can't start new thread")
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start"):
        starter.start(view, counting, lambda: view.pipelines.create(counting, {"n": 1}))
    monkeypatch.undo()
    assert starter.running() == 0
    run = starter.start(view, counting, lambda: view.pipelines.create(counting, {"n": 2}))
    assert starter.join(60)
    assert ws.pipelines.runs.run(run.id).state is RunState.SUCCEEDED


def test_a_server_executing_as_many_runs_as_it_may_refuses_another_503_recording_nothing(
        ws: Workspace) -> None:
    GATE.clear()
    with _served(ws, starter=RunStarter(None, limit=1)) as (api, _):
        pipelines = api.client("developer").pipelines
        first = pipelines.submit("waiting")
        answer = api.http("developer").post("/api/v1/runs", json={"pipeline": "waiting"})
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert "executes 1 runs at once" in answer.json()["error"]["message"]
        with pytest.raises(BackendError):
            pipelines.submit("waiting")
        assert [r.id for r in ws.pipelines.runs.runs()] == [first.id]
        GATE.set()
        assert pipelines.wait(first.id, timeout=60).state is RunState.SUCCEEDED
