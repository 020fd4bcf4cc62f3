"""A deployment's monitoring history over a period, read in bounded pieces for reports.

Read-only. A week of once-a-minute evaluations is ten thousand rows per rule, and a drift
evaluation's ``numbers`` hold every column's statistics, so a report does not load them
all: ``evaluation_points`` lists the light columns of every evaluation in the period (to
count and to choose from), and ``evaluations`` loads the chosen ones whole, in chunks.
An evaluation is in the period ``(start, end]`` when its window ends there; an alert is in
it when it was firing at some moment of ``[start, end]`` (one opened by the evaluation at
``end`` is in it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import (
    Alert,
    Evaluation,
    EvaluationStatus,
    PlaybookAction,
    SignalKind,
)
from loopline.store.errors import translated
from loopline.store.models import ALERTS, MONITOR_EVALUATIONS, PLAYBOOK_ACTIONS

# The row mappers of the records modules, shared so a row reads the same everywhere.
from loopline.store.monitor_records import _alert as to_alert
from loopline.store.monitor_records import _evaluation as to_evaluation
from loopline.store.playbook_records import to_action

__all__ = ["CHUNK", "MAX_ALERTS", "EvaluationPoint", "MonitorHistory"]

CHUNK = 500  # ids per IN (...) list: well under every backend's parameter limit
MAX_ALERTS = 1000
# An evaluation is stamped within the minute after its window's end (windows end on whole
# minutes), which lets the period's filter use the (deployment, evaluated_at) index.
_STAMPED_WITHIN = timedelta(minutes=1)
_E = MONITOR_EVALUATIONS


@dataclass(frozen=True, slots=True)
class EvaluationPoint:
    """The light columns of one stored evaluation (no rule record, no numbers)."""

    id: str
    rule: str
    scope_key: str
    signal: SignalKind
    window_end: datetime
    value: float | None
    status: EvaluationStatus
    alert_id: str | None
    config_digest: str


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for begin in range(0, len(ids), CHUNK):
        yield ids[begin:begin + CHUNK]


def _period(start: datetime, end: datetime) -> None:
    for name, when in (("start", start), ("end", end)):
        if not isinstance(when, datetime) or when.utcoffset() is None:
            raise InvalidArgumentError(name, "must be a timezone-aware datetime")
    if end <= start:
        raise InvalidArgumentError("end", f"{end.isoformat()} must be after the start "
                                          f"{start.isoformat()}")


class MonitorHistory:
    """Reads of one deployment's evaluations, alerts and playbook actions over a period."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def evaluation_points(self, deployment: str, start: datetime,
                          end: datetime) -> list[EvaluationPoint]:
        """List the evaluations of ``deployment`` whose window ends in ``(start, end]``.

        Ordered by rule, scope and window end; light columns only.

        Raises:
            InvalidArgumentError: naming ``start`` or ``end`` when naive or out of order.
        """
        _period(start, end)
        query = sa.select(_E.c.id, _E.c.rule, _E.c.scope_key, _E.c.signal, _E.c.window_end,
                          _E.c.value, _E.c.status, _E.c.alert_id,
                          _E.c.config_digest).where(
            _E.c.deployment == deployment, _E.c.evaluated_at > start,
            _E.c.evaluated_at < end + _STAMPED_WITHIN, _E.c.window_end > start,
            _E.c.window_end <= end).order_by(_E.c.rule, _E.c.scope_key, _E.c.window_end,
                                            _E.c.id)
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [EvaluationPoint(row["id"], row["rule"], row["scope_key"],
                                SignalKind(row["signal"]), row["window_end"], row["value"],
                                EvaluationStatus(row["status"]), row["alert_id"],
                                row["config_digest"])
                for row in rows]

    @translated
    def evaluations(self, ids: Sequence[str]) -> list[Evaluation]:
        """Return the evaluations with these ids, whole, by rule, scope and window end."""
        found: list[Evaluation] = []
        with self._engine.connect() as connection:
            for part in _chunks(list(ids)):
                rows = connection.execute(sa.select(_E).where(_E.c.id.in_(part)))
                found.extend(to_evaluation(row) for row in rows.mappings())
        return sorted(found, key=lambda e: (e.rule, e.scope_key, e.window_end, e.id))

    @translated
    def alerts(self, deployment: str, start: datetime, end: datetime,
               limit: int = MAX_ALERTS) -> list[Alert]:
        """List the alerts of ``deployment`` firing at some moment of ``[start, end]``.

        Oldest opened first; the newest ``limit`` when there are more.

        Raises:
            InvalidArgumentError: naming ``start``, ``end`` or ``limit``.
        """
        _period(start, end)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ALERTS:
            raise InvalidArgumentError("limit", f"{limit!r} must be a whole number from 1 to "
                                                f"{MAX_ALERTS}")
        query = sa.select(ALERTS).where(
            ALERTS.c.deployment == deployment, ALERTS.c.opened_at <= end,
            sa.or_(ALERTS.c.resolved_at.is_(None), ALERTS.c.resolved_at >= start)).order_by(
            ALERTS.c.opened_at.desc(), ALERTS.c.id.desc()).limit(limit)
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [to_alert(row) for row in reversed(rows)]

    @translated
    def actions(self, alert_ids: Sequence[str]) -> list[PlaybookAction]:
        """Return the playbook actions of these alerts, oldest first, each alert's in step order."""
        table = PLAYBOOK_ACTIONS
        found: list[PlaybookAction] = []
        with self._engine.connect() as connection:
            for part in _chunks(list(alert_ids)):
                rows = connection.execute(sa.select(table).where(table.c.alert_id.in_(part)))
                found.extend(to_action(row) for row in rows.mappings())
        return sorted(found, key=lambda a: (a.created_at, a.alert_id, a.step))
