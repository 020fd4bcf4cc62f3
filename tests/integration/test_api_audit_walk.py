"""Every mutating operation in the OpenAPI document is audited as the token's user.

One scenario calls each state-changing operation (POST, PUT, PATCH, DELETE) once, through the
client where it has a method and over raw HTTP where it has not, each with a token of a
different user where roles allow. A recorder around the app notes, for every such request,
the route it reached, its status and the audit entries that appeared while it ran. Then:

- the scenario reached every mutating operation of the document, so a new endpoint without
  an exercise here fails this test;
- every call succeeded, and each operation that changes something left at least one entry
  (per operation: uploading a payload the store already holds changes nothing);
- every entry written during a call names that call's token user, never the server.

The only operations allowed to leave no entry are listed in ``CHANGES_NOTHING_HERE`` with the
reason; each of them must also leave none.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from api_support import USERS, ApiServer, serve_api
from sklearn.dummy import DummyClassifier

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.core.audit import AuditEntry
from loopline.core.deployments import Route
from loopline.core.runs import RunState
from loopline.data.validation import Suite
from loopline.store import AuditFilter

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
PREFIX = "/api/v1"  # operations are named by their path under it
CHANGES_NOTHING_HERE = {
    # recomputes a stored evaluation and compares; it stores nothing (read permission)
    ("POST", "/monitoring/evaluations/{evaluation_id}/rerun"),
    # judges canaries whose window has elapsed: none has here, so nothing is stored
    ("POST", "/deployments/rollouts/run"),
    # loads and scores the version in a fresh process and reports; it stores nothing
    ("POST", "/models/{name}/versions/{version}/verify"),
}
GATE = threading.Event()
FAIL_ONCE = {"armed": False}
FEATURES = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 0.0, 1.0, 0.0]})
GUARD = textwrap.dedent("""\
    kind: gate_policy
    name: prod-guard
    applies_to: {models: ["iris"], gates: [alias], targets: [production]}
    rules:
      - {id: one-approver, kind: approvals, count: 1, expires_after: 2d}
    """)
SUITE = Suite.from_yaml("""
name: basic
expectations:
  - {type: column_exists, column: x}
""")
RETENTION = textwrap.dedent("""\
    kind: retention
    name: default
    classes:
      run_logs: {max_age: 30d}
    """)
MONITORING: dict[str, Any] = {"rules": [
    {"name": "quiet", "signal": "throughput", "deployment": "web", "window": "15m",
     "threshold": 1.0, "comparison": "below", "severity": "warning"}]}


@task
def count(n: int) -> int:
    if FAIL_ONCE["armed"]:
        FAIL_ONCE["armed"] = False
        raise ValueError("failed once on purpose")
    return n


@task
def held() -> int:
    GATE.wait(30)
    return 1


@pipeline
def counting(n: int = 3) -> Any:
    return count(n)


@pipeline
def waiting() -> Any:
    return held()


@dataclass
class Call:
    """One mutating request as the recorder saw it."""

    method: str
    route: str
    status: int
    caller: str
    actors: list[str]


@dataclass
class Recorder:
    """An ASGI wrapper noting each mutating request's route, caller, status and new entries."""

    app: Any
    workspace: Workspace
    users: dict[str, str]  # token secret -> its user
    calls: list[Call] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        before = self.workspace.audit.head()[0]
        headers = dict(scope["headers"])
        secret = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        status: list[int] = []

        async def noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # noted before the answer leaves, so the caller never reads a stale list
                route = getattr(scope.get("route"), "path", scope["path"])
                self.calls.append(Call(scope["method"], route.removeprefix(PREFIX), status[0],
                                       self.users.get(secret, "?"),
                                       [entry.actor for entry in self._after(before)]))
            await send(message)

        await self.app(scope, receive, noting)

    def _after(self, seq: int) -> list[AuditEntry]:
        newest = self.workspace.audit.entries(AuditFilter(limit=1000, newest_first=True))
        return [entry for entry in reversed(newest) if entry.seq > seq]


@dataclass
class Walk:
    """The served API and the recorder behind it."""

    api: ApiServer
    recorder: Recorder


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    GATE.clear()
    FAIL_ONCE["armed"] = False
    recorders: list[Recorder] = []

    def recorded(app: Any, secrets: dict[str, str]) -> Recorder:
        users = {secrets[role]: user for role, user in USERS.items()}
        recorders.append(Recorder(app, workspace, users))
        return recorders[0]

    with Workspace.init(tmp_path / "ws") as workspace, \
            serve_api(workspace, pipelines=[counting, waiting], wrap=recorded) as api:
        try:
            yield Walk(api, recorders[0])
        finally:
            GATE.set()  # a held run must end before the server checks every run did


def _documented(api: ApiServer) -> set[tuple[str, str]]:
    """The document's mutating operations (read as the admin: roles are enforced by now)."""
    answer = api.http("admin").get("/api/v1/openapi.json")
    assert answer.status_code == 200, answer.text
    return {(method.upper(), path.removeprefix(PREFIX))
            for path, item in answer.json()["paths"].items()
            for method in item if method.upper() in MUTATING}


