"""Monitoring records: applied configs, evaluations of alert rules, and alerts.

The SQL side of ``monitoring``. Writes run in the caller's unit of work, so an evaluation,
the alert it opens or resolves, its event and its audit entry commit together; the caller
takes the append lock (``uow.serialise``) before reading what the write depends on (the
evaluation already stored for a window, the previous one, the alert firing), so two
evaluators cannot both believe they are first. ``(rule, scope_key, window_end)`` is unique:
one evaluation per rule, scope and window. The newest config row (by ``applied_at``, then
``id``) is the config in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.canonical import json_safe
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.ids import new_id
from loopline.core.monitoring import (
    Alert,
    AlertState,
    Evaluation,
    EvaluationStatus,
    Severity,
    SignalKind,
)
from loopline.store.errors import translated
from loopline.store.metadata_store import UnitOfWork
from loopline.store.models import ALERTS, MONITOR_CONFIGS, MONITOR_EVALUATIONS

__all__ = ["MAX_PAGE", "MonitorConfigRecord", "MonitorRecords", "evaluation_at",
           "firing_alert", "insert_alert", "insert_config", "insert_evaluation",
           "newest_config", "previous_evaluation", "resolve_alert"]

MAX_PAGE = 1000
# A test clock may stand still: each config is stamped after the one before, so "newest"
# is never a tie.
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class MonitorConfigRecord:
    """One applied monitoring config: the document as written, its digest, who and when."""

    id: str
    digest: str
    document: Mapping[str, Any]
    source: str | None
    applied_at: datetime
    applied_by: str


def _config(row: RowMapping) -> MonitorConfigRecord:
    return MonitorConfigRecord(id=row["id"], digest=row["digest"],
                               document=dict(row["document"] or {}), source=row["source"],
                               applied_at=row["applied_at"], applied_by=row["applied_by"])


def _evaluation(row: RowMapping) -> Evaluation:
    return Evaluation(
        id=row["id"], rule=row["rule"], scope_key=row["scope_key"],
        deployment=row["deployment"], signal=SignalKind(row["signal"]),
        window_start=row["window_start"], window_end=row["window_end"], value=row["value"],
        samples=row["samples"], status=EvaluationStatus(row["status"]), streak=row["streak"],
        rule_record=dict(row["rule_record"] or {}), numbers=dict(row["numbers"] or {}),
        config_digest=row["config_digest"], evaluated_at=row["evaluated_at"],
        alert_id=row["alert_id"])


def _alert(row: RowMapping) -> Alert:
    return Alert(id=row["id"], rule=row["rule"], scope_key=row["scope_key"],
                 deployment=row["deployment"], severity=Severity(row["severity"]),
                 state=AlertState(row["state"]), playbook=row["playbook"],
                 opened_at=row["opened_at"], evaluation_id=row["evaluation_id"],
                 numbers=dict(row["numbers"] or {}), resolved_at=row["resolved_at"])


def _page(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError("limit", f"{limit!r} must be a whole number from 1 to "
                                            f"{MAX_PAGE}")
    return limit


# ---------------------------------------------------------------------------- configs

def _newest_configs() -> sa.Select[Any]:
    return sa.select(MONITOR_CONFIGS).order_by(MONITOR_CONFIGS.c.applied_at.desc(),
                                               MONITOR_CONFIGS.c.id.desc())


def newest_config(connection: Connection) -> MonitorConfigRecord | None:
    """Return the config in force, read through ``connection``; None before the first."""
    row = connection.execute(_newest_configs().limit(1)).mappings().first()
    return _config(row) if row is not None else None


def insert_config(uow: UnitOfWork, digest: str, document: Mapping[str, Any],
                  source: str | None, previous: MonitorConfigRecord | None,
                  ) -> MonitorConfigRecord:
    """Insert an applied config in ``uow``'s transaction, stamped after ``previous``."""
    applied_at = uow.now()
    if previous is not None and applied_at <= previous.applied_at:
        applied_at = previous.applied_at + _TICK
    record = MonitorConfigRecord(id=new_id(), digest=digest, document=dict(document),
                                 source=source, applied_at=applied_at, applied_by=uow.actor)
    uow.session.connection().execute(sa.insert(MONITOR_CONFIGS), {
        "id": record.id, "digest": digest, "document": dict(document), "source": source,
        "applied_at": applied_at, "applied_by": uow.actor})
    return record


