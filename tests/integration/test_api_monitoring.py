"""Monitoring and playbook actions over the API and the client, on every backend: a config
applied through the client is the one in force locally (admins only; the entry names the
token's user); a bad config is refused with 422 naming its place and writes nothing; the
rules run through the API as the token's user; evaluations, alerts and actions listed
through the client equal the local ones; a stored evaluation is re-run without writing; the
report is the HTML page of the deployment; callers without admin see webhook URLs by their
origin only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_support import ApiServer

from loopline.app import Workspace
from loopline.core.deployments import Route
from loopline.core.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.events import EventType
from loopline.core.models import NewModelVersion
from loopline.core.monitoring import AlertState, Evaluation, EvaluationStatus
from loopline.store import AuditFilter
from loopline.store import model_registry as model_records

HOOK = "https://hooks.example.com/T0/B1/s3cret-path"
CONFIG: dict[str, Any] = {
    "playbooks": {"page": {"steps": [{"action": "notify", "url": HOOK, "message": "quiet"},
                                     {"action": "rollback"}]}},
    "rules": [
        # no traffic at all is a throughput of 0.0: it breaches at once and fires
        {"name": "quiet", "signal": "throughput", "deployment": "web", "window": "15m",
         "threshold": 1.0, "comparison": "below", "severity": "critical", "playbook": "page"},
        # no requests: nothing to judge
        {"name": "errors", "signal": "error_rate", "deployment": "web", "threshold": 0.1,
         "min_samples": 1},
    ]}
YAML = """\
rules:
  - name: quiet
    signal: throughput
    deployment: web
    threshold: high
