"""Deployments on every backend: shapes each strategy takes, the state machine, canary rollouts
driven by verdicts on a manual clock (steps, promotion, automatic rollback, idempotence), and
the gate (``deploy`` refusing a create, ``rollout_step`` pausing a rollout). Every change
writes exactly one history row, one audit entry and one ``deployment.changed`` event."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from loopline.app import Workspace
from loopline.core.clock import ManualClock
from loopline.core.deployments import (
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    DeploymentState,
    RolloutVerdict,
    Route,
    RouteRole,
    Strategy,
)
from loopline.core.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    PolicyDeniedError,
)
from loopline.core.events import EventType
from loopline.core.gates import AllowAll, GateAction, GateRequest
from loopline.core.governance import Role
from loopline.core.models import ModelStatus, NewModelVersion
from loopline.deploy.service import DeploymentService
from loopline.store import AuditFilter, MetadataStore
from loopline.store import model_registry as model_records
from loopline.store.deployment_queries import DeploymentQueries

DIGEST = "a" * 64
P, C, S = RouteRole.PRIMARY, RouteRole.CANARY, RouteRole.SHADOW
FAST = CanaryPlan((10.0, 25.0, 50.0, 100.0), AnalysisPolicy(interval=timedelta(seconds=30)))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def clocked(db_url: str, clock: ManualClock) -> Iterator[MetadataStore]:
    """A migrated store on a manual clock, with versions 1-3 of ``fraud`` registered."""
    opened = MetadataStore.open(db_url, clock=clock, check_schema=False)
    opened.upgrade()
    with opened.write("tester") as uow:
        for _ in range(3):
            model_records.create_version(uow, NewModelVersion("fraud", DIGEST, "python"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def service(clocked: MetadataStore) -> DeploymentService:
    return DeploymentService(clocked, AllowAll(), "tester")


def _route(version: int, weight: float = 100.0, role: RouteRole = P) -> Route:
    return Route("fraud", version, weight, role)


class Written:
    """Counts what deployment changes wrote: history rows, audit entries, events."""

    def __init__(self, store: MetadataStore, name: str = "web") -> None:
        self.store, self.name = store, name

    def __call__(self) -> tuple[int, int, int]:
        queries = DeploymentQueries(self.store.engine)
        try:
            history = len(queries.history(self.name, 1000))
        except NotFoundError:
            history = 0
        audit = [e for e in self.store.audit.entries(AuditFilter(limit=10_000))
                 if e.action.startswith("deployment.")]
        events = self.store.events.read_after(0, 10_000, [EventType.DEPLOYMENT_CHANGED])
        return history, len(audit), len(events)


def _verdict(deployment: Deployment, verdict: str, clock: ManualClock,
             **changes: Any) -> RolloutVerdict:
    end = clock.now()
    made = RolloutVerdict(uuid.uuid4().hex, deployment.name, deployment.revision,
                          deployment.step, end - timedelta(seconds=30), end, verdict,
                          {"canary_error_rate": 0.0, "primary_error_rate": 0.0}, end)
    return replace(made, **changes)


# -- creating each strategy ------------------------------------------------------------------


def test_create_replace_writes_revision_one_with_history_audit_and_event(
        service: DeploymentService, clocked: MetadataStore) -> None:
    created = service.create("web", [_route(1)], "replace", description="fraud scoring")
    assert (created.state, created.revision, created.strategy) == (
        DeploymentState.ACTIVE, 1, Strategy.REPLACE)
    assert service.get("web") == created
    assert [d.name for d in service.list()] == ["web"]
    assert service.queries.revisions() == {"web": 1}
    assert Written(clocked)() == (1, 1, 1)
    event = clocked.events.read_after(0, 100, [EventType.DEPLOYMENT_CHANGED])[0]
    assert event.payload == {"name": "web", "revision": 1, "state": "active",
                             "routes": [_route(1).as_record()]}
    change = service.history("web")[0]
    assert (change.revision, change.reason, change.actor) == (1, "created (replace)", "tester")
    assert change.gate is not None and change.gate["allowed"] is True


def test_create_shadow_and_ab_keep_their_routes_and_sticky_key(
        service: DeploymentService) -> None:
    shadow = service.create("mirror", [_route(1), _route(2, 25.0, S)], Strategy.SHADOW)
    assert shadow.routes == (_route(1), _route(2, 25.0, S))
    ab = service.create("split", [_route(1, 70.0), _route(2, 30.0, C), _route(3, 10.0, S)],
                        "ab", sticky_key="header:X-User-Id")
    assert ab.sticky_key == "header:x-user-id" and ab.strategy is Strategy.AB
    assert service.get("split").routes == ab.routes
    assert service.create("byfield", [_route(1, 50.0), _route(2, 50.0, C)], "ab",
                          sticky_key="field:user_id").sticky_key == "field:user_id"


BAD_CREATES: dict[str, tuple[dict[str, Any], str]] = {
    "name": ({"name": "../web"}, "name"),
    "strategy": ({"strategy": "blue"}, "strategy"),
    "canary-at-create": ({"strategy": "canary"}, "strategy"),
    "replace-with-shadow": ({"routes": [_route(1), _route(2, 10.0, S)]}, "routes"),
    "version": ({"routes": [_route(0)]}, "routes[0].version"),
    "model": ({"routes": [Route("../etc", 1, 100.0)]}, "routes[0].model"),
    "weight-over-100": ({"routes": [_route(1, 150.0)]}, "routes[0].weight"),
    "no-primary": ({"routes": [_route(1, 100.0, C)]}, "routes"),
    "weights": ({"routes": [_route(1, 60.0), _route(2, 30.0, C)], "strategy": "ab",
                 "sticky_key": "field:user"}, "routes"),
    "same-version-twice": ({"routes": [_route(1, 50.0), _route(1, 50.0, C)], "strategy": "ab",
                            "sticky_key": "field:user"}, "routes"),
    "shadow-without-mirror": ({"strategy": "shadow"}, "routes"),
    "shadow-weight-zero": ({"routes": [_route(1), _route(2, 0.0, S)], "strategy": "shadow"},
                           "routes[1].weight"),
    "ab-one-arm": ({"strategy": "ab", "sticky_key": "field:user"}, "routes"),
    "ab-no-key": ({"routes": [_route(1, 50.0), _route(2, 50.0, C)], "strategy": "ab"},
                  "sticky_key"),
    "ab-bad-key": ({"routes": [_route(1, 50.0), _route(2, 50.0, C)], "strategy": "ab",
                    "sticky_key": "cookie:session"}, "sticky_key"),
    "ab-empty-arm": ({"routes": [_route(1, 100.0), _route(2, 0.0, C)], "strategy": "ab",
                      "sticky_key": "field:user"}, "routes[1].weight"),
    "steps-not-increasing": ({"canary": CanaryPlan((50.0, 25.0, 100.0))}, "canary.steps"),
    "steps-not-ending-at-100": ({"canary": CanaryPlan((10.0, 50.0))}, "canary.steps"),
    "steps-only-100": ({"canary": CanaryPlan((100.0,))}, "canary.steps"),
    "steps-zero": ({"canary": CanaryPlan((0.0, 100.0))}, "canary.steps"),
    "min-samples": ({"canary": CanaryPlan(analysis=AnalysisPolicy(min_samples=0))},
                    "canary.analysis.min_samples"),
    "interval": ({"canary": CanaryPlan(analysis=AnalysisPolicy(interval=timedelta(0)))},
                 "canary.analysis.interval"),
    "p99-ratio": ({"canary": CanaryPlan(analysis=AnalysisPolicy(max_p99_ratio=-1.0))},
                  "canary.analysis.max_p99_ratio"),
    "description": ({"description": "  "}, "description"),
}


def test_create_refuses_bad_input_naming_the_field_and_writes_nothing(
        service: DeploymentService, clocked: MetadataStore) -> None:
    head = clocked.audit.head()
    for case, (changes, field) in BAD_CREATES.items():
        arguments: dict[str, Any] = {"name": "web", "routes": [_route(1)],
                                     "strategy": "replace", **changes}
        with pytest.raises(InvalidArgumentError) as caught:
            service.create(**arguments)
        assert caught.value.field == field, (case, caught.value.message)
    assert clocked.audit.head() == head and service.list() == []


def test_create_refuses_missing_unservable_and_duplicate_versions(
        service: DeploymentService, clocked: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match="models:/fraud/9"):
        service.create("web", [_route(9)], "replace")
    with clocked.write("tester") as uow:
        model_records.set_status(uow, "fraud", 3, ModelStatus.QUARANTINED,
                                 AllowAll().check(_request(3)))
    with pytest.raises(ConflictError, match="models:/fraud/3 is quarantined"):
        service.create("web", [_route(1), _route(3, 100.0, S)], "shadow")
    assert service.list() == []
    service.create("web", [_route(1)], "replace")
    with pytest.raises(AlreadyExistsError, match="'web'"):
        service.create("web", [_route(2)], "replace")


def _request(version: int) -> GateRequest:
    return GateRequest(GateAction.STATUS, "fraud", version, "tester", "quarantined")


# -- update, replace, rollback ---------------------------------------------------------------


def test_replace_and_update_keep_the_old_routes_as_last_good_and_rollback_returns_to_them(
        service: DeploymentService, clocked: MetadataStore) -> None:
    service.create("web", [_route(1), _route(3, 50.0, S)], "shadow")
    replaced = service.replace("web", "fraud", 2)
    assert replaced.routes == (_route(2), _route(3, 50.0, S))
    assert replaced.last_good == (_route(1), _route(3, 50.0, S))
    assert (replaced.revision, replaced.strategy) == (2, Strategy.SHADOW)
    rolled = service.rollback("web", "v2 answers slowly")
    assert rolled.routes == replaced.last_good and rolled.state is DeploymentState.ROLLED_BACK
    updated = service.update("web", [_route(1, 80.0), _route(2, 20.0, C)], "try an A/B split",
                             sticky_key="field:user_id")
    assert (updated.state, updated.strategy, updated.revision) == (
        DeploymentState.ACTIVE, Strategy.AB, 4)
    assert [c.reason for c in service.history("web")] == [
        "try an A/B split", "v2 answers slowly", "replaced by models:/fraud/2",
        "created (shadow)"]
    assert Written(clocked)() == (4, 4, 4)
    assert service.queries.revisions() == {"web": 4}
    same = service.update("web", updated.routes, "nothing new")
    assert same == updated and Written(clocked)() == (4, 4, 4)


def test_update_to_an_ab_split_needs_a_sticky_key(service: DeploymentService) -> None:
    service.create("web", [_route(1)], "replace")
    with pytest.raises(InvalidArgumentError) as caught:
        service.update("web", [_route(1, 50.0), _route(2, 50.0, C)], "split")
    assert caught.value.field == "sticky_key"
    with pytest.raises(InvalidArgumentError) as blank:
        service.update("web", [_route(2)], " ")
    assert blank.value.field == "reason"


def test_alias_uris_resolve_to_a_fixed_version(service: DeploymentService,
                                               clocked: MetadataStore) -> None:
    with clocked.write("tester") as uow:
        model_records.set_alias(uow, "fraud", "champion", 2, AllowAll().check(_request(2)))
    assert service.resolve("models:/fraud@champion") == ("fraud", 2)
    assert service.resolve("fraud@latest") == ("fraud", 3)
    with pytest.raises(InvalidArgumentError) as caught:
        service.resolve("s3://bucket/model")
    assert caught.value.field == "model"


# -- the state machine ----------------------------------------------------------------------


def test_the_state_machine_refuses_moves_it_does_not_allow(
        service: DeploymentService) -> None:
    service.create("web", [_route(1)], "replace")
    with pytest.raises(ConflictError, match="no earlier routes"):
        service.rollback("web", "nothing to return to")
    for action, source, target in (
            (lambda: service.pause("web"), "active", "paused"),
            (lambda: service.resume("web"), "active", "rolling_out"),
            (lambda: service.promote("web"), "active", "active")):
        with pytest.raises(InvalidTransitionError) as caught:
            action()
        assert (caught.value.source, caught.value.target) == (source, target)
    with pytest.raises(InvalidArgumentError) as itself:
        service.start_canary("web", ("fraud", 1), FAST)
    assert itself.value.field == "model"
    service.start_canary("web", ("fraud", 2), FAST)
    for action, target in ((lambda: service.start_canary("web", ("fraud", 3), FAST),
                            "rolling_out"),
                           (lambda: service.replace("web", "fraud", 3), "active"),
                           (lambda: service.resume("web"), "rolling_out")):
        with pytest.raises(InvalidTransitionError) as refused:
            action()
        assert (refused.value.source, refused.value.target) == ("rolling_out", target)
    service.rollback("web", "abandon")
    with pytest.raises(InvalidTransitionError, match="'rolled_back' to 'rolled_back'"):
        service.rollback("web", "again")
    with pytest.raises(NotFoundError, match="'nope'"):
        service.pause("nope")


def test_a_canary_cannot_start_on_an_ab_split(service: DeploymentService) -> None:
    service.create("web", [_route(1, 50.0), _route(2, 50.0, C)], "ab", sticky_key="field:u")
    with pytest.raises(ConflictError, match="splits traffic between 2 arms"):
        service.start_canary("web", ("fraud", 3), FAST)


# -- canary rollouts driven by verdicts -------------------------------------------------------


def test_a_healthy_canary_steps_through_each_percent_and_ends_as_the_sole_primary(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    service.create("web", [_route(1), _route(3, 100.0, S)], "shadow")
    started = service.start_canary("web", ("fraud", 2), FAST)
    assert started.routes == (_route(1, 90.0), _route(2, 10.0, C), _route(3, 100.0, S))
    assert (started.state, started.step, started.step_started_at) == (
        DeploymentState.ROLLING_OUT, 0, clock.now())
    assert started.last_good == (_route(1), _route(3, 100.0, S))
    current = started
    for step, percent in ((1, 25.0), (2, 50.0)):
        clock.advance(timedelta(seconds=30))
        current = service.apply_verdict(_verdict(current, "pass", clock))
        assert current.step == step and current.step_started_at == clock.now()
        assert current.routes[:2] == (_route(1, 100.0 - percent), _route(2, percent, C))
    clock.advance(timedelta(seconds=30))
    done = service.apply_verdict(_verdict(current, "pass", clock))
    assert done.state is DeploymentState.ACTIVE and done.routes == (_route(2), _route(3, 100.0, S))
    assert done.last_good == started.last_good and done.revision == 5
    assert len(service.verdicts("web")) == 3
    reasons = [c.reason for c in service.history("web")]
    assert reasons[0] == "canary models:/fraud/2 passed every step; promoted to 100%"
    assert "step 2 of 4: 25%" in reasons[2]
    assert Written(clocked)() == (5, 5, 5)


def test_passes_are_counted_until_enough_without_a_new_revision(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    plan = CanaryPlan((20.0, 100.0), AnalysisPolicy(passes_to_promote=2))
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), plan)
    clock.advance(timedelta(minutes=1))
    counted = service.apply_verdict(_verdict(started, "pass", clock))
    assert (counted.revision, counted.passes) == (started.revision, 1)
    assert Written(clocked)() == (2, 2, 2)
    clock.advance(timedelta(minutes=1))
    promoted = service.apply_verdict(_verdict(counted, "pass", clock))
    assert promoted.state is DeploymentState.ACTIVE and promoted.routes == (_route(2),)


def test_failures_roll_back_to_the_last_good_routes_by_themselves(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    plan = CanaryPlan(analysis=AnalysisPolicy(failures_to_rollback=2))
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), plan)
    clock.advance(timedelta(minutes=1))
    once = service.apply_verdict(_verdict(started, "fail", clock))
    assert (once.failures, once.state, once.revision) == (1, DeploymentState.ROLLING_OUT, 2)
    clock.advance(timedelta(minutes=1))
    rolled = service.apply_verdict(_verdict(once, "fail", clock, numbers={"error_rate": 0.2}))
    assert rolled.state is DeploymentState.ROLLED_BACK and rolled.routes == (_route(1),)
    change = service.history("web")[0]
    assert change.reason.startswith("automatic rollback: canary models:/fraud/2 failed")
    entry = clocked.audit.entries(AuditFilter(action="deployment.rolled_back"))[0]
    assert entry.after is not None and entry.after["verdict"]["numbers"] == {"error_rate": 0.2}
    assert Written(clocked)() == (3, 3, 3)
    again = service.start_canary("web", ("fraud", 3))
    assert again.state is DeploymentState.ROLLING_OUT and again.canary == plan


def test_inconclusive_verdicts_are_stored_and_change_nothing(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), FAST)
    for _ in range(3):
        clock.advance(timedelta(seconds=30))
        assert service.apply_verdict(_verdict(started, "inconclusive", clock)) == started
    assert [v.verdict for v in service.verdicts("web")] == ["inconclusive"] * 3
    assert service.get("web") == started and Written(clocked)() == (2, 2, 2)


def test_repeated_stale_and_paused_verdicts_are_ignored_and_not_stored(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), FAST)
    clock.advance(timedelta(seconds=30))
    verdict = _verdict(started, "pass", clock)
    stepped = service.apply_verdict(verdict)
    assert stepped.step == 1
    assert service.apply_verdict(verdict) == stepped  # the same id again
    assert service.apply_verdict(replace(verdict, id="rejudged")) == stepped  # old revision
    same_window = _verdict(stepped, "pass", clock, window_end=clock.now())
    service.apply_verdict(replace(same_window, verdict="inconclusive"))
    assert service.apply_verdict(replace(same_window, id="again")) == service.get("web")
    paused = service.pause("web", "looking at dashboards")
    clock.advance(timedelta(seconds=30))
    assert service.apply_verdict(_verdict(paused, "pass", clock)) == paused
    assert len(service.verdicts("web")) == 2
    clock.advance(timedelta(minutes=5))
    resumed = service.resume("web")
    assert resumed.step_started_at == clock.now() and resumed.step == 1
    with pytest.raises(InvalidArgumentError) as caught:
        service.apply_verdict(_verdict(resumed, "great", clock))
    assert caught.value.field == "verdict.verdict"


def test_promote_by_hand_and_rollback_from_a_paused_rollout(
        service: DeploymentService) -> None:
    service.create("web", [_route(1)], "replace")
    service.start_canary("web", ("fraud", 2), FAST)
    promoted = service.promote("web")
    assert promoted.routes == (_route(2),) and promoted.state is DeploymentState.ACTIVE
    service.start_canary("web", ("fraud", 3), FAST)
    service.pause("web")
    rolled = service.rollback("web", "paused and abandoned")
    assert rolled.routes == (_route(2),) and rolled.state is DeploymentState.ROLLED_BACK


# -- the gate, as the workspace wires it -------------------------------------------------------


def _policy(gate: str, targets: str, rule: str) -> str:
    return textwrap.dedent(f"""\
        kind: gate_policy
        name: guard-{gate.replace('_', '-')}
        applies_to: {{models: ["fraud"], gates: [{gate}]{targets}}}
        rules:
          - {rule}
        """)


def _register(ws: Workspace, **tags: str) -> int:
    digest = ws._blobs.put_bytes(b"a model").digest
    return ws.models.record_version(NewModelVersion("fraud", digest, "python", tags=tags),
                                    ()).version


def test_a_deploy_policy_refuses_a_create_naming_the_rule_and_writes_nothing(
        ws: Workspace, tmp_path: Path) -> None:
    version = _register(ws)
    ws.policies.apply(ws.actor, {"guard.yaml": _policy(
        "deploy", "", "{id: needs-owner, kind: required_metadata, fields: [owner]}")})
    head = ws.store.audit.head()
    with pytest.raises(PolicyDeniedError) as caught:
        ws.deployments.create("web", [_route(version)], "replace")
    assert "rule 'needs-owner' failed" in caught.value.message
    assert "models:/fraud/1" in caught.value.message
    assert ws.store.audit.head() == head and ws.deployments.list() == []
    owned = _register(ws, owner="risk")
    created = ws.deployments.create("web", [_route(owned)], "replace")
    assert created.revision == 1


def test_a_denied_rollout_step_pauses_the_rollout_with_the_reason_in_history(
        ws: Workspace) -> None:
    first, second = _register(ws), _register(ws)
    ws.deployments.create("web", [_route(first)], "replace")
    ws.policies.apply(ws.actor, {"guard.yaml": _policy(
        "rollout_step", ', targets: ["50"]',
        "{id: review, kind: required_metadata, fields: [security_review]}")})
    current = ws.deployments.start_canary("web", ("fraud", second), FAST)
    now = ws.store.clock.now()
    for expected in (DeploymentState.ROLLING_OUT, DeploymentState.PAUSED):
        current = ws.deployments.apply_verdict(RolloutVerdict(
            uuid.uuid4().hex, "web", current.revision, current.step, now, now, "pass", {},
            now))
        assert current.state is expected
    assert current.step == 1 and current.routes[1] == _route(second, 25.0, C)
    change = ws.deployments.history("web")[0]
    assert change.reason.startswith("rollout step to 50% denied, rollout paused")
    assert "review" in change.reason and change.gate is not None
    assert change.gate["allowed"] is False


def test_rollback_pause_and_resume_need_write_on_the_models_routed_to(ws: Workspace) -> None:
    first, second = _register(ws), _register(ws)
    ws.deployments.create("web", [_route(first)], "replace")
    ws.deployments.start_canary("web", ("fraud", second), FAST)
    ws.access.grant(ws.actor, ws.actor, Role.ADMIN)
    ws.access.grant(ws.actor, "vic", Role.VIEWER)
    viewer = DeploymentService(ws.store, ws.gate, "vic", ws.access)
    head = ws.store.audit.head()
    for action in (lambda: viewer.pause("web"), lambda: viewer.rollback("web", "no"),
                   lambda: viewer.promote("web")):
        with pytest.raises(AccessDeniedError, match="'vic' may not write on model 'fraud'"):
            action()
    assert ws.store.audit.head() == head
    assert ws.deployments.pause("web").state is DeploymentState.PAUSED
    with pytest.raises(AccessDeniedError):
        viewer.resume("web")


# -- quarantined versions never return to service ---------------------------------------------


def _quarantine(store: MetadataStore, *versions: int) -> None:
    with store.write("tester") as uow:
        for version in versions:
            model_records.set_status(uow, "fraud", version, ModelStatus.QUARANTINED,
                                     AllowAll().check(_request(version)))


def test_rollback_refuses_to_restore_a_quarantined_last_good_naming_it_and_writes_nothing(
        service: DeploymentService, clocked: MetadataStore) -> None:
    service.create("web", [_route(1)], "replace")
    replaced = service.replace("web", "fraud", 2)
    _quarantine(clocked, 1)
    head = clocked.audit.head()
    with pytest.raises(ConflictError, match=r"models:/fraud/1 \(quarantined\)"):
        service.rollback("web", "v2 is slow")
    assert service.get("web") == replaced and clocked.audit.head() == head
    service.create("both", [_route(2)], "replace")
    service.replace("both", "fraud", 3)
    _quarantine(clocked, 2, 3)
    with pytest.raises(ConflictError, match=r"current primary is models:/fraud/3 \(quarant"):
        service.rollback("both", "nothing is servable")


def test_rollback_with_a_quarantined_last_good_falls_back_to_the_current_primary_alone(
        service: DeploymentService, clocked: MetadataStore) -> None:
    service.create("web", [_route(1), _route(3, 50.0, S)], "shadow")
    service.replace("web", "fraud", 2)  # routes v2 + shadow v3, last good v1 + shadow v3
    service.create("ab", [_route(1)], "replace")
    service.update("ab", [_route(2, 50.0), _route(3, 50.0, C)], "split",
                   sticky_key="field:user")
    _quarantine(clocked, 1)
    for name in ("web", "ab"):
        rolled = service.rollback(name, "v1 was quarantined")
        assert rolled.routes == (_route(2),) and rolled.state is DeploymentState.ROLLED_BACK
        assert rolled.strategy is Strategy.REPLACE
        assert service.history(name)[0].reason == (
            "v1 was quarantined; last good routes hold models:/fraud/1 (quarantined); routed "
            "100% to the current primary models:/fraud/2 instead")
    entry = clocked.audit.entries(AuditFilter(action="deployment.rolled_back"))[0]
    assert entry.after is not None and entry.after["fallback"] == {
        "unservable": {"models:/fraud/1": "quarantined"}, "primary": "models:/fraud/2"}


def test_promote_refuses_a_quarantined_canary_and_the_rollout_stays(
        service: DeploymentService, clocked: MetadataStore) -> None:
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), FAST)
    _quarantine(clocked, 2)
    with pytest.raises(ConflictError, match="models:/fraud/2 is quarantined"):
        service.promote("web")
    assert service.get("web") == started
    assert service.rollback("web", "canary quarantined").routes == (_route(1),)


@pytest.mark.parametrize("verdict", ["pass", "fail", "inconclusive"])
def test_any_verdict_for_a_quarantined_canary_rolls_the_rollout_back(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock,
        verdict: str) -> None:
    plan = CanaryPlan((10.0, 100.0), AnalysisPolicy(passes_to_promote=1,
                                                   failures_to_rollback=3))
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), plan)
    _quarantine(clocked, 2)
    clock.advance(timedelta(minutes=1))
    rolled = service.apply_verdict(_verdict(started, verdict, clock))
    assert rolled.state is DeploymentState.ROLLED_BACK and rolled.routes == (_route(1),)
    assert service.history("web")[0].reason.startswith(
        "automatic rollback: canary models:/fraud/2 is quarantined; it may not serve")
    assert [v.verdict for v in service.verdicts("web")] == [verdict]


def test_a_verdict_pauses_a_rollout_when_nothing_servable_is_left_to_roll_back_to(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    service.create("web", [_route(1)], "replace")
    started = service.start_canary("web", ("fraud", 2), FAST)
    _quarantine(clocked, 1, 2)
    clock.advance(timedelta(minutes=1))
    paused = service.apply_verdict(_verdict(started, "pass", clock))
    assert paused.state is DeploymentState.PAUSED and paused.routes == started.routes
    assert "rollout paused instead" in service.history("web")[0].reason


def test_a_step_is_refused_and_the_rollout_paused_when_a_shadow_was_quarantined(
        service: DeploymentService, clocked: MetadataStore, clock: ManualClock) -> None:
    plan = CanaryPlan((10.0, 50.0, 100.0), AnalysisPolicy(passes_to_promote=1))
    service.create("web", [_route(1), _route(3, 20.0, S)], "shadow")
    started = service.start_canary("web", ("fraud", 2), plan)
    _quarantine(clocked, 3)
    clock.advance(timedelta(minutes=1))
    paused = service.apply_verdict(_verdict(started, "pass", clock))
    assert (paused.state, paused.step, paused.routes) == (
        DeploymentState.PAUSED, 0, started.routes)
    assert service.history("web")[0].reason == (
        "rollout step to 50% refused, rollout paused: models:/fraud/3 (quarantined) may not "
        "serve")


def test_evacuate_rolls_back_or_removes_every_route_to_a_version_and_reports_refusals(
        service: DeploymentService, clocked: MetadataStore) -> None:
    service.create("canaried", [_route(1)], "replace")
    service.start_canary("canaried", ("fraud", 2), FAST)
    service.create("mirror", [_route(1), _route(2, 30.0, S)], "shadow")
    service.create("replaced", [_route(1)], "replace")
    service.replace("replaced", "fraud", 2)
    service.create("stuck", [_route(2)], "replace")
    service.create("other", [_route(3)], "replace")
    _quarantine(clocked, 2)
    report = {e.deployment: e for e in service.evacuate("fraud", 2, "v2 leaks data")}
    assert {name: e.action for name, e in report.items()} == {
        "canaried": "rolled_back", "mirror": "route_removed", "replaced": "rolled_back",
        "stuck": "refused"}
    assert "no earlier routes" in report["stuck"].detail
    for name in ("canaried", "mirror", "replaced"):
        assert service.get(name).routes == (_route(1),)
        assert service.get(name).revision == report[name].revision
        assert service.history(name)[0].reason.startswith("v2 leaks data; ")
    assert service.get("mirror").strategy is Strategy.REPLACE
    assert service.get("stuck").routes == (_route(2),) and service.get("other").revision == 1
    assert service.evacuate("fraud", 2, "again") == [report["stuck"]]
    for bad, field in (({"version": 0}, "version"), ({"model": "../x"}, "model"),
                       ({"reason": " "}, "reason")):
        arguments: dict[str, Any] = {"model": "fraud", "version": 2, "reason": "r", **bad}
        with pytest.raises(InvalidArgumentError) as caught:
            service.evacuate(**arguments)
        assert caught.value.field == field