# ---------------------------------------------------------------------------- evaluations

def evaluation_at(connection: Connection, rule: str, scope_key: str,
                  window_end: datetime) -> Evaluation | None:
    """Return the evaluation of ``rule`` in ``scope_key`` for the window ending then."""
    row = connection.execute(sa.select(MONITOR_EVALUATIONS).where(
        MONITOR_EVALUATIONS.c.rule == rule, MONITOR_EVALUATIONS.c.scope_key == scope_key,
        MONITOR_EVALUATIONS.c.window_end == window_end)).mappings().first()
    return _evaluation(row) if row is not None else None


def previous_evaluation(connection: Connection, rule: str, scope_key: str,
                        before: datetime) -> Evaluation | None:
    """Return the evaluation of ``rule`` in ``scope_key`` whose window ended last before."""
    row = connection.execute(sa.select(MONITOR_EVALUATIONS).where(
        MONITOR_EVALUATIONS.c.rule == rule, MONITOR_EVALUATIONS.c.scope_key == scope_key,
        MONITOR_EVALUATIONS.c.window_end < before).order_by(
        MONITOR_EVALUATIONS.c.window_end.desc()).limit(1)).mappings().first()
    return _evaluation(row) if row is not None else None


def insert_evaluation(uow: UnitOfWork, evaluation: Evaluation) -> Evaluation:
    """Insert ``evaluation`` in ``uow``'s transaction (its numbers made JSON-safe).

    Raises:
        ConflictError: (via the store's error translation) when the rule, scope and
            window have one already; callers look first, under the append lock.
    """
    uow.session.connection().execute(sa.insert(MONITOR_EVALUATIONS), {
        "id": evaluation.id, "rule": evaluation.rule, "scope_key": evaluation.scope_key,
        "deployment": evaluation.deployment, "signal": str(evaluation.signal),
        "window_start": evaluation.window_start, "window_end": evaluation.window_end,
        "value": evaluation.value, "samples": evaluation.samples,
        "status": str(evaluation.status), "streak": evaluation.streak,
        "alert_id": evaluation.alert_id, "rule_record": json_safe(dict(evaluation.rule_record)),
        "numbers": json_safe(dict(evaluation.numbers)),
        "config_digest": evaluation.config_digest, "evaluated_at": evaluation.evaluated_at})
    return evaluation


# ---------------------------------------------------------------------------- alerts

def firing_alert(connection: Connection, rule: str, scope_key: str) -> Alert | None:
    """Return the alert of ``rule`` in ``scope_key`` that is firing, if one is."""
    row = connection.execute(sa.select(ALERTS).where(
        ALERTS.c.rule == rule, ALERTS.c.scope_key == scope_key,
        ALERTS.c.state == AlertState.FIRING.value).order_by(
        ALERTS.c.opened_at.desc()).limit(1)).mappings().first()
    return _alert(row) if row is not None else None


def insert_alert(uow: UnitOfWork, alert: Alert) -> Alert:
    """Insert ``alert`` in ``uow``'s transaction."""
    uow.session.connection().execute(sa.insert(ALERTS), {
        "id": alert.id, "rule": alert.rule, "scope_key": alert.scope_key,
        "deployment": alert.deployment, "severity": str(alert.severity),
        "state": str(alert.state), "playbook": alert.playbook, "opened_at": alert.opened_at,
        "resolved_at": alert.resolved_at, "evaluation_id": alert.evaluation_id,
        "numbers": json_safe(dict(alert.numbers))})
    return alert