"""
MISSING = "0" * 32


@dataclass
class Monitored:
    """The API over a workspace whose rules ran once locally, and what they left behind."""

    api: ApiServer
    ws: Workspace
    evaluations: list[Evaluation]


def _deploy(ws: Workspace) -> None:
    with ws.store.write(ws.actor) as uow:
        for _ in range(2):
            model_records.create_version(uow, NewModelVersion("fraud", "a" * 64, "python"))
    ws.deployments.create("web", [Route("fraud", 1, 100.0)], "replace")


def _handle_alerts(ws: Workspace) -> None:
    automation = ws.automation()
    try:
        for event in ws.store.events.read_after(0, 100, types=[EventType.ALERT_FIRED]):
            automation.handle(event)
    finally:
        automation.close()


@pytest.fixture
def deployed(api: ApiServer) -> ApiServer:
    _deploy(api.workspace)
    return api


@pytest.fixture
def monitored(deployed: ApiServer) -> Monitored:
    ws = deployed.workspace
    applied = ws.monitor_configs.apply(ws.actor, CONFIG)
    evaluations = ws.evaluator.run(applied.config)
    _handle_alerts(ws)
    return Monitored(deployed, ws, evaluations)


def _refusal(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    found: dict[str, Any] = answer.json()["error"]
    return found


# -- the config ------------------------------------------------------------------------------


def test_a_config_applied_through_the_client_is_in_force_locally(deployed: ApiServer) -> None:
    ws, client = deployed.workspace, deployed.client("admin")
    assert client.monitor_configs.current() is None

    applied = client.monitor_configs.apply("ada", CONFIG, source="monitor.yaml")
    assert applied.changed and applied.applied_by == "ada" and applied.warnings == ()
    assert applied.source == "monitor.yaml" and dict(applied.document) == CONFIG
    local = ws.monitor_configs.current()
    assert local is not None
    assert client.monitor_configs.current() == local
    assert replace(applied, changed=True) == local
    assert client.monitor_configs.records.configs() == ws.monitor_configs.records.configs()
    assert client.monitor_configs.records.newest_config_id() == local.id

    [entry] = ws.audit.entries(AuditFilter(action="monitoring.config_applied"))
    assert entry.actor == "ada" and entry.after is not None
    assert entry.after["digest"] == local.digest and entry.after["rules"] == 2

    again = client.monitor_configs.apply("ada", CONFIG)
    assert not again.changed and again.id == local.id
    assert len(ws.audit.entries(AuditFilter(action="monitoring.config_applied"))) == 1


def test_a_config_naming_an_unknown_deployment_is_applied_with_a_warning(
        api: ApiServer) -> None:
    applied = api.client("admin").monitor_configs.apply("ada", CONFIG)
    assert applied.changed and len(applied.warnings) == 1 and "'web'" in applied.warnings[0]


def test_applying_needs_admin_and_writes_nothing_for_other_roles(deployed: ApiServer) -> None:
    for role, user in (("developer", "dev"), ("viewer", "vic"), ("approver", "app")):
        with pytest.raises(AccessDeniedError):
            deployed.client(role).monitor_configs.apply(user, CONFIG)
    assert deployed.workspace.monitor_configs.current() is None
    assert deployed.workspace.audit.entries(
        AuditFilter(action="monitoring.config_applied")) == []


def test_the_client_refuses_an_actor_other_than_the_tokens_user(deployed: ApiServer) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        deployed.client("admin").monitor_configs.apply("bob", CONFIG)
    assert refused.value.field == "actor"
    assert deployed.workspace.monitor_configs.current() is None


def test_yaml_text_is_applied_and_its_errors_name_the_line(deployed: ApiServer) -> None:
    http, ws = deployed.http("admin"), deployed.workspace
    bad = _refusal(http.put("/api/v1/monitoring/config",
                            json={"yaml": YAML, "source": "m.yaml"}), 422)
    assert bad["field"] == "m.yaml:5: rules[0].threshold"
    twice = _refusal(http.put("/api/v1/monitoring/config",
                              json={"yaml": "rules: []\n---\nrules: []\n"}), 422)
    assert twice["field"].startswith("monitor.yaml:3")
    assert _refusal(http.put("/api/v1/monitoring/config", json={"yaml": "a: [\n"}),
                    422)["field"].startswith("monitor.yaml:")
    assert _refusal(http.put("/api/v1/monitoring/config", json={"yaml": "rules: \x03"}),
                    422)["field"] == "monitor.yaml"
    assert ws.monitor_configs.current() is None

    text = YAML.replace("high", "1.0") + "    comparison: below\n"
    applied = deployed.client("admin").monitor_configs.apply_yaml("ada", text,
                                                                  source="m.yaml")
    local = ws.monitor_configs.current()
    assert local is not None and applied.id == local.id and local.source == "m.yaml"
    assert local.config.rules[0].threshold == 1.0


INVALID_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"document": {"rules": [{**CONFIG["rules"][0], "threshold": "high"}]}},
     "rules[0].threshold"),
    ({"document": {"rules": [], "alerts": []}}, "alerts"),
    ({"document": {"rules": [{**CONFIG["rules"][0], "playbook": "nope"}]}},
     "rules[0].playbook"),
    ({}, "document"),
    ({"document": {}, "yaml": "rules: []"}, "document"),
    ({"document": {}, "extra": 1}, "extra"),
    ({"document": {}, "source": ""}, "source"),
]


def test_an_invalid_config_is_refused_naming_the_field(deployed: ApiServer) -> None:
    http = deployed.http("admin")
    for body, field in INVALID_CONFIGS:
        refused = _refusal(http.put("/api/v1/monitoring/config", json=body), 422)
        assert (refused["field"], refused["code"]) == (field, "invalid_argument"), body
    assert deployed.workspace.monitor_configs.current() is None


# -- evaluations and alerts ------------------------------------------------------------------


def test_evaluations_and_alerts_listed_through_the_client_equal_the_local_ones(
        monitored: Monitored) -> None:
    ws, client = monitored.ws, monitored.api.client("viewer")
    quiet, errors = monitored.evaluations
    assert (quiet.status, errors.status) == (EvaluationStatus.BREACHED,
                                             EvaluationStatus.INSUFFICIENT)
    records, local = client.monitor_configs.records, ws.monitor_configs.records
    assert records.evaluations() == local.evaluations() and len(records.evaluations()) == 2
    assert records.evaluations(rule="quiet") == [quiet]
    assert records.evaluations(deployment="other") == []
    assert records.evaluations(limit=1) == local.evaluations(limit=1)
    assert records.evaluation(quiet.id) == quiet == client.evaluator.records.evaluation(
        quiet.id)

    [alert] = local.alerts()
    assert (alert.state, alert.evaluation_id, quiet.alert_id) == (AlertState.FIRING,
                                                                  quiet.id, alert.id)
    assert records.alerts() == [alert] == records.alerts(AlertState.FIRING, "web")
    assert records.alerts(AlertState.RESOLVED) == []
    assert records.alert(alert.id) == alert


def test_listings_page_through_every_evaluation(monitored: Monitored) -> None:
    http = monitored.api.http("viewer")
    first = http.get("/api/v1/monitoring/evaluations", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next_cursor"] == "1"
    second = http.get("/api/v1/monitoring/evaluations",
                      params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert second["next_cursor"] is None
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [
        e.id for e in monitored.ws.monitor_configs.records.evaluations()]


BAD_READS: list[tuple[str, int, str | None]] = [
    (f"/monitoring/evaluations/{MISSING}", 404, None),
    ("/monitoring/evaluations/not-an-id", 422, "evaluation_id"),
    (f"/monitoring/alerts/{MISSING}", 404, None),
    ("/monitoring/alerts?state=sleeping", 422, "state"),
    ("/monitoring/evaluations?limit=0", 422, "limit"),
    ("/monitoring/evaluations?cursor=x", 422, "cursor"),
    (f"/playbooks/actions/{MISSING}", 404, None),
    ("/playbooks/actions?state=sleeping", 422, "state"),
    ("/playbooks/actions?alert_id=nope", 422, "alert_id"),
    ("/monitoring/evaluations?rule=qu%00iet", 422, "rule"),
    ("/monitoring/evaluations?deployment=web%00", 422, "deployment"),
    ("/monitoring/alerts?deployment=%00", 422, "deployment"),
    ("/playbooks/actions?state=pen%00ding", 422, "state"),
    ("/monitoring/configs?cursor=1000", 422, "cursor"),
    ("/monitoring/evaluations?cursor=1000", 422, "cursor"),
    ("/monitoring/alerts?cursor=1000", 422, "cursor"),
    ("/playbooks/actions?cursor=1000", 422, "cursor"),
]


def test_unknown_records_are_404_and_bad_filters_422(monitored: Monitored) -> None:
    http = monitored.api.http("viewer")
    for path, status, field in BAD_READS:
        assert _refusal(http.get("/api/v1" + path), status)["field"] == field, path


def test_a_rerun_measures_again_and_writes_nothing(monitored: Monitored) -> None:
    ws, client = monitored.ws, monitored.api.client("viewer")
    quiet = monitored.evaluations[0]
    entries = len(ws.audit.entries(AuditFilter(limit=10_000)))
    stored = ws.monitor_configs.records.evaluations()
    again = client.evaluator.rerun(quiet.id)
    assert again == ws.evaluator.rerun(quiet.id)
    assert again.same and again.evaluation == quiet and again.value == 0.0
    assert len(ws.audit.entries(AuditFilter(limit=10_000))) == entries
    assert ws.monitor_configs.records.evaluations() == stored
    with pytest.raises(NotFoundError):
        client.evaluator.rerun(MISSING)


def test_running_the_rules_through_the_api_acts_as_the_tokens_user(
        deployed: ApiServer) -> None:
    ws, client = deployed.workspace, deployed.client("developer")
    with pytest.raises(ConflictError):
        client.evaluator.run_in_force()
    applied = ws.monitor_configs.apply(ws.actor, CONFIG)

    found = client.evaluator.run(applied.config, ["web"])
    assert [e.rule for e in found] == ["quiet", "errors"]
    stored = ws.monitor_configs.records.evaluations()
    assert sorted(found, key=lambda e: e.id) == sorted(stored, key=lambda e: e.id)
    assert client.evaluator.run(applied.config, ["other"]) == []
    [fired] = ws.audit.entries(AuditFilter(action="monitoring.alert_fired"))
    assert fired.actor == "dev"
    assert fired.subject == f"alert:{found[0].alert_id}"

    other = replace(applied.config, digest="f" * 64)
    with pytest.raises(ConflictError):
        client.evaluator.run(other)
    with pytest.raises(AccessDeniedError):
        deployed.client("viewer").evaluator.run_in_force()
    refused = _refusal(deployed.http("developer").post(
        "/api/v1/monitoring/run", json={"deployments": ["../x"]}), 422)
    assert refused["field"] == "deployments[0]"


# -- playbook actions ------------------------------------------------------------------------


def test_actions_listed_by_an_admin_equal_the_local_ones(monitored: Monitored) -> None:
    ws, client = monitored.ws, monitored.api.client("admin")
    local = ws.playbook_actions.list()
    assert len(local) == 2 and local[0].params["url"] == HOOK
    assert client.playbook_actions.list() == local
    alert_id = local[0].alert_id
    assert client.playbook_actions.list(alert_id) == ws.playbook_actions.list(alert_id)
    assert client.playbook_actions.list(state="pending") == ws.playbook_actions.list(
        state="pending")
    assert client.playbook_actions.list(state="done") == []
    assert client.playbook_actions.list(limit=1) == ws.playbook_actions.list(limit=1)
    assert client.playbook_actions.get(local[0].id) == local[0]


def test_callers_without_admin_see_webhook_urls_by_their_origin_only(
        monitored: Monitored) -> None:
    viewer = monitored.api.client("viewer")
    notify = next(a for a in viewer.playbook_actions.list() if a.kind == "notify")
    assert notify.params["url"] == "https://hooks.example.com"
    assert viewer.playbook_actions.get(notify.id).params["url"] == "https://hooks.example.com"
    current = viewer.monitor_configs.current()
    local = monitored.ws.monitor_configs.current()
    assert current is not None and local is not None
    assert current.digest == local.digest and current.id == local.id
    step = current.document["playbooks"]["page"]["steps"][0]
    assert step["url"] == "https://hooks.example.com"
    assert "s3cret" not in monitored.api.http("developer").get(
        "/api/v1/monitoring/configs").text
    assert "s3cret" not in monitored.api.http("viewer").get("/api/v1/playbooks/actions").text


def test_a_url_inside_any_text_is_shown_to_callers_without_admin_by_its_origin(
        deployed: ApiServer) -> None:
    ws = deployed.workspace
    message = f"page the on-call, or post to {HOOK}?token=abc by hand"
    shown = "page the on-call, or post to https://hooks.example.com by hand"
    steps = [{"action": "notify", "url": HOOK, "message": message}]
    config = {**CONFIG, "playbooks": {"page": {"steps": steps}}}
    ws.evaluator.run(ws.monitor_configs.apply(ws.actor, config).config)
    _handle_alerts(ws)
    viewer, admin = deployed.client("viewer"), deployed.client("admin")
    [action] = viewer.playbook_actions.list()
    assert action.params == {"url": "https://hooks.example.com", "message": shown}
    current = viewer.monitor_configs.current()
    assert current is not None
    assert current.document["playbooks"]["page"]["steps"][0]["message"] == shown
    [record] = viewer.monitor_configs.records.configs()
    assert record.document["playbooks"]["page"]["steps"][0]["message"] == shown
    for path in ("/monitoring/config", "/monitoring/configs", "/playbooks/actions",
                 f"/playbooks/actions/{action.id}"):
        assert "s3cret" not in deployed.http("developer").get("/api/v1" + path).text, path
    assert admin.playbook_actions.list()[0].params["message"] == message


# -- the report ------------------------------------------------------------------------------


def test_the_report_is_the_html_page_of_the_deployment(monitored: Monitored) -> None:
    page = monitored.api.client("viewer").monitor_configs.report("web", since="1h")
    assert page.startswith("<!DOCTYPE html>") and "Monitoring report: web" in page
    assert "s3cret" not in page and "hooks.example.com" in page
    answer = monitored.api.http("viewer").get("/api/v1/monitoring/report",
                                              params={"deployment": "web"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    now = datetime.now(UTC)
    ranged = monitored.api.client("viewer").monitor_configs.report(
        "web", start=now - timedelta(hours=2), end=now + timedelta(minutes=1))
    assert "Monitoring report: web" in ranged


BAD_REPORTS: list[tuple[dict[str, str], int, str | None]] = [
    ({"deployment": "nope"}, 404, None),
    ({"deployment": "../web"}, 422, "deployment"),
    ({}, 422, "deployment"),
    ({"deployment": "web", "since": "soon"}, 422, "since"),
    ({"deployment": "web", "since": "100d"}, 422, "since"),
    ({"deployment": "web", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
     422, "end"),
    ({"deployment": "web", "start": "yesterday"}, 422, "start"),
    ({"deployment": "web", "end": "0001-01-01T00:00:00Z"}, 422, "end"),
    ({"deployment": "web", "start": "0001-01-01T00:00:00-23:59"}, 422, "start"),
]


def test_a_report_of_an_unknown_deployment_or_bad_period_is_refused(
        monitored: Monitored) -> None:
    http = monitored.api.http("viewer")
    for params, status, field in BAD_REPORTS:
        answer = http.get("/api/v1/monitoring/report", params=params)
        assert _refusal(answer, status)["field"] == field, params
