"""Deployment writes: the row, its history, its audit entry and its event, in one transaction.

The SQL side of ``deploy``: every function runs inside the caller's unit of work. A change
(``insert`` or ``save``) writes the new state of the ``deployments`` row, one
``deployment_history`` row for its revision, one audit entry (``deployment.<action>``) and one
``deployment.changed`` event with ``{name, revision, state, routes}``, so the model server,
the audit log and the history never disagree about a revision.

Lock order: ``lock`` takes the append lock (``uow.serialise``) before the row lock, as every
writer does. ``save`` also checks the revision it read, so a change computed from a state
that moved meanwhile is refused with ``ConflictError`` rather than written over it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from loopline.core.canonical import json_safe
from loopline.core.deployments import Deployment, RolloutVerdict, Route
from loopline.core.errors import ConflictError
from loopline.core.events import EventType
from loopline.core.models import ModelStatus, version_uri
from loopline.store.deployment_queries import (
    deployment_row,
    routes_record,
    spec_record,
    to_deployment,
)
from loopline.store.metadata_store import UnitOfWork
from loopline.store.model_queries import version_row
from loopline.store.models import DEPLOYMENT_HISTORY, DEPLOYMENTS, ROLLOUT_VERDICTS

__all__ = ["Note", "check_servable", "exists", "insert", "insert_verdict", "lock",
           "save", "save_counters", "subject", "unservable", "verdict_seen"]

UNSERVABLE = (ModelStatus.QUARANTINED, ModelStatus.ARCHIVED)


@dataclass(frozen=True, slots=True)
class Note:
    """Why a change happens: the audit action's suffix, the reason, the gate's record."""

    action: str
    reason: str
    gate: Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def subject(name: str) -> str:
    """Return the audit and event subject of deployment ``name``."""
    return f"deployment:{name}"


def exists(uow: UnitOfWork, name: str) -> bool:
    """Tell whether deployment ``name`` exists (after taking the append lock)."""
    uow.serialise()
    found = uow.session.connection().execute(
        sa.select(DEPLOYMENTS.c.name).where(DEPLOYMENTS.c.name == name)).first()
    return found is not None


def lock(uow: UnitOfWork, name: str) -> Deployment:
    """Return deployment ``name``, its row locked until this unit commits.

    Raises:
        NotFoundError: when there is none.
    """
    uow.serialise()
    return to_deployment(deployment_row(uow.session.connection(), name, lock=True))


def unservable(uow: UnitOfWork, routes: Sequence[Route]) -> dict[str, ModelStatus]:
    """Return ``models:/NAME/VERSION`` → status for each version of ``routes`` that may not serve.

    Each version row is locked until this unit commits, so a status change (quarantine) and a
    route change that reads it are serialised: the route change sees the status it races with.

    Raises:
        NotFoundError: naming ``models:/NAME/VERSION`` and the versions that exist.
    """
    connection = uow.session.connection()
    found: dict[str, ModelStatus] = {}
    for model, version in dict.fromkeys((r.model, r.version) for r in routes):
        status = ModelStatus(version_row(connection, model, version, lock=True)["status"])
        if status in UNSERVABLE:
            found[version_uri(model, version)] = status
    return found


def check_servable(uow: UnitOfWork, routes: Sequence[Route]) -> None:
    """Refuse routes to a version that does not exist or may not serve.

    Raises:
        NotFoundError: naming ``models:/NAME/VERSION`` and the versions that exist.
        ConflictError: naming the version when it is quarantined or archived.
    """
    for uri, status in unservable(uow, routes).items():
        raise ConflictError(f"{uri} is {status}; it may not serve traffic (set its status "
                            f"back to candidate first, or route to another version)")


def _state(deployment: Deployment) -> dict[str, Any]:
    return {"revision": deployment.revision, "state": str(deployment.state),
            "strategy": str(deployment.strategy), "routes": routes_record(deployment.routes),
            "step": deployment.step}


def _values(deployment: Deployment) -> dict[str, Any]:
    return {"strategy": str(deployment.strategy), "routes": routes_record(deployment.routes),
            "state": str(deployment.state), "revision": deployment.revision,
            "spec": spec_record(deployment), "step": deployment.step,
            "step_started_at": deployment.step_started_at, "passes": deployment.passes,
            "failures": deployment.failures, "last_good": routes_record(deployment.last_good),
            "updated_at": deployment.updated_at, "updated_by": deployment.updated_by}


def _record(uow: UnitOfWork, before: Deployment | None, after: Deployment, note: Note) -> None:
    """Write the history row, the audit entry and the event of ``after``'s revision."""
    gate = None if note.gate is None else json_safe(dict(note.gate))
    uow.session.connection().execute(sa.insert(DEPLOYMENT_HISTORY), {
        "name": after.name, "revision": after.revision, "routes": routes_record(after.routes),
        "state": str(after.state), "reason": note.reason, "actor": uow.actor,
        "at": after.updated_at, "gate": gate})
    audited: dict[str, Any] = {**_state(after), "reason": note.reason,
                               **json_safe(dict(note.details))}
    if gate is not None:
        audited["gate"] = gate
    uow.audit(f"deployment.{note.action}", subject(after.name),
              None if before is None else _state(before), audited)
    uow.emit(EventType.DEPLOYMENT_CHANGED, subject(after.name), {
        "name": after.name, "revision": after.revision, "state": str(after.state),
        "routes": routes_record(after.routes)})


