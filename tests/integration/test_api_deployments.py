"""Deployments over the API and the client, on SQLite and PostgreSQL: create, update, replace,
canary, promote, rollback, pause, resume, evacuate and one rollout tick give the records the
local workspace gives; unknown names are 404, bad routes or steps 422 naming the field, moves
the state machine forbids 409; every change is audited as the token's user."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import ApiServer, serve_api
from serving_support import register_constant

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import (
    AnalysisPolicy,
    CanaryPlan,
    DeploymentState,
    Route,
    RouteRole,
    Strategy,
)
from loopline.core.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
)
from loopline.deploy.evacuation import Evacuation
from loopline.loop.rollout import RolloutController
from loopline.store import AuditFilter
from loopline.store.serving_stats import StatsRow, add_stats, window_rows

P, C, S = RouteRole.PRIMARY, RouteRole.CANARY, RouteRole.SHADOW
PLAN = CanaryPlan((10.0, 50.0, 100.0), AnalysisPolicy(interval=timedelta(seconds=30)))
BASE = "/api/v1/deployments"


@pytest.fixture
def fraud(api: ApiServer) -> ApiServer:
    """The API over a workspace holding versions 1-3 of model ``fraud``."""
    for value in (1.0, 2.0, 3.0):
        register_constant(api.workspace, "fraud", value)
    return api


def _route(version: int, weight: float = 100.0, role: RouteRole = P) -> Route:
    return Route("fraud", version, weight, role)


def _error(answer: httpx.Response) -> tuple[int, str, str | None]:
    error = answer.json()["error"]
    return answer.status_code, error["code"], error["field"]


def _audited(ws: Workspace, name: str) -> list[tuple[str, str]]:
    """Return (action, actor) of the deployment's audit entries, oldest first."""
    entries = ws.audit.entries(AuditFilter(subject=f"deployment:{name}", newest_first=False))
    return [(e.action, e.actor) for e in entries]


