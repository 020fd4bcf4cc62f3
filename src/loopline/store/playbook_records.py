"""Playbook actions in the metadata store: created once per alert step, claimed, fenced, moved.

The SQL side of ``loopline.automation``. Writes run inside the caller's unit of work, so an
action's state change, its ``loop.playbook_action`` event and its audit entry commit together
or not at all; and the automation passes its own writes into another service's transaction
(a rollback, a status change) so that the effect and the action's new state commit as one.

Rules kept here:

- ``insert_actions`` creates every step of an alert's playbook at once, or nothing when the
  alert has actions already: a redelivered ``monitoring.alert_fired`` creates nothing new
  (checked under the append lock; the unique ``(alert_id, step)`` settles any race left).
- ``claim`` gives one worker a lease on an action (``claimed_by``, ``lease_until``) and
  raises ``attempts``, which is the fencing token: ``transition`` refuses with
  ``LeaseLostError`` when the row is no longer claimed by that worker under that token, so
  a worker whose lease ran out and was taken over cannot complete the action, and the
  transaction carrying its effect rolls back with the refusal.
- ``due`` lists the actions a worker may advance: not final, unclaimed or with an expired
  lease, and with every earlier step of the same alert final (steps run in order).
- ``start_facts`` tells whether an action's alert still fires and whether an earlier step of
  its playbook acted, so a playbook that has not begun is not
  started for a resolved or stale alert; ``last_seq_before`` places the automation's event
  cursor at a bounded horizon on its first use.

Lock order: the append lock (``uow.serialise``) first, then the action row, as every writer.
The result document keeps the alert the action was made for under ``alert`` (its deployment,
scope, window ...), and what the action did beside it. A step's params stay whole in its row
(a ``notify`` needs its URL), but audit entries and events show them through
``shown_params``: a URL's origin only, as a webhook's path or query often is its secret.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.canonical import json_safe
from loopline.core.errors import InvalidArgumentError, LeaseLostError, NotFoundError
from loopline.core.events import EventType
from loopline.core.ids import new_id
from loopline.core.monitoring import (
    FINAL_ACTION_STATES,
    ActionKind,
    ActionState,
    PlaybookAction,
    PlaybookStep,
)
from loopline.store.errors import translated
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import (
    ALERTS,
    EVENTS,
    MODEL_VERSIONS,
    MONITOR_EVALUATIONS,
    PLAYBOOK_ACTIONS,
)

__all__ = ["MAX_LIST", "ActionQueries", "AlertStanding", "Claim", "NewActions", "StartFacts",
           "claim", "cooldown_blocker", "evaluation_window", "insert_actions",
           "last_seq_before", "lock_action", "read_start_facts", "shown_params",
           "start_facts", "subject", "transition", "url_origin", "versions_of_run"]

MAX_LIST = 1_000
MAX_OWNER = 128
_T = PLAYBOOK_ACTIONS
_OPEN = [str(state) for state in ActionState if state not in FINAL_ACTION_STATES]


def url_origin(url: str) -> str:
    """Return only ``scheme://host[:port]`` of ``url`` (no user info, path or query)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def _shown(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
        return url_origin(value)
    if isinstance(value, Mapping):
        return {key: _shown(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(item) for item in value]
    return value


def shown_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``params`` as audit entries, events and the gate may see them: URLs as origins."""
    return {key: _shown(value) for key, value in params.items()}


def subject(action_id: str) -> str:
    """Return the audit and event subject of an action: ``playbook_action:<id>``."""
    return f"playbook_action:{action_id}"


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds an action: the worker (``owner``) and the fencing ``token`` it claimed with."""

    action_id: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class NewActions:
    """The steps of one alert's playbook, to store as that alert's actions."""

    alert_id: str
    deployment: str
    playbook: str
    steps: tuple[PlaybookStep, ...]
    alert: Mapping[str, Any]  # kept as ``result["alert"]`` of every action


def to_action(row: RowMapping) -> PlaybookAction:
    """Return the action a ``playbook_actions`` row holds."""
    return PlaybookAction(
        id=row["id"], alert_id=row["alert_id"], playbook=row["playbook"], step=row["step"],
        kind=ActionKind(row["kind"]), params=row["params"] or {},
        state=ActionState(row["state"]), attempts=row["attempts"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        requires_approval=bool(row["requires_approval"]), approval_id=row["approval_id"],
        claimed_by=row["claimed_by"], lease_until=row["lease_until"],
        result=row["result"] or {})


def _row(connection: Connection, action_id: str, lock: bool = False) -> RowMapping:
    query = sa.select(_T).where(_T.c.id == action_id)
    found = connection.execute(query.with_for_update() if lock else query).mappings().first()
    if found is None:
        raise NotFoundError("playbook action", action_id,
                            "list them with `loopline playbooks actions`")
    return found


def _summary(action: PlaybookAction) -> dict[str, Any]:
    """Return what an event and an audit entry say about ``action``."""
    alert = action.result.get("alert") or {}
    return {"action_id": action.id, "alert_id": action.alert_id, "playbook": action.playbook,
            "step": action.step, "kind": str(action.kind), "state": str(action.state),
            "deployment": alert.get("deployment"), "attempts": action.attempts}


def _announce(uow: UnitOfWork, before: PlaybookAction | None, after: PlaybookAction) -> None:
    """Write the event and the audit entry of ``after``'s new state."""
    payload = _summary(after)
    if before is not None:
        payload["from"] = str(before.state)
    outcome = {key: value for key, value in after.result.items() if key != "alert"}
    uow.emit(EventType.PLAYBOOK_ACTION, subject(after.id), {**payload, "result": outcome})
    uow.audit(f"playbook.action_{after.state}", subject(after.id),
              None if before is None else {"state": str(before.state)},
              json_safe({**payload, "params": shown_params(after.params),
                         "result": outcome}))


def insert_actions(uow: UnitOfWork, new: NewActions) -> tuple[list[PlaybookAction], bool]:
    """Store one pending action per step; return the alert's actions and whether made now.

    When the alert has actions already (a redelivered event), nothing is written and those
    are returned with ``False``.
    """
    uow.serialise()  # a concurrent delivery of the same alert waits here, then sees ours
    connection = uow.session.connection()
    existing = connection.execute(sa.select(_T).where(_T.c.alert_id == new.alert_id)
                                  .order_by(_T.c.step)).mappings().all()
    if existing:
        return [to_action(row) for row in existing], False
    now = uow.now()
    made = [PlaybookAction(
        id=new_id(), alert_id=new.alert_id, playbook=new.playbook, step=index,
        kind=step.kind, params=json_safe(dict(step.params)), state=ActionState.PENDING,
        attempts=0, created_at=now, updated_at=now,
        requires_approval=step.requires_approval, result={"alert": json_safe(dict(new.alert))})
        for index, step in enumerate(new.steps)]
    connection.execute(sa.insert(_T), [
        {"id": action.id, "alert_id": action.alert_id, "deployment": new.deployment,
         "playbook": action.playbook, "step": action.step, "kind": str(action.kind),
         "params": dict(action.params), "state": str(action.state),
         "requires_approval": action.requires_approval, "attempts": 0, "approval_id": None,
         "claimed_by": None, "lease_until": None, "result": dict(action.result),
         "created_at": now, "updated_at": now} for action in made])
    for action in made:
        _announce(uow, None, action)
    return made, True


def lock_action(uow: UnitOfWork, action_id: str) -> PlaybookAction:
    """Return the action, its row locked until this unit commits (after the append lock).

    Raises:
        NotFoundError: when there is no such action.
    """
    uow.serialise()
    return to_action(_row(uow.session.connection(), action_id, lock=True))


def claim(uow: UnitOfWork, action_id: str, owner: str, until: datetime) -> PlaybookAction | None:
    """Lease the action to ``owner`` until ``until`` and raise its fencing token.

    Returns None (writing nothing) when the action is final or another worker's lease on it
    has not expired.

    Raises:
        InvalidArgumentError: naming ``owner`` when it is empty or too long.
        NotFoundError: when there is no such action.
    """
    if not isinstance(owner, str) or not 0 < len(owner) <= MAX_OWNER:
        raise InvalidArgumentError("owner", f"must be 1-{MAX_OWNER} characters")
    current = lock_action(uow, action_id)
    held = (current.claimed_by not in (None, owner) and current.lease_until is not None
            and current.lease_until > uow.now())
    if current.state in FINAL_ACTION_STATES or held:
        return None
    claimed = replace(current, claimed_by=owner, lease_until=until,
                      attempts=current.attempts + 1)
    uow.session.connection().execute(sa.update(_T).where(_T.c.id == action_id).values(
        claimed_by=owner, lease_until=until, attempts=claimed.attempts))
    return claimed


def transition(uow: UnitOfWork, held: Claim, state: ActionState,
               result: Mapping[str, Any] | None = None, *, keep_until: datetime | None = None,
               approval_id: str | None = None) -> PlaybookAction:
    """Move the action ``held`` to ``state``, merging ``result`` into its result.

    The claim ends unless ``keep_until`` keeps it until then (a retry waits out its backoff
    under it). An event and an audit entry are written when the state changes.

    Raises:
        LeaseLostError: when the action is no longer claimed by ``held.owner`` under
            ``held.token`` (another worker took it over, or it was let go): nothing is
            written.
    """
    current = lock_action(uow, held.action_id)
    if current.claimed_by != held.owner or current.attempts != held.token:
        raise LeaseLostError(f"playbook action {held.action_id} is no longer held by "
                             f"{held.owner} (claim {held.token}); this worker's result is "
                             "dropped")
    after = replace(current, state=state, result={**current.result, **json_safe(dict(
        result or {}))}, updated_at=uow.now(),
        claimed_by=held.owner if keep_until is not None else None, lease_until=keep_until,
        approval_id=approval_id or current.approval_id)
    uow.session.connection().execute(sa.update(_T).where(_T.c.id == held.action_id).values(
        state=str(after.state), result=dict(after.result), updated_at=after.updated_at,
        claimed_by=after.claimed_by, lease_until=after.lease_until,
        approval_id=after.approval_id))
    if after.state is not current.state:
        _announce(uow, current, after)
    return after


def cooldown_blocker(uow: UnitOfWork, deployment: str, kind: ActionKind, since: datetime,
                     exclude: str) -> PlaybookAction | None:
    """Return an action of ``kind`` for ``deployment`` that runs now or finished since ``since``.

    Read inside the caller's transaction after the append lock, so two workers starting
    actions of one kind for one deployment are put one after the other.
    """
    uow.serialise()
    found = uow.session.connection().execute(sa.select(_T).where(
        _T.c.deployment == deployment, _T.c.kind == str(kind), _T.c.id != exclude,
        sa.or_(_T.c.state == str(ActionState.RUNNING),
               sa.and_(_T.c.state == str(ActionState.DONE), _T.c.updated_at >= since)))
        .order_by(_T.c.updated_at.desc()).limit(1)).mappings().first()
    return None if found is None else to_action(found)


def _limit(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIST:
        raise InvalidArgumentError("limit", f"{value!r} must be a whole number from 1 to "
                                            f"{MAX_LIST}")
    return value


class ActionQueries:
    """Reads of playbook actions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def get(self, action_id: str) -> PlaybookAction:
        """Return one action.

        Raises:
            NotFoundError: when there is no such action.
        """
        with self._engine.connect() as connection:
            return to_action(_row(connection, action_id))

    @translated
    def list(self, alert_id: str | None = None, state: ActionState | None = None,
             limit: int = 100) -> list[PlaybookAction]:
        """List at most ``limit`` actions, newest first (an alert's in step order).

        Raises:
            InvalidArgumentError: naming ``limit`` when it is outside 1..1000.
        """
        query = sa.select(_T)
        if alert_id is not None:
            query = query.where(_T.c.alert_id == alert_id)
        if state is not None:
            query = query.where(_T.c.state == str(state))
        query = query.order_by(_T.c.created_at.desc(), _T.c.alert_id.desc(), _T.c.step)
        with self._engine.connect() as connection:
            rows = connection.execute(query.limit(_limit(limit))).mappings().all()
        return [to_action(row) for row in rows]

    @translated
    def due(self, now: datetime, limit: int = 100) -> builtins.list[PlaybookAction]:
        """List actions a worker may advance now, oldest first.

        Not final; unclaimed or with an expired lease; every earlier step of its alert final.
        """
        earlier = PLAYBOOK_ACTIONS.alias("earlier")
        blocked = sa.exists().where(earlier.c.alert_id == _T.c.alert_id,
                                    earlier.c.step < _T.c.step, earlier.c.state.in_(_OPEN))
        query = (sa.select(_T).where(
            _T.c.state.in_(_OPEN),
            sa.or_(_T.c.claimed_by.is_(None), _T.c.lease_until <= now), ~blocked)
            .order_by(_T.c.created_at, _T.c.alert_id, _T.c.step).limit(_limit(limit)))
        with self._engine.connect() as connection:
            return [to_action(row) for row in connection.execute(query).mappings().all()]


@translated
def evaluation_window(engine: Engine, evaluation_id: str) -> tuple[datetime, datetime] | None:
    """Return the window (start, end) of a stored evaluation, or None when there is none."""
    with engine.connect() as connection:
        found = connection.execute(sa.select(
            MONITOR_EVALUATIONS.c.window_start, MONITOR_EVALUATIONS.c.window_end).where(
            MONITOR_EVALUATIONS.c.id == evaluation_id)).first()
    return None if found is None else (found[0], found[1])


@translated
def versions_of_run(engine: Engine, run_id: str) -> Sequence[tuple[str, int]]:
    """Return the model versions registered by pipeline run ``run_id``, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(MODEL_VERSIONS.c.name, MODEL_VERSIONS.c.version)
                                  .where(MODEL_VERSIONS.c.run_id == run_id)
                                  .order_by(MODEL_VERSIONS.c.created_at,
                                            MODEL_VERSIONS.c.version)).all()
    return [(row[0], row[1]) for row in rows]


@dataclass(frozen=True, slots=True)
class AlertStanding:
    """Where a stored alert stands: ``firing`` or ``resolved``, opened and resolved when."""

    state: str
    opened_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class StartFacts:
    """What deciding to start a step reads: whether an earlier step acted, and the alert."""

    begun: bool
    alert: AlertStanding | None  # None: no alert row has the action's alert id


def _alert_standing(connection: Connection, alert_id: str) -> AlertStanding | None:
    found = connection.execute(sa.select(ALERTS.c.state, ALERTS.c.opened_at,
                                         ALERTS.c.resolved_at).where(
        ALERTS.c.id == alert_id)).first()
    return None if found is None else AlertStanding(found[0], found[1], found[2])


def _begun(connection: Connection, alert_id: str, step: int) -> bool:
    found = connection.execute(sa.select(_T.c.id).where(
        _T.c.alert_id == alert_id, _T.c.step < step,
        _T.c.state.in_([str(ActionState.DONE), str(ActionState.FAILED)])).limit(1)).first()
    return found is not None


def start_facts(uow: UnitOfWork, alert_id: str, step: int) -> StartFacts:
    """Return, inside ``uow``, what deciding to start step ``step`` of the alert reads.

    Whether a step before it acted (done or failed), and where the stored alert stands.
    """
    connection = uow.session.connection()
    return StartFacts(_begun(connection, alert_id, step),
                      _alert_standing(connection, alert_id))


@translated
def read_start_facts(engine: Engine, alert_id: str, step: int) -> StartFacts:
    """Return what ``start_facts`` does, read outside any write transaction."""
    with engine.connect() as connection:
        return StartFacts(_begun(connection, alert_id, step),
                          _alert_standing(connection, alert_id))


@translated
def last_seq_before(engine: Engine, at: datetime) -> int:
    """Return the ``seq`` of the newest event that occurred before ``at`` (0: none did)."""
    with engine.connect() as connection:
        found = connection.execute(sa.select(sa.func.max(EVENTS.c.seq)).where(
            EVENTS.c.occurred_at < at)).scalar()
    return 0 if found is None else int(found)
