"""The automation: turn fired alerts into playbook actions and advance them, each exactly once.

``handle(event)`` is the dispatcher's handler for ``monitoring.alert_fired``: it stores one
``pending`` action per step of the alert's playbook, or nothing when the alert has actions
already (delivery is at least once). ``tick()`` advances every action that is due: steps of
one alert in order, each held by one worker under a lease (``store.playbook_records``):

    pending ──gate allows──────────────> running ──effect──> done
       │    ──approval needed──> awaiting_approval ──approved──> running
       │                             ├──approved for another version──> asks again
       │                             └──rejected / withdrawn / expired──> skipped
       ├──gate denies (policy)───────> skipped
       ├──alert resolved, or older than max_alert_age, playbook not begun──> skipped
       └──same kind ran on the deployment within the cool-down──> skipped
                (a step with ``cooldown: false`` in its params opts out)
    running ──refused (bad params, conflict, denied)──> failed
            ──transient error (BackendError)──> retried with backoff, then failed

Exactly once: each effect that is a database change commits in the same transaction as the
action's ``done`` (or as a note the retry reads), through the ``within`` hooks of the
deployment and registry services, and that transaction is fenced by the worker's claim
(``LeaseLostError`` rolls it back when another worker took the action over). A ``retrain``
starts its run under the trigger key ``playbook:<action id>``, which starts one run only.
A ``notify`` is the exception, said in ``automation.notify``: at least once, with an
idempotency key. Cool-downs are decided under the append lock in the transaction that
starts the action, so two workers cannot both start a retrain for one deployment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from loopline.automation import notify, quarantine, retrain, rollback
from loopline.automation.alerts import AlertContext
from loopline.automation.governing import Outcome, Verdict, approval_request, govern
from loopline.automation.held import Held
from loopline.automation.log import ActionLog
from loopline.automation.ports import (
    AutomationOptions,
    AutomationPorts,
    PipelineSource,
    PlaybookSource,
    RunExecutor,
    Tools,
)
from loopline.core.errors import (
    BackendError,
    InvalidArgumentError,
    LeaseLostError,
    LooplineError,
    PolicyDeniedError,
)
from loopline.core.events import Event, EventType
from loopline.core.governance import ApprovalRequest, ApprovalStatus
from loopline.core.governance import Verdict as Vote
from loopline.core.ids import new_id
from loopline.core.models import version_uri
from loopline.core.monitoring import ActionKind, ActionState, AlertState, PlaybookAction
from loopline.core.runs import PipelineRun
from loopline.outbound import OutboundClient
from loopline.pipelines import PipelineDefinition, Runner
from loopline.store import playbook_records as records

__all__ = ["SUBSCRIBER", "Automation", "TickReport", "inline_executor", "pipelines_by_name"]

log = logging.getLogger(__name__)
MAX_ROUNDS = 20  # a tick walks an alert's steps in order, one step per round
DEFAULT_COOLDOWN = timedelta(hours=1)  # when the playbook is no longer in the config
SUBSCRIBER = "automation"  # the dispatcher subscription handing alerts to ``handle``
PERFORM: dict[ActionKind, Callable[[Held, Tools], None]] = {
    ActionKind.RETRAIN: retrain.perform, ActionKind.ROLLBACK: rollback.perform,
    ActionKind.QUARANTINE: quarantine.perform, ActionKind.NOTIFY: notify.perform}


def pipelines_by_name(pipelines: Sequence[PipelineDefinition]) -> PipelineSource:
    """Return a ``PipelineSource`` over ``pipelines``."""
    found = {pipeline.name: pipeline for pipeline in pipelines}
    return found.get


def inline_executor(runner: Runner) -> RunExecutor:
    """Return an executor that runs a pending run to its end here (``Runner.resume``).

    A failing run is recorded failed by the runner; a run another runner holds is left to it.
    """
    def execute(pipeline: PipelineDefinition, run: PipelineRun) -> None:
        try:
            runner.resume(run.id, pipeline)
        except LooplineError as exc:  # held by another runner, or the store failed
            log.warning("playbook run %s not executed here: %s", run.id, exc.message)

    return execute


@dataclass(slots=True)
class TickReport:
    """What one tick did: each action it moved, with its state after, and errors."""

    moved: dict[str, ActionState] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _owner() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{new_id()[-8:]}"


class Automation:
    """Playbook actions of one workspace: created from alerts, advanced by ``tick``."""

    def __init__(self, ports: AutomationPorts, playbooks: PlaybookSource,
                 pipelines: PipelineSource | None = None, execute: RunExecutor | None = None,
                 options: AutomationOptions | None = None) -> None:
        """Build the automation; ``pipelines`` are those ``retrain`` steps may start."""
        self.options = options or AutomationOptions()
        self._ports = ports
        self._store = ports.store
        self._playbooks = playbooks
        self._owner = _owner()
        webhooks = dataclasses.replace(self.options.outbound, max_redirects=0)  # see notify
        self._tools = Tools(ports, self.options, pipelines or (lambda name: None), execute,
                            OutboundClient(webhooks, self.options.transport))
        self.queries = records.ActionQueries(ports.store.engine)
        self.log = ActionLog(ports.store)

    @property
    def owner(self) -> str:
        """The name this worker writes in ``claimed_by``."""
        return self._owner

    def close(self) -> None:
        """Release the webhook client's connections."""
        self._tools.client.close()

    # -- reading -----------------------------------------------------------------------------

    def actions(self, alert_id: str | None = None, state: ActionState | str | None = None,
                limit: int = 100) -> list[PlaybookAction]:
        """List actions newest first (an alert's in step order), of one alert or state.

        Raises:
            InvalidArgumentError: naming ``state`` or ``limit`` when invalid.
        """
        return self.log.list(alert_id, state, limit)

    def get(self, action_id: str) -> PlaybookAction:
        """Return one action.

        Raises:
            NotFoundError: when there is no such action.
        """
        return self.log.get(action_id)

    # -- alerts ------------------------------------------------------------------------------

    def place_cursor(self, subscriber: str = SUBSCRIBER) -> int | None:
        """Start the event subscription ``subscriber`` at a bounded horizon, on its first use.

        With no cursor yet, it is placed after the last event that occurred more than
        ``max_alert_age`` ago: alerts fired within that age are handed over (and checked
        again when each action starts), older ones never are, however long the log. Returns
        the position placed, or None when the cursor exists (or another worker placed it).

        Raises:
            BackendError: when the store fails.
        """
        events = self._store.events
        if any(cursor.subscriber == subscriber for cursor in events.cursors()):
            return None
        horizon = records.last_seq_before(
            self._store.engine, self._store.clock.now() - self.options.max_alert_age)
        return horizon if events.advance(subscriber, 0, horizon) else None

    def handle(self, event: Event) -> list[PlaybookAction]:
        """Store the actions of a fired alert's playbook (the dispatcher's handler).

        Returns the alert's actions (those stored before, for a redelivered event). Other
        events, an alert without a playbook, a playbook the config no longer has and a
        malformed payload store nothing (the last two are logged): raising would stop the
        subscriber on an event that can never succeed.

        Raises:
            BackendError: when the store fails (the dispatcher delivers the event again).
        """
        if event.type != EventType.ALERT_FIRED:
            return []
        try:
            alert = AlertContext.from_payload(event.payload)
        except InvalidArgumentError as exc:
            log.warning("alert event %s ignored: %s", event.id, exc.message)
            return []
        if alert.playbook is None:
            return []
        playbook = self._playbooks(alert.playbook)
        if playbook is None:
            log.warning("alert %s names playbook %r, which the applied monitoring config does "
                        "not have: no action taken", alert.alert_id, alert.playbook)
            return []
        alert = alert.with_window(records.evaluation_window(
            self._store.engine, alert.evaluation_id)).fired(event.occurred_at)
        with self._store.write(self.options.actor) as uow:
            made, _ = records.insert_actions(uow, records.NewActions(
                alert.alert_id, alert.deployment, playbook.name, playbook.steps,
                alert.as_record()))
        return made

    # -- advancing ---------------------------------------------------------------------------

    def tick(self, limit: int = 100) -> TickReport:
        """Advance every due action (at most ``limit`` a round) as far as it goes now.

        Errors are per action (logged, in the report); the tick goes on with the others.

        Raises:
            BackendError: when the store cannot list the due actions.
        """
        report = TickReport()
        for _ in range(MAX_ROUNDS):
            moved = 0
            for action in self.queries.due(self._store.clock.now(), limit):
                moved += self._advance(action, report)
            if not moved:
                break
        return report

    def _advance(self, action: PlaybookAction, report: TickReport) -> bool:
        """Take one step with ``action``; return whether it claimed it (and so moved it)."""
        try:
            if self._idle(action):
                return False
            held = self._claim(action.id)
        except LooplineError as exc:
            report.errors[action.id] = exc.message
            log.warning("playbook action %s: %s", action.id, exc.message)
            return False
        if held is None:
            return False
        try:
            self._step(held)
        except LeaseLostError as exc:
            report.errors[action.id] = exc.message
            log.info("playbook action %s: %s", action.id, exc.message)
        except BackendError as exc:
            self._settle_error(held, exc, report, transient=True)
        except LooplineError as exc:
            self._settle_error(held, exc, report, transient=False)
        report.moved[action.id] = held.action.state
        return True

    def _idle(self, action: PlaybookAction) -> bool:
        """Tell, by reading only, that ``action`` has nothing to do now (waiting on others)."""
        if action.state is ActionState.AWAITING_APPROVAL and action.approval_id is not None:
            found = self._ports.approvals.get(action.approval_id)
            return found.status is ApprovalStatus.PENDING
        run_id = action.result.get("run_id")
        if action.state is ActionState.RUNNING and action.kind is ActionKind.RETRAIN \
                and isinstance(run_id, str):
            run = self._ports.runner.runs.run(run_id)
            age = self._store.clock.now() - run.created_at
            return retrain.waiting(run, self._tools, age > self.options.run_timeout)
        return False

    def _claim(self, action_id: str) -> Held | None:
        until = self._store.clock.now() + self.options.lease
        with self._store.write(self.options.actor) as uow:
            claimed = records.claim(uow, action_id, self._owner, until)
        return None if claimed is None else Held(self._store, self.options.actor, claimed)

    def _step(self, held: Held) -> None:
        state = held.action.state
        if state is ActionState.PENDING:
            self._pending(held)
        elif state is ActionState.AWAITING_APPROVAL:
            self._awaiting(held)
        else:  # running: taken over from a dead worker, or a retrain back from its run
            PERFORM[held.action.kind](held, self._tools)

    def _verdict(self, held: Held, approval: ApprovalRequest | None) -> Verdict | None:
        """Ask governance; a refusal of the actor itself skips the action (None)."""
        try:
            return govern(self._ports, self.options.actor, held.action, held.alert, approval)
        except PolicyDeniedError as exc:
            held.move(ActionState.SKIPPED, {"reason": f"denied: {exc.message}"})
            return None

    def _pending(self, held: Held) -> None:
        stale = self._stale(records.read_start_facts(self._store.engine, held.action.alert_id,
                                                     held.action.step), held)
        if stale is not None:
            held.move(ActionState.SKIPPED, {"reason": stale})
            return
        self._decide(held, None)

    def _stale(self, facts: records.StartFacts, held: Held) -> str | None:
        """Say why ``held`` must not start (its alert is over or too old), or None.

        Only while its playbook has not begun: once an earlier step acted (a rollback that
        resolved the alert, say), the rest of the playbook follows. The age counts from the
        alert's opening (the event's time when no alert row is stored) and is not held
        against a step a person approved.
        """
        action, alert, standing = held.action, held.alert, facts.alert
        if facts.begun:
            return None
        if standing is not None and standing.state == AlertState.RESOLVED:
            when = "" if standing.resolved_at is None else f" at {standing.resolved_at}"
            return (f"alert {alert.alert_id} was resolved{when} before its playbook began: "
                    "nothing to act on")
        opened = alert.fired_at if standing is None else standing.opened_at
        limit = self.options.max_alert_age
        if action.approval_id is None and opened is not None \
                and self._store.clock.now() - opened > limit:
            return (f"alert {alert.alert_id} fired at {opened.isoformat()}, more than "
                    f"{limit} ago, and its playbook had not begun: too old to act on")
        return None

    def _awaiting(self, held: Held) -> None:
        request = self._ports.approvals.get(held.action.approval_id or "")
        if request.status is ApprovalStatus.PENDING:
            held.move(ActionState.AWAITING_APPROVAL)  # let go: nothing to do yet
            return
        if request.status is not ApprovalStatus.APPROVED:
            said = [f"{vote.approver}: {vote.comment}" for vote in request.votes
                    if vote.verdict is Vote.REJECT]
            held.move(ActionState.SKIPPED, {"reason": (
                f"approval request {request.id} {request.status}"
                + (f" ({'; '.join(said)})" if said else ""))})
            return
        self._decide(held, request)

    def _decide(self, held: Held, approval: ApprovalRequest | None) -> None:
        """Skip, hold for approval or start the action, as governance says now."""
        verdict = self._verdict(held, approval)
        if verdict is None:
            return
        if verdict.outcome is Outcome.DENIED:
            held.move(ActionState.SKIPPED, {"reason": f"denied by policy: {verdict.reason}",
                                            "gate": verdict.gate})
        elif verdict.outcome is Outcome.NEEDS_APPROVAL:
            self._hold(held, verdict)
        else:
            self._start(held, verdict)

    def _hold(self, held: Held, verdict: Verdict) -> None:
        """Wait on the approval request ``verdict`` needs (made or joined) for the subject now.

        A pending request is waited on unclaimed (``_idle`` reads it). One approved already
        and still not enough (a policy wants more votes than it has) is looked at again only
        after a lease, under this worker's claim, so the action never spins round by round.
        """
        request = approval_request(self._ports, held.action, held.alert, verdict)
        result = {"gate": verdict.gate, "approval": {
            "id": request.id, "why": verdict.reason, "required": request.required,
            "version": version_uri(request.model, request.version),
            "target": request.target, "expires_at": request.expires_at.isoformat()}}
        if request.status is ApprovalStatus.PENDING:
            held.move(ActionState.AWAITING_APPROVAL, result, approval_id=request.id)
            return
        log.info("playbook action %s: approval request %s is %s and still not enough: %s",
                 held.action.id, request.id, request.status, verdict.reason)
        held.move(ActionState.AWAITING_APPROVAL, result, approval_id=request.id,
                  keep_until=self._store.clock.now() + self.options.lease)

    def _start(self, held: Held, verdict: Verdict) -> None:
        """Skip the action when stale or within its cool-down, else mark it running; perform it.

        All in one transaction under the append lock: of two workers starting actions of one
        kind for one deployment, the second sees the first one running, and an alert resolved
        meanwhile is seen before the action starts.
        """
        playbook = self._playbooks(held.action.playbook)
        cooldown = playbook.cooldown if playbook is not None else DEFAULT_COOLDOWN
        if held.params.get("cooldown") is False:  # this step opts out (a notify per alert)
            cooldown = timedelta(0)
        now = self._store.clock.now()
        with self._store.write(self.options.actor) as uow:
            uow.serialise()
            stale = self._stale(records.start_facts(uow, held.action.alert_id,
                                                    held.action.step), held)
            blocker = None if cooldown <= timedelta(0) or stale else records.cooldown_blocker(
                uow, held.alert.deployment, held.action.kind, now - cooldown, held.action.id)
            if stale is not None:
                held.action = records.transition(uow, held.claim, ActionState.SKIPPED,
                                                 {"reason": stale})
            elif blocker is not None:
                held.action = records.transition(uow, held.claim, ActionState.SKIPPED, {
                    "reason": f"cool-down: {held.action.kind} action {blocker.id} for "
                              f"deployment {held.alert.deployment!r} is {blocker.state} "
                              f"(updated {blocker.updated_at.isoformat()}), within "
                              f"{cooldown}", "cooldown_of": blocker.id})
            else:
                held.action = records.transition(uow, held.claim, ActionState.RUNNING,
                                                 {"gate": verdict.gate},
                                                 keep_until=held.lease_until)
        if held.action.state is ActionState.RUNNING:
            PERFORM[held.action.kind](held, self._tools)

    def _settle_error(self, held: Held, exc: LooplineError, report: TickReport,
                      transient: bool) -> None:
        """Fail the action, or for a transient error retry it after a backoff."""
        report.errors[held.action.id] = exc.message
        failures = int(held.action.result.get("failures", 0)) + 1
        try:
            if transient and failures < self.options.max_attempts:
                delay = min(self.options.retry_delay * 2 ** (failures - 1),
                            self.options.max_retry_delay)
                log.warning("playbook action %s failed (%d of %d), retried in %s: %s",
                            held.action.id, failures, self.options.max_attempts, delay,
                            exc.message)
                held.move(held.action.state, {"last_error": exc.message, "failures": failures},
                          keep_until=self._store.clock.now() + delay)
            else:
                log.warning("playbook action %s failed: %s", held.action.id, exc.message)
                held.move(ActionState.FAILED, {"reason": exc.message, "failures": failures})
        except LooplineError as again:  # taken over, or the store is down: its lease expires
            log.warning("playbook action %s: could not record the failure: %s",
                        held.action.id, again.message)