def resolve_alert(uow: UnitOfWork, alert: Alert, at: datetime) -> Alert:
    """Mark the firing ``alert`` resolved at ``at`` in ``uow``'s transaction.

    Raises:
        NotFoundError: when it is not firing any more (or does not exist).
    """
    done = uow.session.connection().execute(sa.update(ALERTS).where(
        ALERTS.c.id == alert.id, ALERTS.c.state == AlertState.FIRING.value).values(
        state=AlertState.RESOLVED.value, resolved_at=at))
    if done.rowcount != 1:
        raise NotFoundError("firing alert", alert.id)
    return Alert(id=alert.id, rule=alert.rule, scope_key=alert.scope_key,
                 deployment=alert.deployment, severity=alert.severity,
                 state=AlertState.RESOLVED, playbook=alert.playbook,
                 opened_at=alert.opened_at, evaluation_id=alert.evaluation_id,
                 numbers=alert.numbers, resolved_at=at)


# ---------------------------------------------------------------------------- reads

class MonitorRecords:
    """Reads of applied configs, evaluations and alerts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def newest_config(self) -> MonitorConfigRecord | None:
        """Return the config in force, or None before the first apply."""
        with self._engine.connect() as connection:
            return newest_config(connection)

    @translated
    def newest_config_id(self) -> str | None:
        """Return the id of the config in force (one small query), or None."""
        with self._engine.connect() as connection:
            value = connection.execute(sa.select(MONITOR_CONFIGS.c.id).order_by(
                MONITOR_CONFIGS.c.applied_at.desc(), MONITOR_CONFIGS.c.id.desc()).limit(1)
                                       ).scalar()
        return None if value is None else str(value)

    @translated
    def configs(self, limit: int = 20) -> list[MonitorConfigRecord]:
        """List applied configs, newest first.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        with self._engine.connect() as connection:
            rows = connection.execute(_newest_configs().limit(_page(limit))).mappings().all()
        return [_config(row) for row in rows]

    @translated
    def evaluation(self, evaluation_id: str) -> Evaluation:
        """Return one evaluation.

        Raises:
            NotFoundError: when there is none with this id.
        """
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(MONITOR_EVALUATIONS).where(
                MONITOR_EVALUATIONS.c.id == evaluation_id)).mappings().first()
        if row is None:
            raise NotFoundError("evaluation", evaluation_id,
                                "list them with `loopline monitor evaluations`")
        return _evaluation(row)

    @translated
    def evaluations(self, rule: str | None = None, deployment: str | None = None,
                    limit: int = 50) -> list[Evaluation]:
        """List evaluations, newest window first (then newest evaluated).

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        query = sa.select(MONITOR_EVALUATIONS)
        if rule is not None:
            query = query.where(MONITOR_EVALUATIONS.c.rule == rule)
        if deployment is not None:
            query = query.where(MONITOR_EVALUATIONS.c.deployment == deployment)
        query = query.order_by(MONITOR_EVALUATIONS.c.window_end.desc(),
                               MONITOR_EVALUATIONS.c.evaluated_at.desc(),
                               MONITOR_EVALUATIONS.c.id.desc()).limit(_page(limit))
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_evaluation(row) for row in rows]

    @translated
    def alert(self, alert_id: str) -> Alert:
        """Return one alert.

        Raises:
            NotFoundError: when there is none with this id.
        """
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(ALERTS).where(
                ALERTS.c.id == alert_id)).mappings().first()
        if row is None:
            raise NotFoundError("alert", alert_id, "list them with `loopline monitor alerts`")
        return _alert(row)

    @translated
    def alerts(self, state: AlertState | None = None, deployment: str | None = None,
               limit: int = 50) -> list[Alert]:
        """List alerts, newest opened first.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        query = sa.select(ALERTS)
        if state is not None:
            query = query.where(ALERTS.c.state == AlertState(state).value)
        if deployment is not None:
            query = query.where(ALERTS.c.deployment == deployment)
        query = query.order_by(ALERTS.c.opened_at.desc(), ALERTS.c.id.desc()).limit(
            _page(limit))
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_alert(row) for row in rows]
