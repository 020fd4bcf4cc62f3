"""Playbook actions on every backend: created once per alert step, run in order, each effect
once (rollback revision, run, status change, canary), fenced by leases, held for approval
(the step's own or a policy's), cooled down against storms, signed webhooks delivered with an
idempotency key, and every state change audited with an event. Time is a manual clock."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playbook_support import (
    HOOK_URL,
    PLAYBOOKS,
    SECRET,
    WINDOW,
    Receiver,
    automation_for,
    body_of,
    fire,
    prepare,
    retrain_fraud,
)

from loopline.app import Workspace
from loopline.automation import Automation, AutomationOptions, AutomationPorts, signing
from loopline.automation import rollback as rollback_kind
from loopline.automation.held import Held
from loopline.automation.service import inline_executor
from loopline.core.clock import ManualClock
from loopline.core.deployments import DeploymentState, RouteRole
from loopline.core.errors import InvalidArgumentError, LeaseLostError, PolicyDeniedError
from loopline.core.events import Event, EventType
from loopline.core.governance import ApprovalStatus
from loopline.core.models import ModelStatus
from loopline.core.monitoring import ActionKind, ActionState, Playbook, PlaybookStep
from loopline.core.runs import RunState
from loopline.governance.approvals import ApprovalService
from loopline.store import AuditFilter
from loopline.store import playbook_records as records
from loopline.store.models import ALERTS

D, R, S = ActionState.DONE, ActionState.RUNNING, ActionState.SKIPPED


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 1, 1, 0, tzinfo=UTC))


@pytest.fixture
def pws(db_url: str, tmp_path: Path, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A workspace on a manual clock with fraud v1-v3, ``web`` (v2, last good v1), ``side``."""
    monkeypatch.setenv("PLAYBOOK_DB_URL", db_url)
    workspace = Workspace.init(tmp_path / "ws", overrides={"db_url": db_url}, clock=clock)
    try:
        prepare(workspace)
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def automation(pws: Workspace, receiver: Receiver) -> Iterator[Automation]:
    made = automation_for(pws, receiver)
    try:
        yield made
    finally:
        made.close()


def _rollbacks(ws: Workspace, name: str = "web") -> int:
    return sum(1 for change in ws.deployments.history(name)
               if change.state is DeploymentState.ROLLED_BACK)


def _states(automation: Automation, alert_id: str) -> list[ActionState]:
    return [a.state for a in automation.actions(alert_id)]


def _action_events(ws: Workspace, action_id: str) -> list[str]:
    return [e.payload["state"] for e in ws.store.events.read_after(
        0, 10_000, [EventType.PLAYBOOK_ACTION]) if e.payload["action_id"] == action_id]


def _approver(ws: Workspace) -> ApprovalService:
    return ApprovalService(ws.store, ws.access, "ann")


# -- creating actions ------------------------------------------------------------------------


def test_an_alert_creates_one_pending_action_per_step_and_a_redelivery_creates_nothing(
        pws: Workspace, automation: Automation) -> None:
    event = fire(pws, "respond", window=WINDOW)
    made = automation.handle(event)
    assert [(a.step, a.kind, a.state) for a in made] == [
        (0, ActionKind.ROLLBACK, ActionState.PENDING), (1, ActionKind.NOTIFY,
                                                        ActionState.PENDING)]
    head = pws.store.audit.head()
    again = automation.handle(event)
    assert [a.id for a in again] == [a.id for a in made]
    assert pws.store.audit.head() == head  # nothing written for the redelivery
    alert = made[0].result["alert"]
    assert (alert["deployment"], alert["window_start"], alert["window_end"]) == (
        "web", WINDOW[0].isoformat(), WINDOW[1].isoformat())
    assert all(_action_events(pws, a.id) == ["pending"] for a in made)
    created = [e for e in pws.store.audit.entries(AuditFilter(limit=1000))
               if e.action == "playbook.action_pending"]
    assert len(created) == 2


def test_other_events_alerts_without_playbooks_and_malformed_alerts_create_nothing(
        pws: Workspace, automation: Automation, caplog: pytest.LogCaptureFixture) -> None:
    with pws.store.write(pws.actor) as uow:
        other = uow.emit(EventType.DEPLOYMENT_CHANGED, "deployment:web", {})
        bad = uow.emit(EventType.ALERT_FIRED, "alert:x", {"alert_id": "x", "playbook": "rb"})
        unknown = uow.emit(EventType.ALERT_FIRED, "alert:y", {
            "alert_id": "y", "rule": "r", "deployment": "web", "evaluation_id": "e",
            "playbook": "no-such-playbook", "scope": "web|*|*|*"})
        none = uow.emit(EventType.ALERT_FIRED, "alert:z", {
            "alert_id": "z", "rule": "r", "deployment": "web", "evaluation_id": "e",
            "playbook": None, "scope": "web|*|*|*"})
    with caplog.at_level(logging.WARNING, "loopline.automation"):
        assert [automation.handle(e) for e in (other, bad, unknown, none)] == [[], [], [], []]
    assert "alert.rule" in caplog.text and "no-such-playbook" in caplog.text
    assert automation.actions() == []


