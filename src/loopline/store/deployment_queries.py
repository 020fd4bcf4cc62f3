"""Reads of deployments: the deployments themselves, their revisions, history and verdicts.

The query side of ``store/deployment_records.py``, and the seam other packages read
deployment state through (the model server polls ``revisions()``, the rollout controller
reads ``list()``). Rows map to the plain records of ``core.deployments``; the ``spec`` column
holds the canary plan, the sticky key and the description as JSON (``spec_record``).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from loopline.core.deployments import (
    AnalysisPolicy,
    CanaryPlan,
    Deployment,
    DeploymentChange,
    DeploymentState,
    RolloutVerdict,
    Route,
    Strategy,
    route_from_record,
)
from loopline.core.errors import NotFoundError
from loopline.store.errors import translated
from loopline.store.models import DEPLOYMENT_HISTORY, DEPLOYMENTS, ROLLOUT_VERDICTS

LIST_DEPLOYMENTS = "list deployments with `loopline deploy list`"
MAX_PAGE = 1_000


def routes_record(routes: Sequence[Route]) -> list[dict[str, Any]]:
    """Return ``routes`` as the JSON list stored in ``routes`` and ``last_good``."""
    return [route.as_record() for route in routes]


def to_routes(records: Sequence[Mapping[str, Any]] | None) -> tuple[Route, ...]:
    """Return the routes a stored JSON list describes."""
    return tuple(route_from_record(record) for record in records or ())


def plan_record(plan: CanaryPlan) -> dict[str, Any]:
    """Return ``plan`` as JSON-ready data (the interval in seconds)."""
    policy = plan.analysis
    return {"steps": list(plan.steps), "analysis": {
        "interval_seconds": policy.interval.total_seconds(),
        "max_error_rate_increase": policy.max_error_rate_increase,
        "max_p99_ratio": policy.max_p99_ratio, "min_samples": policy.min_samples,
        "passes_to_promote": policy.passes_to_promote,
        "failures_to_rollback": policy.failures_to_rollback, "extra": dict(policy.extra)}}


def plan_from_record(record: Mapping[str, Any]) -> CanaryPlan:
    """Return the plan ``plan_record`` wrote."""
    analysis = record.get("analysis", {})
    policy = AnalysisPolicy(
        interval=timedelta(seconds=float(analysis["interval_seconds"])),
        max_error_rate_increase=float(analysis["max_error_rate_increase"]),
        max_p99_ratio=float(analysis["max_p99_ratio"]),
        min_samples=int(analysis["min_samples"]),
        passes_to_promote=int(analysis["passes_to_promote"]),
        failures_to_rollback=int(analysis["failures_to_rollback"]),
        extra={str(k): float(v) for k, v in dict(analysis.get("extra", {})).items()})
    return CanaryPlan(tuple(float(step) for step in record["steps"]), policy)


def spec_record(deployment: Deployment) -> dict[str, Any]:
    """Return what the ``spec`` column keeps: canary plan, sticky key, description."""
    return {"canary": None if deployment.canary is None else plan_record(deployment.canary),
            "sticky_key": deployment.sticky_key, "description": deployment.description}


def to_deployment(row: RowMapping) -> Deployment:
    """Return the entity of a ``deployments`` row."""
    spec = row["spec"] or {}
    canary = spec.get("canary")
    return Deployment(
        name=row["name"], strategy=Strategy(row["strategy"]), routes=to_routes(row["routes"]),
        state=DeploymentState(row["state"]), revision=row["revision"],
        created_at=row["created_at"], created_by=row["created_by"],
        updated_at=row["updated_at"], updated_by=row["updated_by"],
        canary=None if canary is None else plan_from_record(canary),
        sticky_key=spec.get("sticky_key"), step=row["step"],
        step_started_at=row["step_started_at"], passes=row["passes"],
        failures=row["failures"], last_good=to_routes(row["last_good"]),
        description=spec.get("description"))


def to_change(row: RowMapping) -> DeploymentChange:
    """Return the entity of a ``deployment_history`` row."""
    return DeploymentChange(name=row["name"], revision=row["revision"],
                            routes=to_routes(row["routes"]),
                            state=DeploymentState(row["state"]), reason=row["reason"],
                            actor=row["actor"], at=row["at"], gate=row["gate"])


def to_verdict(row: RowMapping) -> RolloutVerdict:
    """Return the entity of a ``rollout_verdicts`` row."""
    return RolloutVerdict(id=row["id"], deployment=row["deployment"], revision=row["revision"],
                          step=row["step"], window_start=row["window_start"],
                          window_end=row["window_end"], verdict=row["verdict"],
                          numbers=row["numbers"] or {}, decided_at=row["decided_at"])


def missing_deployment(name: str) -> NotFoundError:
    """Return the error for a deployment that does not exist."""
    return NotFoundError("deployment", name, LIST_DEPLOYMENTS)


def deployment_row(connection: Connection, name: str, lock: bool = False) -> RowMapping:
    """Return the ``deployments`` row of ``name``, locked until commit when ``lock``.

    Raises:
        NotFoundError: naming the deployment when there is none.
    """
    query = sa.select(DEPLOYMENTS).where(DEPLOYMENTS.c.name == name)
    row = connection.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise missing_deployment(name)
    return row


def _page(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


class DeploymentQueries:
    """Reads of deployments, their history and their canary verdicts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def get(self, name: str) -> Deployment:
        """Return the deployment ``name``.

        Raises:
            NotFoundError: when there is none.
        """
        with self._engine.connect() as connection:
            return to_deployment(deployment_row(connection, name))

    @translated
    def list(self) -> list[Deployment]:
        """List every deployment, by name."""
        with self._engine.connect() as connection:
            rows = connection.execute(sa.select(DEPLOYMENTS).order_by(DEPLOYMENTS.c.name))
            return [to_deployment(row) for row in rows.mappings()]

    @translated
    def revisions(self) -> dict[str, int]:
        """Return each deployment's revision, by name: one cheap query for pollers."""
        with self._engine.connect() as connection:
            rows = connection.execute(sa.select(DEPLOYMENTS.c.name, DEPLOYMENTS.c.revision))
            return {str(name): int(revision) for name, revision in rows}

    @translated
    def history(self, name: str, limit: int = 100) -> builtins.list[DeploymentChange]:
        """List the newest ``limit`` revisions of ``name``, newest first.

        Raises:
            NotFoundError: when there is no deployment ``name``.
        """
        with self._engine.connect() as connection:
            deployment_row(connection, name)
            rows = connection.execute(
                sa.select(DEPLOYMENT_HISTORY).where(DEPLOYMENT_HISTORY.c.name == name)
                .order_by(DEPLOYMENT_HISTORY.c.revision.desc()).limit(_page(limit)))
            return [to_change(row) for row in rows.mappings()]

    @translated
    def verdicts(self, name: str, limit: int = 50) -> builtins.list[RolloutVerdict]:
        """List the newest ``limit`` canary verdicts of ``name``, newest first.

        Raises:
            NotFoundError: when there is no deployment ``name``.
        """
        table = ROLLOUT_VERDICTS
        with self._engine.connect() as connection:
            deployment_row(connection, name)
            rows = connection.execute(
                sa.select(table).where(table.c.deployment == name)
                .order_by(table.c.decided_at.desc(), table.c.window_end.desc(),
                          table.c.id.desc()).limit(_page(limit)))
            return [to_verdict(row) for row in rows.mappings()]