def _runs(api: ApiServer) -> None:
    dev = api.client("developer")
    finished = dev.pipelines.wait(dev.pipelines.submit("counting", {"n": 2}).id, timeout=60)
    assert finished.state is RunState.SUCCEEDED, finished.error
    FAIL_ONCE["armed"] = True
    failed = dev.pipelines.wait(dev.pipelines.submit("counting", {"n": 3}).id, timeout=60)
    assert failed.state is RunState.FAILED
    resumed = dev.pipelines.resume(failed.id)
    assert dev.pipelines.wait(resumed, timeout=60).state is RunState.SUCCEEDED
    held_run = dev.pipelines.submit("waiting", {})
    assert dev.pipelines.cancel(held_run.id)
    GATE.set()
    dev.pipelines.wait(held_run.id, timeout=60)


def _models(api: ApiServer) -> None:
    dev, admin = api.client("developer"), api.client("admin")
    model = DummyClassifier(strategy="most_frequent").fit(FEATURES[["x"]], FEATURES["y"])
    for _ in range(2):
        dev.models.register(model, "iris", input_example=FEATURES[["x"]])
    dev.models.set_alias("iris", "candidate", 2)
    dev.models.delete_alias("iris", "candidate")
    dev.models.set_status("models:/iris/1", "staging")
    admin.models.trust("models:/iris/1", "reviewed in the audit walk")
    assert dev.models.verify("models:/iris/1").passed


def _deployments(api: ApiServer) -> None:
    dev, admin = api.client("developer"), api.client("admin")
    dev.deployments.create("web", [Route("iris", 1, 100.0)], "replace", reason="first")
    dev.deployments.start_canary("web", ("iris", 2), reason="try two")
    dev.deployments.pause("web", "hold")
    dev.deployments.resume("web", "go on")
    assert dev.deployments.evacuate("iris", 2, "pulled")  # the canary route goes
    dev.deployments.start_canary("web", ("iris", 2), reason="again")
    dev.deployments.promote("web", reason="good")
    dev.deployments.rollback("web", "back to one")
    dev.deployments.replace("web", "iris", 2, reason="two after all")
    dev.deployments.update("web", [Route("iris", 1, 100.0)], "one again")
    assert admin.deployments.run_rollouts() == []


def _data_and_monitoring(api: ApiServer) -> None:
    dev, admin, viewer = api.client("developer"), api.client("admin"), api.client("viewer")
    assert dev.datasets.snapshot(FEATURES, "features").created
    dev.validate_dataset("features", SUITE)
    admin.monitor_configs.apply("ada", MONITORING)
    evaluations = dev.evaluator.run_in_force()
    assert evaluations
    viewer.evaluator.rerun(evaluations[0].id)


def _governance(api: ApiServer) -> None:
    dev, app, admin = (api.client(role) for role in ("developer", "approver", "admin"))
    admin.policies.apply("ada", {"guard.yaml": GUARD, "retention.yaml": RETENTION})
    approved = dev.approvals.request("iris", 1, "alias", "production", "ship it")
    app.approvals.approve(approved.id, "reviewed")
    rejected = dev.approvals.request("iris", 2, "alias", "production", "ship two")
    app.approvals.reject(rejected.id, "not yet")
    withdrawn = dev.approvals.request("iris", 2, "alias", "production", "ship two again")
    dev.approvals.withdraw(withdrawn.id)
    hold = admin.legal_holds.add("run_logs", "run:all", "litigation")
    admin.legal_holds.release(hold.id)
    admin.retention.run(dry_run=False)
    made, _ = admin.tokens.create("eve", "viewer")
    admin.tokens.revoke(made.id)


def _access(api: ApiServer) -> None:
    """Last: the first binding makes roles enforced, so the admin grants itself first."""
    admin = api.client("admin")
    admin.access.grant("ada", "ada", "admin")
    admin.access.add_identity("ada", "scheduler", "service", "runs nightly")
    admin.access.grant("ada", "scheduler", "viewer")
    admin.access.revoke("ada", "scheduler", "viewer")
    admin.access.disable("ada", "scheduler")
    admin.access.enable("ada", "scheduler")


def test_every_mutating_operation_is_audited_as_the_tokens_user(walk: Walk) -> None:
    steps: list[Callable[[ApiServer], None]] = [
        _runs, _models, _deployments, _data_and_monitoring, _governance, _access]
    for step in steps:
        step(walk.api)

    calls = walk.recorder.calls
    reached = {(call.method, call.route) for call in calls}
    assert _documented(walk.api) - reached == set(), "operations this walk never called"
    failed = [call for call in calls if not 200 <= call.status < 300]
    assert failed == [], "every call of the walk should have succeeded"
    # per operation, not per call: a payload the store already holds is not stored again
    audited = {(c.method, c.route) for c in calls if c.actors}
    silent = reached - audited - CHANGES_NOTHING_HERE
    assert silent == set(), "operations that changed something and left no audit entry"
    exempt = [c for c in calls if (c.method, c.route) in CHANGES_NOTHING_HERE and c.actors]
    assert exempt == [], "an operation said to change nothing wrote audit entries"
    strangers = [(c.method, c.route, c.caller, c.actors) for c in calls
                 if set(c.actors) - {c.caller}]
    assert strangers == [], "entries written as someone other than the call's token user"