def test_the_evaluators_alert_payload_is_read_with_its_version_and_window(
        pws: Workspace, automation: Automation) -> None:
    payload = {"alert_id": "a1", "rule": "drift", "deployment": "web",
               "scope": {"deployment": "web", "model_version": None, "slice": None,
                         "column": None}, "scope_key": "web|*|*|*", "severity": "warning",
               "playbook": "log", "evaluation_id": "e1", "signal": "dataset_drift",
               "value": 0.6, "threshold": 0.5, "model_version": "models:/fraud/2",
               "window_start": WINDOW[0].isoformat(), "window_end": WINDOW[1].isoformat()}
    with pws.store.write(pws.actor) as uow:
        named = uow.emit(EventType.ALERT_FIRED, "alert:a1", payload)
        alias = uow.emit(EventType.ALERT_FIRED, "alert:a2", {
            **payload, "alert_id": "a2", "model_version": "models:/fraud@champion"})
    (action,) = automation.handle(named)
    alert = action.result["alert"]
    assert (alert["model_version"], alert["window_start"], alert["value"]) == (
        "models:/fraud/2", WINDOW[0].isoformat(), 0.6)
    (other,) = automation.handle(alias)  # not a version: dropped, the alert still acted on
    assert other.result["alert"]["model_version"] is None


# -- running them ----------------------------------------------------------------------------


def test_a_playbook_runs_its_steps_in_order_each_once_with_a_signed_webhook(
        pws: Workspace, automation: Automation, receiver: Receiver,
        caplog: pytest.LogCaptureFixture) -> None:
    event = fire(pws, "respond")
    alert = event.payload["alert_id"]
    automation.handle(event)
    with caplog.at_level(logging.WARNING, "loopline.automation"):
        report = automation.tick()
    rollback, notify = automation.actions(alert)
    assert (rollback.state, notify.state) == (D, D) and report.errors == {}
    web = pws.deployments.get("web")
    assert web.state is DeploymentState.ROLLED_BACK and web.routes[0].version == 1
    assert rollback.result["revision"] == web.revision and _rollbacks(pws) == 1
    assert _action_events(pws, rollback.id) == ["pending", "running", "done"]
    assert notify.updated_at >= rollback.updated_at
    # the webhook: once, signed over the raw body, keyed by the action, naming what ran
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.headers["Idempotency-Key"] == notify.id
    assert signing.verify(SECRET, request.headers, request.content, time.time())
    assert not signing.verify("another-secret-of-16+", request.headers, request.content,
                              time.time())
    assert not signing.verify(SECRET, request.headers, request.content + b" ", time.time())
    body = body_of(request)
    assert body["alert"]["alert_id"] == alert and body["message"] == "rolled back"
    assert body["steps"] == [{"step": 0, "kind": "rollback", "state": "done",
                              "result": {k: v for k, v in rollback.result.items()
                                         if k != "alert"}}]
    assert notify.result["status_code"] == 200
    assert notify.result["url"] == "https://hooks.example.com"  # the path is the secret
    assert f"alert {alert}" in caplog.text and "rolled back" in caplog.text
    # nothing more happens however often it ticks or the alert is redelivered
    automation.handle(event)
    assert automation.tick().moved == {}
    assert _rollbacks(pws) == 1 and len(receiver.requests) == 1


def test_a_later_step_waits_for_the_earlier_one(pws: Workspace, automation: Automation) -> None:
    first, _ = automation.handle(fire(pws, "respond"))
    due = automation.queries.due(pws.store.clock.now())
    assert [a.id for a in due] == [first.id]


def test_retrain_starts_one_run_with_the_alert_window_and_canaries_what_it_registered(
        pws: Workspace, automation: Automation) -> None:
    event = fire(pws, "retrain", window=WINDOW)
    (action,) = automation.handle(event)
    automation.tick()
    done = automation.get(action.id)
    assert done.state is D, done.result
    (run,) = pws.pipelines.runs.runs("retrain_fraud")
    assert run.state is RunState.SUCCEEDED and run.trigger is not None
    assert run.trigger.key == f"playbook:{action.id}"
    assert run.parameters == {"deployment": "web", "window_start": WINDOW[0].isoformat(),
                              "window_end": WINDOW[1].isoformat()}
    assert done.result["run_id"] == run.id and done.result["registered"] == [
        "models:/fraud/4"]
    web = pws.deployments.get("web")
    assert web.state is DeploymentState.ROLLING_OUT and done.result["revision"] == web.revision
    assert [(r.version, r.role) for r in web.routes] == [
        (2, RouteRole.PRIMARY), (4, RouteRole.CANARY)]
    automation.handle(event)
    automation.tick()
    assert len(pws.pipelines.runs.runs("retrain_fraud")) == 1


def test_a_retrain_without_an_executor_waits_for_its_run_then_settles(
        pws: Workspace) -> None:
    automation = automation_for(pws, execute=False)
    (action,) = automation.handle(fire(pws, "retrain", window=WINDOW))
    automation.tick()
    waiting = automation.get(action.id)
    (run,) = pws.pipelines.runs.runs("retrain_fraud")
    assert (waiting.state, run.state, waiting.claimed_by) == (R, RunState.PENDING, None)
    head = pws.store.audit.head()
    automation.tick()
    assert pws.store.audit.head() == head  # waiting costs reads only
    inline_executor(pws.pipelines)(retrain_fraud, run)  # as a scheduler would
    automation.tick()
    assert automation.get(action.id).state is D
    assert pws.deployments.get("web").state is DeploymentState.ROLLING_OUT