def _created(api: ApiServer, name: str = "web", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "routes": [_route(1).as_record()], "strategy": "replace", **extra}
    answer = api.http("developer").post(BASE, json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


# -- the happy paths ---------------------------------------------------------------------------


def test_create_answers_201_and_reads_back_as_the_local_workspace_does(
        fraud: ApiServer) -> None:
    ws, client = fraud.workspace, fraud.client("developer")
    created = _created(fraud, description="fraud scoring", canary={"steps": [20, 100]})
    assert (created["state"], created["revision"], created["created_by"]) == (
        "active", 1, "dev")
    assert created["canary"]["analysis"]["interval"] == "PT1M"
    mirror = client.deployments.create("mirror", [_route(1), _route(2, 25.0, S)],
                                       Strategy.SHADOW, PLAN, reason="mirror v2")
    assert mirror == ws.deployments.get("mirror") and mirror.canary == PLAN
    assert client.deployments.get("web") == ws.deployments.get("web")
    assert client.deployments.list() == ws.deployments.list()
    assert client.deployments.history("mirror") == ws.deployments.history("mirror")
    assert client.deployments.history("mirror")[0].reason == "mirror v2"
    assert client.deployments.verdicts("web") == [] == ws.deployments.verdicts("web")
    assert _audited(ws, "web") == [("deployment.created", "dev")]
    assert _audited(ws, "mirror") == [("deployment.created", "dev")]


def test_a_canary_moves_through_pause_resume_promote_and_rollback_as_dev(
        fraud: ApiServer) -> None:
    ws, deployments = fraud.workspace, fraud.client("developer").deployments
    deployments.create("web", [_route(1)], "replace")
    replaced = deployments.replace("web", "fraud", 2, "blue/green to v2")
    assert replaced.routes == (_route(2),) and replaced.last_good == (_route(1),)
    started = deployments.start_canary("web", ("fraud", 3), PLAN, reason="try v3")
    assert started.state is DeploymentState.ROLLING_OUT
    assert started.routes == (_route(2, 90.0), _route(3, 10.0, C))
    assert deployments.pause("web").state is DeploymentState.PAUSED
    assert deployments.resume("web", "looks fine").state is DeploymentState.ROLLING_OUT
    promoted = deployments.promote("web", reason="good enough")
    assert (promoted.state, promoted.routes) == (DeploymentState.ACTIVE, (_route(3),))
    rolled = deployments.rollback("web", "v3 is slow")
    assert (rolled.state, rolled.routes) == (DeploymentState.ROLLED_BACK, (_route(2),))
    assert deployments.get("web") == ws.deployments.get("web") == rolled
    history = deployments.history("web")
    assert history == ws.deployments.history("web")
    assert [c.reason for c in history[:3]] == ["v3 is slow", "good enough", "looks fine"]
    assert _audited(ws, "web") == [(f"deployment.{action}", "dev") for action in (
        "created", "updated", "canary_started", "paused", "resumed", "promoted",
        "rolled_back")]


def test_update_switches_to_ab_arms_with_a_sticky_key(fraud: ApiServer) -> None:
    ws, deployments = fraud.workspace, fraud.client("developer").deployments
    deployments.create("web", [_route(1)], "replace")
    arms = [_route(1, 70.0), _route(2, 30.0, C), _route(3, 5.0, S)]
    updated = deployments.update("web", arms, "split 70/30", sticky_key="header:X-User")
    assert (updated.strategy, updated.sticky_key, updated.routes) == (
        Strategy.AB, "header:x-user", tuple(arms))
    assert updated == ws.deployments.get("web")
    assert _audited(ws, "web")[-1] == ("deployment.updated", "dev")


def test_history_and_verdicts_page_newest_first(fraud: ApiServer) -> None:
    deployments = fraud.client("developer").deployments
    deployments.create("web", [_route(1)], "replace")
    for version in (2, 3, 1):
        deployments.replace("web", "fraud", version)
    http = fraud.http("viewer")
    first = http.get(f"{BASE}/web/history", params={"limit": 3}).json()
    assert [c["revision"] for c in first["items"]] == [4, 3, 2]
    rest = http.get(f"{BASE}/web/history",
                    params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert ([c["revision"] for c in rest["items"]], rest["next_cursor"]) == ([1], None)
    assert [c.revision for c in deployments.history("web", 2)] == [4, 3]
    assert http.get(f"{BASE}/web/verdicts").json() == {"items": [], "next_cursor": None}


def test_resolve_follows_an_alias_to_its_version(fraud: ApiServer) -> None:
    fraud.workspace.models.set_alias("fraud", "champion", 2)
    deployments = fraud.client("viewer").deployments
    assert deployments.resolve("models:/fraud@champion") == ("fraud", 2)
    assert deployments.resolve("models:/fraud/3") == fraud.workspace.deployments.resolve(
        "models:/fraud/3")
    with pytest.raises(NotFoundError):
        deployments.resolve("models:/fraud@nobody")
    with pytest.raises(InvalidArgumentError) as bad:
        deployments.resolve("not a uri at all")
    assert bad.value.field == "model"


def test_evacuate_rolls_back_every_deployment_answering_with_the_version(
        fraud: ApiServer) -> None:
    ws, deployments = fraud.workspace, fraud.client("developer").deployments
    deployments.create("web", [_route(1)], "replace")
    deployments.replace("web", "fraud", 2)
    deployments.create("mirror", [_route(1), _route(2, 50.0, S)], "shadow")
    report = deployments.evacuate("fraud", 2, "v2 leaks")
    assert sorted(report, key=lambda e: e.deployment) == [
        Evacuation("mirror", "route_removed", "v2 leaks; shadow route to models:/fraud/2 "
                                              "removed", 2),
        Evacuation("web", "rolled_back", "v2 leaks; rolled back off models:/fraud/2", 3)]
    assert ws.deployments.get("web").routes == (_route(1),)
    assert _audited(ws, "web")[-1] == ("deployment.rolled_back", "dev")
    assert _audited(ws, "mirror")[-1] == ("deployment.route_removed", "dev")


# -- refusals ----------------------------------------------------------------------------------


UNKNOWN: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/nope", None), ("GET", "/nope/history", None), ("GET", "/nope/verdicts", None),
    ("PATCH", "/nope", {"routes": [{"model": "fraud", "version": 1}], "reason": "x"}),
    ("POST", "/nope/replace", {"model": "fraud", "version": 1}),
    ("POST", "/nope/canary", {"model": "fraud", "version": 2}),
    ("POST", "/nope/promote", {}), ("POST", "/nope/rollback", {"reason": "x"}),
    ("POST", "/nope/pause", None), ("POST", "/nope/resume", {"reason": None}),
]


def test_an_unknown_deployment_is_404_on_every_route(fraud: ApiServer) -> None:
    http = fraud.http("developer")
    for method, path, body in UNKNOWN:
        answer = http.request(method, BASE + path, json=body)
        assert _error(answer)[:2] == (404, "not_found"), (method, path, answer.text)
    with pytest.raises(NotFoundError):
        fraud.client("viewer").deployments.get("nope")


def test_an_unknown_model_version_is_404_and_changes_nothing(fraud: ApiServer) -> None:
    deployments = fraud.client("developer").deployments
    with pytest.raises(NotFoundError):
        deployments.create("web", [_route(9)], "replace")
    _created(fraud)
    with pytest.raises(NotFoundError):
        deployments.start_canary("web", ("fraud", 9))
    assert fraud.workspace.deployments.get("web").revision == 1


def _route_body(**changes: Any) -> dict[str, Any]:
    return {"model": "fraud", "version": 1, "weight": 100, "role": "primary", **changes}


BAD_CREATES: dict[str, tuple[dict[str, Any], str]] = {
    "weight above 100": ({"routes": [_route_body(weight=150)]}, "routes[0].weight"),
    "weights not summing to 100": ({"routes": [_route_body(weight=60), _route_body(
        version=2, weight=30, role="canary")], "strategy": "ab", "sticky_key": "field:u"},
        "routes"),
    "version 0": ({"routes": [_route_body(version=0)]}, "routes[0].version"),
    "version as text": ({"routes": [_route_body(version="1")]}, "routes[0].version"),
    "no routes": ({"routes": []}, "routes"),
    "unknown role": ({"routes": [_route_body(role="boss")]}, "routes[0].role"),
    "unknown strategy": ({"strategy": "yolo"}, "strategy"),
    "canary strategy": ({"strategy": "canary"}, "strategy"),
    "bad name": ({"name": "-web"}, "name"),
    "steps decreasing": ({"canary": {"steps": [50, 10, 100]}}, "canary.steps"),
    "steps not ending at 100": ({"canary": {"steps": [10, 50]}}, "canary.steps"),
    "step above 100": ({"canary": {"steps": [10, 500]}}, "canary.steps[1]"),
    "zero interval": ({"canary": {"analysis": {"interval": 0}}}, "canary.analysis.interval"),
    "bad sticky key": ({"sticky_key": "cookie:x"}, "sticky_key"),
    "unknown field": ({"colour": "red"}, "colour"),
    "blank reason": ({"reason": "  "}, "reason"),
    "NUL in the description": ({"description": "a\x00b"}, "description"),
    "NUL in a threshold's name": ({"canary": {"analysis": {"extra": {"a\x00": 1}}}},
                                  "canary.analysis.extra.a\x00.[key]"),
}


def test_a_bad_create_is_422_naming_the_field_and_creates_nothing(fraud: ApiServer) -> None:
    http = fraud.http("developer")
    for case, (changes, field) in BAD_CREATES.items():
        body = {"name": "web", "routes": [_route_body()], "strategy": "replace", **changes}
        answer = http.post(BASE, json=body)
        assert _error(answer) == (422, "invalid_argument", field), (case, answer.text)
    assert fraud.workspace.deployments.list() == []


BAD_CHANGES: list[tuple[str, dict[str, Any], str]] = [
    ("/web/canary", {"model": "fraud", "version": 2, "canary": {"steps": [100]}},
     "canary.steps"),
    ("/web/canary", {"model": "fraud", "version": 1}, "model"),
    ("/web/canary", {"model": "fraud", "version": -2}, "version"),
    ("/web/replace", {"model": "fraud/1", "version": 2}, "model"),
    ("/web/rollback", {}, "reason"),
    ("/web/rollback", {"reason": "x" * 2001}, "reason"),
    ("/evacuate", {"model": "fraud", "version": 0, "reason": "x"}, "version"),
    ("/web/replace", {"model": "fraud", "version": 2, "reason": "v2\x00"}, "reason"),
    ("/evacuate", {"model": "fraud", "version": 1, "reason": "\x00"}, "reason"),
]


def test_a_bad_change_is_422_naming_the_field_and_changes_nothing(fraud: ApiServer) -> None:
    _created(fraud)
    http = fraud.http("developer")
    for path, body, field in BAD_CHANGES:
        answer = http.post(BASE + path, json=body)
        assert _error(answer) == (422, "invalid_argument", field), (path, answer.text)
    answer = http.patch(f"{BASE}/web", json={"routes": [_route_body(weight=50)],
                                              "reason": "half"})
    assert _error(answer) == (422, "invalid_argument", "routes")
    assert fraud.workspace.deployments.get("web").revision == 1


def test_moves_the_state_machine_forbids_are_409(fraud: ApiServer) -> None:
    deployments = fraud.client("developer").deployments
    _created(fraud)
    with pytest.raises(AlreadyExistsError):
        deployments.create("web", [_route(2)], "replace")
    for move in (deployments.promote, deployments.pause, deployments.resume):
        with pytest.raises(InvalidTransitionError):
            move("web")
    with pytest.raises(ConflictError):
        deployments.rollback("web", "nothing to go back to")
    answer = fraud.http("developer").post(f"{BASE}/web/promote")
    assert _error(answer) == (409, "invalid_transition", None)
    deployments.start_canary("web", ("fraud", 2))
    with pytest.raises(InvalidTransitionError):
        deployments.replace("web", "fraud", 3)
    with pytest.raises(InvalidTransitionError):
        deployments.start_canary("web", ("fraud", 3))
    assert [c.revision for c in deployments.history("web")] == [2, 1]


def test_a_viewer_reads_deployments_but_changes_none(fraud: ApiServer) -> None:
    _created(fraud)
    viewer = fraud.http("viewer")
    assert viewer.get(f"{BASE}/web").json()["name"] == "web"
    for path, body in (("", {"name": "x", "routes": [_route_body()], "strategy": "replace"}),
                       ("/web/replace", {"model": "fraud", "version": 2}),
                       ("/web/rollback", {"reason": "x"}), ("/rollouts/run", {})):
        assert _error(viewer.post(BASE + path, json=body))[:2] == (403, "access_denied")
    assert fraud.workspace.deployments.get("web").revision == 1


def test_text_with_nul_or_a_cursor_out_of_range_is_422_naming_it(fraud: ApiServer) -> None:
    _created(fraud)
    http = fraud.http("viewer")
    cases = [(f"{BASE}/-/resolve", {"uri": "models:/fraud/1\x00"}, "uri"),
             (f"{BASE}/web/history", {"cursor": "1000"}, "cursor"),
             (f"{BASE}/web/verdicts", {"cursor": "999999999"}, "cursor"),
             (f"{BASE}/web/history", {"cursor": "99999999999999999999"}, "cursor"),
             (f"{BASE}/web/history", {"cursor": "-1"}, "cursor")]
    for path, params, field in cases:
        answer = http.get(path, params=params)
        assert _error(answer) == (422, "invalid_argument", field), (params, answer.text)
    nul_name = http.get(f"{BASE}/we%00b")
    assert nul_name.status_code in (404, 422), nul_name.text


# -- the rollout controller --------------------------------------------------------------------


@pytest.fixture
def clocked(db_url: str, tmp_path: Path) -> Iterator[tuple[ApiServer, ManualClock]]:
    """The API over a workspace on a manual clock, with versions 1-2 of ``fraud``."""
    clock = ManualClock()
    workspace = Workspace.init(tmp_path / "clocked", overrides={"db_url": db_url}, clock=clock)
    try:
        for value in (1.0, 2.0):
            register_constant(workspace, "fraud", value)
        with serve_api(workspace) as api:
            yield api, clock
    finally:
        workspace.close()


def test_a_rollout_tick_judges_each_elapsed_window_once(
        clocked: tuple[ApiServer, ManualClock]) -> None:
    api, clock = clocked
    deployments = api.client("admin").deployments
    api.client("developer").deployments.create("web", [_route(1)], "replace")
    api.client("developer").deployments.start_canary("web", ("fraud", 2), PLAN)
    assert deployments.run_rollouts() == []  # no window has elapsed yet
    clock.advance(timedelta(seconds=60))
    judged = deployments.run_rollouts(settle=timedelta(seconds=15))
    assert [(v.deployment, v.step, v.verdict) for v in judged] == [
        ("web", 0, "inconclusive")]  # no traffic: too few samples
    stored = api.workspace.deployments.verdicts("web")
    assert [v.id for v in stored] == [judged[0].id]
    assert deployments.verdicts("web") == stored
    assert deployments.run_rollouts() == []  # the window is judged already
    assert api.http("admin").post(f"{BASE}/rollouts/run").json() == []


def test_a_rollout_tick_needs_admin_and_a_settle_no_shorter_than_the_default(
        fraud: ApiServer) -> None:
    _created(fraud)
    refused = fraud.http("developer").post(f"{BASE}/rollouts/run", json={})
    assert _error(refused)[:2] == (403, "access_denied")
    admin = fraud.http("admin")
    for settle in (0, 14.5, 7200):
        answer = admin.post(f"{BASE}/rollouts/run", json={"settle": settle})
        assert _error(answer) == (422, "invalid_argument", "settle"), (settle, answer.text)
    assert admin.post(f"{BASE}/rollouts/run", json={"settle": 15}).json() == []


def test_a_rollout_tick_over_http_leaves_serving_stats_to_the_background_duty(
        clocked: tuple[ApiServer, ManualClock]) -> None:
    api, clock = clocked
    ws = api.workspace
    ws.deployments.create("web", [_route(1)], "replace")
    old = clock.now() - timedelta(days=30)
    add_stats(ws.store, [StatsRow("web", "models:/fraud/1", "server-a", old, 5, 0, {})])

    def kept() -> int:
        return len(window_rows(ws.store.engine, "web", old, old + timedelta(seconds=10)))

    assert api.client("admin").deployments.run_rollouts() == []
    assert kept() == 1
    assert RolloutController(ws.store, ws.deployments).prune(clock.now()) == 1  # what a duty does
    assert kept() == 0