def insert(uow: UnitOfWork, deployment: Deployment, note: Note) -> Deployment:
    """Write a new deployment at its first revision, with history, audit entry and event."""
    uow.serialise()
    uow.session.connection().execute(sa.insert(DEPLOYMENTS), {
        "name": deployment.name, "created_at": deployment.created_at,
        "created_by": deployment.created_by, **_values(deployment)})
    _record(uow, None, deployment, note)
    return deployment


def save(uow: UnitOfWork, before: Deployment, after: Deployment, note: Note) -> Deployment:
    """Write ``after`` over ``before`` (a new revision), with history, audit entry and event.

    Raises:
        ConflictError: when the stored revision is no longer ``before``'s.
    """
    uow.serialise()
    result = uow.session.connection().execute(
        sa.update(DEPLOYMENTS).where(DEPLOYMENTS.c.name == before.name,
                                     DEPLOYMENTS.c.revision == before.revision)
        .values(**_values(after)))
    if result.rowcount != 1:
        raise ConflictError(f"deployment {before.name!r} changed while revision "
                            f"{before.revision} was being updated; read it again and retry")
    _record(uow, before, after, note)
    return after


def save_counters(uow: UnitOfWork, deployment: Deployment) -> Deployment:
    """Store a rollout's pass and failure counts; routes, state and revision stay as they are.

    Counting a verdict is not a change of what serves, so it writes no history, audit entry
    or event: the verdict row is its record.
    """
    uow.session.connection().execute(
        sa.update(DEPLOYMENTS).where(DEPLOYMENTS.c.name == deployment.name,
                                     DEPLOYMENTS.c.revision == deployment.revision)
        .values(passes=deployment.passes, failures=deployment.failures))
    return deployment


def verdict_seen(uow: UnitOfWork, verdict: RolloutVerdict) -> bool:
    """Tell whether ``verdict`` is stored already, or a window not before its end was judged.

    A controller that crashed after committing a verdict and judged the same window again
    (under a new id) must not count it twice.
    """
    table = ROLLOUT_VERDICTS
    connection = uow.session.connection()
    if connection.execute(sa.select(table.c.id).where(table.c.id == verdict.id)).first():
        return True
    later = connection.execute(sa.select(table.c.id).where(
        table.c.deployment == verdict.deployment, table.c.revision == verdict.revision,
        table.c.step == verdict.step, table.c.window_end >= verdict.window_end)).first()
    return later is not None


def insert_verdict(uow: UnitOfWork, verdict: RolloutVerdict) -> None:
    """Store ``verdict`` with the numbers it used."""
    uow.session.connection().execute(sa.insert(ROLLOUT_VERDICTS), {
        "id": verdict.id, "deployment": verdict.deployment, "revision": verdict.revision,
        "step": verdict.step, "window_start": verdict.window_start,
        "window_end": verdict.window_end, "verdict": verdict.verdict,
        "numbers": json_safe(dict(verdict.numbers)), "decided_at": verdict.decided_at})