def test_a_run_that_never_finishes_fails_the_retrain_after_its_timeout(
        pws: Workspace, clock: ManualClock) -> None:
    automation = automation_for(pws, execute=False)
    (action,) = automation.handle(fire(pws, "retrain", window=WINDOW))
    automation.tick()
    clock.advance(timedelta(hours=25))
    automation.tick()
    failed = automation.get(action.id)
    assert failed.state is ActionState.FAILED and "did not finish within" in \
        failed.result["reason"]


def test_a_storm_of_alerts_starts_one_retrain_and_the_cooldown_then_expires(
        pws: Workspace, clock: ManualClock) -> None:
    automation = automation_for(pws, execute=False)
    alerts = [fire(pws, "storm", window=WINDOW) for _ in range(5)]
    for event in alerts:
        automation.handle(event)
    automation.tick()
    assert len(pws.pipelines.runs.runs("retrain_fraud")) == 1
    actions = automation.actions()
    (first,) = [a for a in actions if a.state is R]
    others = [a for a in actions if a is not first]
    assert [a.state for a in others] == [S] * 4
    assert all(a.result["cooldown_of"] == first.id and "cool-down" in a.result["reason"]
               for a in others)
    inline_executor(pws.pipelines)(retrain_fraud, pws.pipelines.runs.runs()[0])
    automation.tick()
    assert automation.get(first.id).state is D
    clock.advance(timedelta(hours=1))  # within the 2 h cool-down of the done retrain
    (late,) = automation.handle(fire(pws, "storm"))
    automation.tick()
    assert automation.get(late.id).state is S and automation.get(late.id).result[
        "cooldown_of"] == first.id
    clock.advance(timedelta(hours=1, seconds=1))  # past it
    (fresh,) = automation.handle(fire(pws, "storm"))
    automation.tick()
    assert automation.get(fresh.id).state is R
    assert len(pws.pipelines.runs.runs("retrain_fraud")) == 2


def test_quarantine_takes_the_alerts_version_out_of_every_deployment_once(
        pws: Workspace, automation: Automation) -> None:
    (action,) = automation.handle(fire(pws, "quarantine", model_version="models:/fraud/3",
                                       deployment="side"))
    automation.tick()
    done = automation.get(action.id)
    assert done.state is D and done.result["quarantined"] == "models:/fraud/3"
    assert done.result["status_before"] == "candidate"
    assert pws.models.resolve("fraud/3").status is ModelStatus.QUARANTINED
    assert [(e["deployment"], e["action"]) for e in done.result["evacuations"]] == [
        ("side", "route_removed")]
    assert [r.version for r in pws.deployments.get("side").routes] == [1]
    changed = pws.store.events.read_after(0, 1000, [EventType.MODEL_STATUS_CHANGED])
    assert [(e.subject, e.payload["to"]) for e in changed] == [("models:/fraud/3",
                                                                 "quarantined")]


def test_a_quarantined_version_is_released_only_with_an_approval(
        pws: Workspace, automation: Automation) -> None:
    automation.handle(fire(pws, "quarantine", model_version="models:/fraud/3",
                           deployment="side"))
    automation.tick()
    with pytest.raises(PolicyDeniedError, match="releasing it needs an approver"):
        pws.models.set_status("fraud/3", "candidate")
    assert pws.models.resolve("fraud/3").status is ModelStatus.QUARANTINED
    request = pws.approvals.request("fraud", 3, "status", "candidate", "false alarm")
    with pytest.raises(PolicyDeniedError):
        pws.models.set_status("fraud/3", "candidate")  # requested, not approved yet
    _approver(pws).approve(request.id, "checked the data")
    assert pws.models.set_status("fraud/3", "candidate").status is ModelStatus.CANDIDATE
    pws.models.set_status("fraud/3", "quarantined")
    assert pws.models.set_status("fraud/3", "archived").status is ModelStatus.ARCHIVED


def test_quarantine_fails_when_a_deployment_refuses_to_stop_answering_with_the_version(
        pws: Workspace, automation: Automation) -> None:
    pws.deployments.rollback("web", "by hand")  # web answers with v1, rolled back already
    (action,) = automation.handle(fire(pws, "quarantine", model_version="models:/fraud/1"))
    automation.tick()
    failed = automation.get(action.id)
    assert failed.state is ActionState.FAILED, failed.result
    assert "web" in failed.result["refused"]
    assert "still answers" in failed.result["reason"] and "web: " in failed.result["reason"]
    assert pws.models.resolve("fraud/1").status is ModelStatus.QUARANTINED
    assert [r.version for r in pws.deployments.get("web").routes] == [1]  # it still serves
    assert _action_events(pws, action.id)[-1] == "failed"


def test_quarantine_of_the_canary_when_the_alert_names_no_version(
        pws: Workspace, automation: Automation) -> None:
    pws.deployments.start_canary("web", ("fraud", 3))
    (action,) = automation.handle(fire(pws, "quarantine"))
    automation.tick()
    assert automation.get(action.id).result["quarantined"] == "models:/fraud/3"
    web = pws.deployments.get("web")
    assert web.state is DeploymentState.ROLLED_BACK and [r.version for r in web.routes] == [2]


def test_rollback_of_a_deployment_rolled_back_already_is_skipped(
        pws: Workspace, automation: Automation) -> None:
    pws.deployments.rollback("web", "by hand")
    (action,) = automation.handle(fire(pws, "rollback"))
    automation.tick()
    skipped = automation.get(action.id)
    assert skipped.state is S and "rolled back already" in skipped.result["reason"]
    assert _rollbacks(pws) == 1


# -- resolved and stale alerts ----------------------------------------------------------------


def _alert_row(ws: Workspace, event: Event, state: str, opened_at: datetime,
               resolved_at: datetime | None = None) -> None:
    """Store the alert ``event`` announces, as the evaluator does, in ``state``."""
    payload = event.payload
    with ws.store.write(ws.actor) as uow:
        uow.session.connection().execute(sa.insert(ALERTS), {
            "id": payload["alert_id"], "rule": payload["rule"], "scope_key": payload["scope"],
            "deployment": payload["deployment"], "severity": "critical", "state": state,
            "playbook": payload["playbook"], "opened_at": opened_at,
            "resolved_at": resolved_at, "evaluation_id": payload["evaluation_id"],
            "numbers": {}})


def _resolve(ws: Workspace, alert_id: str) -> None:
    with ws.store.write(ws.actor) as uow:
        uow.session.connection().execute(sa.update(ALERTS).where(ALERTS.c.id == alert_id)
                                         .values(state="resolved", resolved_at=uow.now()))


def test_a_playbook_does_not_begin_for_an_alert_resolved_meanwhile(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    event = fire(pws, "rollback")
    _alert_row(pws, event, "resolved", clock.now(), clock.now())
    (action,) = automation.handle(event)
    automation.tick()
    skipped = automation.get(action.id)
    assert skipped.state is S and "was resolved" in skipped.result["reason"]
    assert _rollbacks(pws) == 0
    firing = fire(pws, "rollback")
    _alert_row(pws, firing, "firing", clock.now())
    (acted,) = automation.handle(firing)
    automation.tick()
    assert automation.get(acted.id).state is D and _rollbacks(pws) == 1


def test_once_a_playbook_began_its_later_steps_follow_a_resolution(
        pws: Workspace, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLAYBOOKS, "tell-first", Playbook("tell-first", (
        PlaybookStep(ActionKind.NOTIFY, {"url": HOOK_URL}), PlaybookStep(ActionKind.ROLLBACK))))
    event = fire(pws, "tell-first")
    _alert_row(pws, event, "firing", clock.now())
    receiver = Receiver(on_request=lambda _: _resolve(pws, event.payload["alert_id"]))
    automation = automation_for(pws, receiver)
    notify, rollback = automation.handle(event)
    automation.tick()
    assert len(receiver.requests) == 1  # the alert was resolved while step 0 ran
    assert automation.get(notify.id).state is D
    assert automation.get(rollback.id).state is D and _rollbacks(pws) == 1
    automation.close()


def test_a_playbook_does_not_begin_for_an_alert_older_than_the_age_limit(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    old = fire(pws, "each")  # no alert row: its age counts from the event
    opened_long_ago = fire(pws, "each")
    _alert_row(pws, opened_long_ago, "firing", clock.now() - timedelta(hours=2))
    clock.advance(timedelta(hours=23))
    fresh = fire(pws, "each")
    made = [automation.handle(e)[0] for e in (old, opened_long_ago, fresh)]
    automation.tick()
    states = [automation.get(a.id) for a in made]
    assert [a.state for a in states] == [D, S, D]  # 23 h old; opened 25 h ago; fresh
    assert "more than 1 day, 0:00:00 ago" in states[1].result["reason"]
    late = fire(pws, "each")
    (action,) = automation.handle(late)
    clock.advance(timedelta(hours=25))
    automation.tick()
    assert automation.get(action.id).state is S
    assert "too old to act on" in automation.get(action.id).result["reason"]


def test_a_step_a_person_approved_is_not_aged_out_while_it_waited(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    (action,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    clock.advance(timedelta(days=2))
    _approver(pws).approve(automation.get(action.id).approval_id or "", "late, but go")
    automation.tick()
    assert automation.get(action.id).state is D and _rollbacks(pws) == 1


def test_the_alert_subscription_starts_at_the_age_limit_on_its_first_use(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    old = fire(pws, "log")
    clock.advance(timedelta(hours=25))
    fresh = fire(pws, "log")
    assert automation.place_cursor() == old.seq  # after the last event older than 24 h
    assert automation.place_cursor() is None  # placed once; it only moves forward after
    with pws.dispatcher() as dispatcher:
        dispatcher.subscribe("automation", automation.handle, {EventType.ALERT_FIRED})
        dispatcher.run_once()
    assert [a.alert_id for a in automation.actions()] == [fresh.payload["alert_id"]]


# -- leases and fencing ----------------------------------------------------------------------


def test_a_held_action_is_taken_over_only_after_its_lease_expires(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    (action,) = automation.handle(fire(pws, "rollback"))
    with pws.store.write(pws.actor) as uow:  # a worker claims it, then dies
        assert records.claim(uow, action.id, "dead-worker", clock.now() + timedelta(minutes=5))
    assert automation.tick().moved == {}
    assert automation.get(action.id).state is ActionState.PENDING and _rollbacks(pws) == 0
    clock.advance(timedelta(minutes=5))
    automation.tick()
    taken = automation.get(action.id)
    assert taken.state is D and taken.attempts == 2 and _rollbacks(pws) == 1


def test_a_claim_is_refused_while_another_workers_lease_runs_and_final_actions_stay_final(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    (action,) = automation.handle(fire(pws, "rollback"))
    until = clock.now() + timedelta(minutes=5)
    with pws.store.write(pws.actor) as uow:
        first = records.claim(uow, action.id, "worker-a", until)
        assert first is not None and (first.claimed_by, first.attempts) == ("worker-a", 1)
        assert records.claim(uow, action.id, "worker-b", until) is None  # a's lease runs
        again = records.claim(uow, action.id, "worker-a", until)  # a itself may renew
        assert again is not None and again.attempts == 2
    clock.advance(timedelta(minutes=5))
    with pws.store.write(pws.actor) as uow:
        taken = records.claim(uow, action.id, "worker-b", until + timedelta(minutes=5))
        assert taken is not None and (taken.claimed_by, taken.attempts) == ("worker-b", 3)
        records.transition(uow, records.Claim(action.id, "worker-b", 3), ActionState.SKIPPED,
                           {"reason": "test"})
        assert records.claim(uow, action.id, "worker-a", until + timedelta(hours=1)) is None
    with pytest.raises(InvalidArgumentError) as caught, pws.store.write(pws.actor) as uow:
        records.claim(uow, action.id, "", until)
    assert caught.value.field == "owner"


def test_a_worker_whose_lease_was_taken_over_cannot_complete_its_effect(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    (action,) = automation.handle(fire(pws, "rollback"))
    with pws.store.write(pws.actor) as uow:
        stale = records.claim(uow, action.id, "slow-worker", clock.now() + timedelta(minutes=1))
    assert stale is not None
    clock.advance(timedelta(minutes=2))
    with pws.store.write(pws.actor) as uow:
        assert records.claim(uow, action.id, "other-worker", clock.now() + timedelta(minutes=5))
    revision = pws.deployments.get("web").revision
    with pytest.raises(LeaseLostError, match="no longer held by slow-worker"):
        rollback_kind.perform(Held(pws.store, pws.actor, stale),
                              automation._tools)  # the fenced effect itself
    assert pws.deployments.get("web").revision == revision  # the rollback rolled back too
    assert automation.get(action.id).claimed_by == "other-worker"


def test_two_workers_ticking_at_once_run_each_action_once(pws: Workspace) -> None:
    receiver = Receiver()
    workers = [automation_for(pws, receiver), automation_for(pws, receiver)]
    made = [automation_for(pws).handle(fire(pws, "each"))[0] for _ in range(8)]
    threads = [threading.Thread(target=worker.tick) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    keys = sorted(r.headers["Idempotency-Key"] for r in receiver.requests)
    assert keys == sorted(a.id for a in made)  # every one delivered, none twice
    assert all(workers[0].get(a.id).state is D for a in made)
    for worker in workers:
        worker.close()


def _tick_together(workers: list[Automation]) -> None:
    """Tick every worker at once (each in its own thread, released together)."""
    start = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def tick(worker: Automation) -> None:
        start.wait(30)
        try:
            worker.tick()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=tick, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures and not any(thread.is_alive() for thread in threads)


def test_two_workers_at_once_roll_back_once_and_start_one_run_for_one_alert(
        pws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLAYBOOKS, "fix", Playbook("fix", (
        PlaybookStep(ActionKind.ROLLBACK),
        PlaybookStep(ActionKind.RETRAIN, {"pipeline": "retrain_fraud"}))))
    workers = [automation_for(pws), automation_for(pws)]
    event = fire(pws, "fix", window=WINDOW)
    rollback, retrain = workers[0].handle(event)
    workers[1].handle(event)  # delivered to both: the same two actions
    before = pws.deployments.get("web").revision
    _tick_together(workers)
    _tick_together(workers)  # whichever executed the run settles the retrain
    assert [workers[0].get(a.id).state for a in (rollback, retrain)] == [D, D]
    assert _rollbacks(pws) == 1
    assert pws.deployments.get("web").revision == before + 1  # one rollback revision
    (run,) = pws.pipelines.runs.runs("retrain_fraud")
    assert run.state is RunState.SUCCEEDED and workers[0].get(retrain.id).result[
        "run_id"] == run.id
    assert len(workers[0].actions(event.payload["alert_id"])) == 2
    for worker in workers:
        worker.close()


def test_two_workers_at_once_in_a_storm_of_alerts_act_once_within_the_cooldown(
        pws: Workspace) -> None:
    workers = [automation_for(pws, execute=False), automation_for(pws, execute=False)]
    storms = [fire(pws, "storm", window=WINDOW) for _ in range(6)]
    rollbacks = [fire(pws, "rollback") for _ in range(6)]
    for index, event in enumerate(storms + rollbacks):
        workers[index % 2].handle(event)
    before = pws.deployments.get("web").revision
    _tick_together(workers)
    assert len(pws.pipelines.runs.runs("retrain_fraud")) == 1  # one run for six alerts
    assert _rollbacks(pws) == 1 and pws.deployments.get("web").revision == before + 1
    actions = workers[0].actions()
    retrains = [a for a in actions if a.kind is ActionKind.RETRAIN]
    backs = [a for a in actions if a.kind is ActionKind.ROLLBACK]
    assert sorted(a.state for a in retrains) == sorted([R] + [S] * 5)
    assert sorted(a.state for a in backs) == sorted([D] + [S] * 5)
    (running,) = [a for a in retrains if a.state is R]
    (done,) = [a for a in backs if a.state is D]
    assert all(a.result.get("cooldown_of") == running.id for a in retrains if a is not running)
    assert all(a.result.get("cooldown_of") == done.id for a in backs if a is not done)
    for worker in workers:
        worker.close()


# -- approvals -------------------------------------------------------------------------------


def test_a_step_requiring_approval_waits_and_runs_once_after_it(
        pws: Workspace, automation: Automation) -> None:
    (action,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    waiting = automation.get(action.id)
    assert waiting.state is ActionState.AWAITING_APPROVAL and _rollbacks(pws) == 0
    request = pws.approvals.get(waiting.approval_id or "")
    assert (request.model, request.version, request.gate, request.target, request.requester
            ) == ("fraud", 2, "playbook_action", f"rollback:{action.id}", pws.actor)
    head = pws.store.audit.head()
    automation.tick()
    assert pws.store.audit.head() == head and _rollbacks(pws) == 0
    with pytest.raises(PolicyDeniedError, match="four-eyes"):
        pws.approvals.approve(request.id)  # the automation cannot approve itself
    _approver(pws).approve(request.id, "go")
    automation.tick()
    assert automation.get(action.id).state is D and _rollbacks(pws) == 1
    automation.tick()
    assert _rollbacks(pws) == 1
    assert _action_events(pws, action.id) == ["pending", "awaiting_approval", "running", "done"]


def test_a_rejected_approval_skips_the_action_with_the_reason(
        pws: Workspace, automation: Automation) -> None:
    (action,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    _approver(pws).reject(automation.get(action.id).approval_id or "", "not during the sale")
    automation.tick()
    skipped = automation.get(action.id)
    assert skipped.state is S and "rejected" in skipped.result["reason"]
    assert "ann: not during the sale" in skipped.result["reason"] and _rollbacks(pws) == 0


def test_an_expired_approval_skips_the_action(pws: Workspace, automation: Automation,
                                              clock: ManualClock) -> None:
    (action,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    clock.advance(timedelta(days=8))
    automation.tick()
    skipped = automation.get(action.id)
    assert skipped.state is S and "expired" in skipped.result["reason"]
    assert pws.approvals.get(skipped.approval_id or "").status is ApprovalStatus.EXPIRED


POLICY = """\
kind: gate_policy
name: playbook-guard
applies_to: {{models: ["fraud"], gates: [playbook_action], targets: [rollback]}}
rules:
  - {rule}
"""


def test_a_policy_requiring_approval_holds_the_action_until_approved(
        pws: Workspace, automation: Automation) -> None:
    pws.policies.apply(pws.actor, {"guard.yaml": POLICY.format(
        rule="{id: two-eyes, kind: approvals, count: 1}")})
    (action,) = automation.handle(fire(pws, "rollback"))
    automation.tick()
    waiting = automation.get(action.id)
    assert waiting.state is ActionState.AWAITING_APPROVAL and _rollbacks(pws) == 0
    assert "two-eyes" in waiting.result["approval"]["why"]
    _approver(pws).approve(waiting.approval_id or "")
    automation.tick()
    done = automation.get(action.id)
    assert done.state is D and _rollbacks(pws) == 1
    assert done.result["gate"]["allowed"] is True


def test_a_second_alerts_careful_rollback_waits_for_its_own_vote(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    (first,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    earlier = automation.get(first.id).approval_id or ""
    _approver(pws).approve(earlier, "go")
    automation.tick()
    assert automation.get(first.id).state is D and _rollbacks(pws) == 1
    pws.deployments.replace("web", "fraud", 2)  # v2 serves again; the approval is still open
    clock.advance(timedelta(hours=2))  # past the playbook's cool-down
    assert pws.approvals.get(earlier).status is ApprovalStatus.APPROVED
    (second,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    waiting = automation.get(second.id)
    assert waiting.state is ActionState.AWAITING_APPROVAL and _rollbacks(pws) == 1
    assert waiting.approval_id not in (None, earlier)
    request = pws.approvals.get(waiting.approval_id or "")
    assert (request.status, request.model, request.version, request.target) == (
        ApprovalStatus.PENDING, "fraud", 2, f"rollback:{second.id}")
    assert f"(action {second.id})" in request.reason
    _approver(pws).approve(request.id, "this one too")
    automation.tick()
    assert automation.get(second.id).state is D and _rollbacks(pws) == 2


def test_an_approval_for_the_version_served_before_does_not_release_the_action(
        pws: Workspace, automation: Automation) -> None:
    (action,) = automation.handle(fire(pws, "careful"))
    automation.tick()
    asked = pws.approvals.get(automation.get(action.id).approval_id or "")
    assert (asked.model, asked.version) == ("fraud", 2)
    pws.deployments.replace("web", "fraud", 3)  # a new primary before the vote
    _approver(pws).approve(asked.id, "roll back v2")
    automation.tick()
    waiting = automation.get(action.id)
    assert waiting.state is ActionState.AWAITING_APPROVAL and _rollbacks(pws) == 0
    again = pws.approvals.get(waiting.approval_id or "")
    assert (again.status, again.version) == (ApprovalStatus.PENDING, 3) and again.id != asked.id
    assert "was for models:/fraud/2" in waiting.result["approval"]["why"]
    _approver(pws).approve(again.id, "roll back v3")
    automation.tick()
    assert automation.get(action.id).state is D and _rollbacks(pws) == 1


def test_an_approved_action_whose_subject_changed_asks_again_instead_of_spinning(
        pws: Workspace, automation: Automation) -> None:
    pws.policies.apply(pws.actor, {"guard.yaml": POLICY.format(
        rule="{id: two-eyes, kind: approvals, count: 1}")})
    (action,) = automation.handle(fire(pws, "rollback"))
    automation.tick()
    first = automation.get(action.id).approval_id or ""
    pws.deployments.replace("web", "fraud", 3)  # a canary promoted a new primary, say
    _approver(pws).approve(first, "roll back v2")
    automation.tick()
    waiting = automation.get(action.id)
    assert waiting.state is ActionState.AWAITING_APPROVAL and _rollbacks(pws) == 0
    assert waiting.attempts <= 3, waiting.attempts  # not re-claimed round after round
    again = pws.approvals.get(waiting.approval_id or "")
    assert (again.status, again.model, again.version, again.target) == (
        ApprovalStatus.PENDING, "fraud", 3, "rollback")
    head = pws.store.audit.head()
    assert automation.tick().moved == {} and pws.store.audit.head() == head
    _approver(pws).approve(again.id)
    automation.tick()
    assert automation.get(action.id).state is D and _rollbacks(pws) == 1


def test_an_approved_request_with_too_few_votes_is_looked_at_again_only_after_a_lease(
        pws: Workspace, automation: Automation, clock: ManualClock) -> None:
    pws.policies.apply(pws.actor, {"guard.yaml": POLICY.format(
        rule="{id: two-eyes, kind: approvals, count: 1}")})
    (action,) = automation.handle(fire(pws, "rollback"))
    automation.tick()
    request = automation.get(action.id).approval_id or ""
    pws.policies.apply(pws.actor, {"guard.yaml": POLICY.format(
        rule="{id: four-eyes, kind: approvals, count: 2}")})  # stricter before the vote
    _approver(pws).approve(request, "one of two")
    automation.tick()
    held = automation.get(action.id)
    assert held.state is ActionState.AWAITING_APPROVAL and held.approval_id == request
    assert held.attempts <= 3 and _rollbacks(pws) == 0
    assert automation.tick().moved == {}  # held for a lease: no spinning meanwhile
    ApprovalService(pws.store, pws.access, "bob").approve(request, "two of two")
    clock.advance(automation.options.lease)
    automation.tick()
    assert automation.get(action.id).state is D and _rollbacks(pws) == 1


def test_a_policy_denying_an_action_skips_it_naming_the_rule(
        pws: Workspace, automation: Automation) -> None:
    pws.policies.apply(pws.actor, {"guard.yaml": POLICY.format(
        rule="{id: owner-tag, kind: required_metadata, fields: [owner]}")})
    (action,) = automation.handle(fire(pws, "rollback"))
    automation.tick()
    skipped = automation.get(action.id)
    assert skipped.state is S and "owner-tag" in skipped.result["reason"]
    assert _rollbacks(pws) == 0


# -- notify ----------------------------------------------------------------------------------


def test_the_webhook_path_stays_out_of_audit_entries_events_and_gate_records(
        pws: Workspace, automation: Automation, receiver: Receiver) -> None:
    pws.policies.apply(pws.actor, {"guard.yaml": POLICY.replace("[rollback]", "[notify]").format(
        rule="{id: two-eyes, kind: approvals, count: 1}")})
    (action,) = automation.handle(fire(pws, "notify"))
    automation.tick()
    _approver(pws).approve(automation.get(action.id).approval_id or "", "tell them")
    automation.tick()
    done = automation.get(action.id)
    assert done.state is D and len(receiver.requests) == 1
    assert done.params["url"] == HOOK_URL  # the action itself keeps what it needs
    assert done.result["gate"]["allowed"] is True
    secret = "/T0/B1/abcdef"
    entries = pws.store.audit.entries(AuditFilter(limit=10_000))
    mine = [e for e in entries if e.subject == f"playbook_action:{action.id}"]
    assert {e.action for e in mine} >= {"playbook.action_pending", "playbook.action_done"}
    assert all(e.after is None or e.after["params"]["url"] == "https://hooks.example.com"
               for e in mine)
    assert not [e.action for e in entries if secret in json.dumps([e.before, e.after])]
    events = pws.store.events.read_after(0, 10_000)
    assert not [e.type for e in events if secret in json.dumps(e.payload)]
    assert secret not in json.dumps(done.result)
    assert records.shown_params({"url": "https://u:pw@[::1]:8443/x?token=1", "n": 1,
                                 "nested": ["http://h.example/p"]}) == {
        "url": "https://[::1]:8443", "n": 1, "nested": ["http://h.example"]}


@pytest.mark.parametrize("status", [302, 307])
def test_notify_fails_on_a_redirect_instead_of_following_it(pws: Workspace,
                                                             status: int) -> None:
    seen: list[tuple[str, str]] = []

    def redirecting(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.url.path == "/moved":
            return httpx.Response(200, json={"ok": True})  # a bodyless GET would land here
        return httpx.Response(status, headers={"Location": "https://hooks.example.com/moved"})

    automation = Automation(
        AutomationPorts(pws.store, pws.deployments, pws.models, pws.approvals, pws.gate,
                        pws.pipelines), PLAYBOOKS.get,
        options=AutomationOptions(actor=pws.actor, webhook_secret=SECRET,
                                  transport=httpx.MockTransport(redirecting)))
    (action,) = automation.handle(fire(pws, "notify"))
    automation.tick()
    failed = automation.get(action.id)
    assert failed.state is ActionState.FAILED, failed.result
    assert "redirect" in failed.result["reason"] and "/T0" not in failed.result["reason"]
    assert seen == [("POST", "/T0/B1/abcdef")]  # asked once, never followed
    automation.close()


def test_notify_retries_an_unanswered_webhook_with_the_same_key_until_it_answers(
        pws: Workspace, clock: ManualClock) -> None:
    receiver = Receiver([500, 503, 200])
    automation = automation_for(pws, receiver)
    (action,) = automation.handle(fire(pws, "notify"))
    automation.tick()
    retrying = automation.get(action.id)
    assert retrying.state is R and "HTTP 500" in retrying.result["last_error"]
    assert automation.tick().moved == {}  # backing off under its lease
    clock.advance(timedelta(seconds=10))
    automation.tick()
    clock.advance(timedelta(seconds=20))
    automation.tick()
    assert automation.get(action.id).state is D
    assert [r.headers["Idempotency-Key"] for r in receiver.requests] == [action.id] * 3
    assert len({r.content for r in receiver.requests}) == 1  # the same body every time


def test_notify_gives_up_after_its_attempts(pws: Workspace, clock: ManualClock) -> None:
    automation = automation_for(pws, Receiver([500]), max_attempts=2)
    (action,) = automation.handle(fire(pws, "notify"))
    automation.tick()
    clock.advance(timedelta(minutes=1))
    automation.tick()
    failed = automation.get(action.id)
    assert failed.state is ActionState.FAILED and failed.result["failures"] == 2


def test_notify_refuses_an_unsigned_body_and_a_metadata_address(
        pws: Workspace, receiver: Receiver) -> None:
    unsigned = automation_for(pws, receiver, webhook_secret=None)
    (action,) = unsigned.handle(fire(pws, "notify"))
    unsigned.tick()
    assert "no webhook secret" in unsigned.get(action.id).result["reason"]
    PLAYBOOKS["metadata"] = Playbook("metadata", (PlaybookStep(
        ActionKind.NOTIFY, {"url": "http://169.254.169.254/latest"}),))
    try:
        automation = automation_for(pws, receiver)
        (other,) = automation.handle(fire(pws, "metadata"))
        automation.tick()
    finally:
        del PLAYBOOKS["metadata"]
    assert automation.get(other.id).state is ActionState.FAILED
    assert "url" in automation.get(other.id).result["reason"]
    assert receiver.requests == []


def test_notify_without_a_url_logs_and_is_done(
        pws: Workspace, automation: Automation, caplog: pytest.LogCaptureFixture) -> None:
    (action,) = automation.handle(fire(pws, "log"))
    with caplog.at_level(logging.WARNING, "loopline.automation"):
        automation.tick()
    assert automation.get(action.id).result["logged"] is True
    assert "look at fraud" in caplog.text


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "field"), [
    ({"pipeline": "no-such-pipeline"}, "params.pipeline"),
    ({}, "params.pipeline"),
    ({"pipeline": "retrain_fraud", "parameters": {"epochs": 3}}, "parameters.epochs"),
    ({"pipeline": "retrain_fraud", "parameters": [1]}, "params.parameters"),
])
def test_a_retrain_step_with_bad_params_fails_naming_the_field(
        pws: Workspace, automation: Automation, params: dict[str, object], field: str) -> None:
    PLAYBOOKS["bad"] = Playbook("bad", (PlaybookStep(ActionKind.RETRAIN, params),))
    try:
        (action,) = automation.handle(fire(pws, "bad"))
        automation.tick()
    finally:
        del PLAYBOOKS["bad"]
    failed = automation.get(action.id)
    assert failed.state is ActionState.FAILED and field in failed.result["reason"]
    assert pws.pipelines.runs.runs("retrain_fraud") == []


def test_a_quarantine_step_with_an_unknown_target_fails_naming_it(
        pws: Workspace, automation: Automation) -> None:
    PLAYBOOKS["bad"] = Playbook("bad", (PlaybookStep(ActionKind.QUARANTINE,
                                                     {"target": "everything"}),))
    try:
        (action,) = automation.handle(fire(pws, "bad"))
        automation.tick()
    finally:
        del PLAYBOOKS["bad"]
    failed = automation.get(action.id)
    assert failed.state is ActionState.FAILED and "params.target" in failed.result["reason"]


def test_listing_refuses_an_unknown_state_and_options_out_of_range(
        automation: Automation) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        automation.actions(state="sleeping")
    assert caught.value.field == "state"
    with pytest.raises(InvalidArgumentError) as limit:
        automation.actions(limit=0)
    assert limit.value.field == "limit"
    for name, value in (("lease", timedelta(0)), ("max_attempts", 0),
                        ("webhook_secret", "short"), ("actor", "")):
        with pytest.raises(InvalidArgumentError) as option:
            AutomationOptions(**{name: value})  # type: ignore[arg-type]
        assert option.value.field == name


def test_actions_list_by_alert_and_state(pws: Workspace, automation: Automation) -> None:
    first = fire(pws, "respond")
    automation.handle(first)
    automation.handle(fire(pws, "careful"))
    automation.tick()
    assert _states(automation, first.payload["alert_id"]) == [D, D]
    assert [a.kind for a in automation.actions(state="awaiting_approval")] == [
        ActionKind.ROLLBACK]
    assert len(automation.actions(limit=2)) == 2
    assert HOOK_URL in str(automation.actions(first.payload["alert_id"])[1].params)
