"""Model versions, aliases, statuses and trust decisions in the metadata store.

The SQL side of ``registry``: every function runs inside the caller's unit of work, so the
change, its event, its audit entry and its lineage commit together or not at all.

Version numbers come from ``registered_models.latest_version``: a registration inserts the
model row if it is missing (insert-or-ignore, so two first registrations do not collide) and
then runs ``UPDATE ... SET latest_version = latest_version + 1 ... RETURNING``. On PostgreSQL
that update holds the row's lock until commit, and a concurrent registration waits for it and
then reads the committed value; on SQLite every write transaction begins ``IMMEDIATE`` and
holds the database's write lock. Either way each number is handed out once and a rolled-back
registration gives its number back, so versions are consecutive; the ``(name, version)``
primary key is the last guard.

Lock order: a function that writes takes the append lock (``uow.serialise``) before any row
lock, as every event or audit appender does, so writers cannot deadlock on each other.

Alias moves and status changes carry the ``GateDecision`` the caller got from the ``Gate``
port; a denied decision is refused with ``PolicyDeniedError`` before anything is written,
and an allowed one is kept in the audit entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from loopline.core.canonical import json_safe
from loopline.core.errors import ConflictError, InvalidArgumentError, NotFoundError
from loopline.core.events import EventType
from loopline.core.gates import GateDecision
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeKind, NodeRef
from loopline.core.models import (
    LATEST,
    MAX_VERSION,
    ModelAlias,
    ModelStatus,
    ModelVersion,
    NewModelVersion,
    RegisteredModel,
    TrustDecision,
    alias_uri,
    check_transition,
    model_node,
    model_version_node,
    parse_status,
    validate_alias,
    validate_json_mapping,
    validate_version,
    version_uri,
)
from loopline.core.names import validate_name
from loopline.store.lineage import record as record_lineage
from loopline.store.metadata_store import UnitOfWork
from loopline.store.model_queries import (
    ModelQueries,
    missing_model,
    to_alias,
    to_model,
    to_trust,
    to_version,
    version_row,
)
from loopline.store.models import (
    MODEL_ALIASES,
    MODEL_TRUST_DECISIONS,
    MODEL_VERSIONS,
    REGISTERED_MODELS,
)

__all__ = ["ModelQueries", "create_version", "delete_alias", "describe_model", "is_trusted",
           "record_trust", "set_alias", "set_status"]

MAX_REASON = 2_000


def _insert(connection: Connection, table: sa.Table) -> Any:
    """Return the dialect's INSERT for ``table`` (it offers ``ON CONFLICT``)."""
    return (postgresql.insert(table) if connection.dialect.name == "postgresql"
            else sqlite.insert(table))


def _check_key(name: str, version: int) -> None:
    validate_name(name, "model")
    validate_version(version)


def _allocate(uow: UnitOfWork, name: str) -> int:
    """Return the next version number of ``name``, creating the model row on first use."""
    connection = uow.session.connection()
    connection.execute(_insert(connection, REGISTERED_MODELS).on_conflict_do_nothing(
        index_elements=["name"]), {
        "name": name, "description": None, "tags": {}, "latest_version": 0,
        "created_at": uow.now(), "created_by": uow.actor})
    number = int(connection.execute(
        sa.update(REGISTERED_MODELS).where(REGISTERED_MODELS.c.name == name)
        .values(latest_version=REGISTERED_MODELS.c.latest_version + 1)
        .returning(REGISTERED_MODELS.c.latest_version)).scalar_one())
    if number > MAX_VERSION:
        raise ConflictError(f"model {name!r} has used every version number up to {MAX_VERSION}")
    return number


def _lineage(version: ModelVersion) -> tuple[list[LineageNode], list[LineageEdge]]:
    target = model_version_node(version.name, version.version)
    nodes = [LineageNode(model_node(version.name), version.name),
             LineageNode(target, version.uri, {"artifact_digest": version.artifact_digest,
                                               "flavor": version.flavor})]
    edges = [LineageEdge(model_node(version.name), target, EdgeKind.REGISTERED_AS)]
    edges += [LineageEdge(NodeRef(NodeKind.DATASET_SNAPSHOT, ref), target, EdgeKind.TRAINED_ON)
              for ref in version.datasets]
    if version.run_id is not None:
        edges.append(LineageEdge(NodeRef(NodeKind.PIPELINE_RUN, version.run_id), target,
                                 EdgeKind.PRODUCED))
    return nodes, edges


def create_version(uow: UnitOfWork, new: NewModelVersion,
                   gate_decision: GateDecision | None = None) -> ModelVersion:
    """Register the next version of ``new.name`` (the model is created on first use).

    The version starts as ``candidate``; lineage gets ``model:NAME → model_version:NAME@N``
    (registered_as), each dataset snapshot → it (trained_on) and the run → it (produced).

    Raises:
        PolicyDeniedError: when ``gate_decision`` is given and denies the registration.
    """
    if gate_decision is not None:
        gate_decision.require(f"registering a version of model {new.name!r}")
    uow.serialise()
    version = ModelVersion(
        name=new.name, version=_allocate(uow, new.name), artifact_digest=new.artifact_digest,
        flavor=new.flavor, status=ModelStatus.CANDIDATE, created_at=uow.now(),
        created_by=uow.actor, signature=_json(new.signature), metrics=_json(new.metrics) or {},
        params=_json(new.params) or {}, tags=_json(new.tags) or {}, run_id=new.run_id,
        datasets=tuple(new.datasets), code_version=_json(new.code_version),
        environment=_json(new.environment), description=new.description,
        extra=_json(new.extra) or {})
    values = {column.name: getattr(version, column.name) for column in MODEL_VERSIONS.c}
    values.update(status=str(version.status), datasets=list(version.datasets))
    uow.session.connection().execute(sa.insert(MODEL_VERSIONS), values)
    nodes, edges = _lineage(version)
    record_lineage(uow.session, nodes, edges, at=version.created_at)
    details = {"name": version.name, "version": version.version,
               "artifact_digest": version.artifact_digest, "flavor": version.flavor,
               "run_id": version.run_id, "datasets": list(version.datasets)}
    uow.emit(EventType.MODEL_VERSION_REGISTERED, version.uri, details)
    uow.audit("model.version_registered", version.uri, None,
              {**details, "status": str(version.status), **_gate(gate_decision)})
    return version


def _json(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(json_safe(dict(value)))


def _gate(decision: GateDecision | None) -> dict[str, Any]:
    return {} if decision is None else {"gate": decision.as_record()}


def _alias_state(alias: ModelAlias | None) -> dict[str, Any] | None:
    if alias is None:
        return None
    return {"version": alias.version, "updated_at": alias.updated_at.isoformat(),
            "updated_by": alias.updated_by}


def _current_alias(connection: Connection, name: str, alias: str) -> ModelAlias | None:
    row = connection.execute(
        sa.select(MODEL_ALIASES).where(MODEL_ALIASES.c.name == name,
                                       MODEL_ALIASES.c.alias == alias)
        .with_for_update()).mappings().first()
    return to_alias(row) if row is not None else None


def _settable_alias(alias: str) -> str:
    validate_alias(alias)
    if alias == LATEST:
        raise InvalidArgumentError("alias", f"{LATEST!r} is reserved: it always means the "
                                            "highest version; choose another alias")
    return alias


def set_alias(uow: UnitOfWork, name: str, alias: str, version: int,
              gate_decision: GateDecision) -> ModelAlias | None:
    """Point ``models:/NAME@ALIAS`` at ``version`` in one statement; return what it was.

    Setting an alias to the version it already names changes nothing and writes nothing.

    Raises:
        InvalidArgumentError: when the alias is invalid, all digits or ``latest``.
        NotFoundError: naming ``models:/NAME/VERSION`` when that version does not exist.
        ConflictError: when the version is quarantined.
        PolicyDeniedError: when ``gate_decision`` denies the move (nothing is written).
    """
    _check_key(name, version)
    _settable_alias(alias)
    uow.serialise()
    connection, uri = uow.session.connection(), alias_uri(name, alias)
    target = version_row(connection, name, version, lock=True)  # its status holds till commit
    if target["status"] == ModelStatus.QUARANTINED:
        raise ConflictError(f"{version_uri(name, version)} is quarantined; release it (status "
                            f"candidate) before pointing {uri} at it")
    gate_decision.require(f"moving {uri} to version {version}")
    previous = _current_alias(connection, name, alias)
    if previous is not None and previous.version == version:
        return previous
    moved = ModelAlias(name, alias, version, uow.now(), uow.actor)
    connection.execute(
        _insert(connection, MODEL_ALIASES).on_conflict_do_update(
            index_elements=["name", "alias"],
            set_={"version": version, "updated_at": moved.updated_at,
                  "updated_by": moved.updated_by}),
        {"name": name, "alias": alias, "version": version, "updated_at": moved.updated_at,
         "updated_by": moved.updated_by})
    uow.emit(EventType.MODEL_ALIAS_MOVED, uri, {
        "name": name, "alias": alias, "from": previous.version if previous else None,
        "to": version})
    uow.audit("model.alias_moved", uri, _alias_state(previous),
              {**(_alias_state(moved) or {}), **_gate(gate_decision)})
    return previous


def delete_alias(uow: UnitOfWork, name: str, alias: str,
                 gate_decision: GateDecision) -> ModelAlias:
    """Remove ``models:/NAME@ALIAS`` and return what it pointed at.

    Raises:
        NotFoundError: when the model has no such alias.
        PolicyDeniedError: when ``gate_decision`` denies it (nothing is written).
    """
    validate_name(name, "model")
    _settable_alias(alias)
    uow.serialise()
    connection, uri = uow.session.connection(), alias_uri(name, alias)
    previous = _current_alias(connection, name, alias)
    if previous is None:
        raise NotFoundError("model alias", uri, "list aliases with `loopline models show`")
    gate_decision.require(f"deleting {uri}")
    connection.execute(sa.delete(MODEL_ALIASES).where(MODEL_ALIASES.c.name == name,
                                                      MODEL_ALIASES.c.alias == alias))
    uow.emit(EventType.MODEL_ALIAS_MOVED, uri, {
        "name": name, "alias": alias, "from": previous.version, "to": None})
    uow.audit("model.alias_deleted", uri, _alias_state(previous), _gate(gate_decision))
    return previous


def set_status(uow: UnitOfWork, name: str, version: int, status: ModelStatus | str,
               gate_decision: GateDecision) -> ModelVersion:
    """Move a version to ``status`` and return it as changed.

    Moving to the status the version already has changes nothing and writes nothing.

    Raises:
        InvalidArgumentError: when ``status`` is not a status.
        NotFoundError: naming ``models:/NAME/VERSION`` when that version does not exist.
        InvalidTransitionError: when the lifecycle does not allow the move (``core.models``).
        PolicyDeniedError: when ``gate_decision`` denies it (nothing is written).
    """
    _check_key(name, version)
    target = parse_status(str(status))
    uow.serialise()
    connection, uri = uow.session.connection(), version_uri(name, version)
    current = to_version(version_row(connection, name, version, lock=True))
    check_transition(uri, current.status, target)
    gate_decision.require(f"moving {uri} from {current.status} to {target}")
    if current.status == target:
        return current
    connection.execute(sa.update(MODEL_VERSIONS).where(
        MODEL_VERSIONS.c.name == name, MODEL_VERSIONS.c.version == version,
        MODEL_VERSIONS.c.status == str(current.status)).values(status=str(target)))
    uow.emit(EventType.MODEL_STATUS_CHANGED, uri, {
        "name": name, "version": version, "from": str(current.status), "to": str(target)})
    uow.audit("model.status_changed", uri, {"status": str(current.status)},
              {"status": str(target), **_gate(gate_decision)})
    return replace(current, status=target)


def record_trust(uow: UnitOfWork, name: str, version: int, reason: str,
                 gate_decision: GateDecision | None = None) -> TrustDecision:
    """Record that the version may be loaded although its flavor can run code.

    The audit entry (``model.trust_granted``) names the artifact digest the decision covers.
    A version trusted already keeps its first decision, which is returned.

    Raises:
        InvalidArgumentError: when ``reason`` is empty or longer than 2,000 characters.
        NotFoundError: naming ``models:/NAME/VERSION`` when that version does not exist.
        PolicyDeniedError: when ``gate_decision`` is given and denies it.
    """
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidArgumentError("reason", f"say why the version is trusted (1-{MAX_REASON}"
                                             " characters)")
    _check_key(name, version)
    uow.serialise()
    connection, uri = uow.session.connection(), version_uri(name, version)
    target = version_row(connection, name, version)
    if gate_decision is not None:
        gate_decision.require(f"trusting {uri}")
    existing = _trust_row(connection, name, version)
    if existing is not None:
        return existing
    decision = TrustDecision(name, version, uow.actor, uow.now(), reason)
    connection.execute(sa.insert(MODEL_TRUST_DECISIONS), {
        "name": name, "version": version, "decided_by": decision.decided_by,
        "decided_at": decision.decided_at, "reason": reason})
    uow.audit("model.trust_granted", uri, None, {
        "reason": reason, "flavor": target["flavor"],
        "artifact_digest": target["artifact_digest"], **_gate(gate_decision)})
    return decision


def _trust_row(connection: Connection, name: str, version: int) -> TrustDecision | None:
    row = connection.execute(sa.select(MODEL_TRUST_DECISIONS).where(
        MODEL_TRUST_DECISIONS.c.name == name,
        MODEL_TRUST_DECISIONS.c.version == version)).mappings().first()
    return to_trust(row) if row is not None else None


def is_trusted(uow: UnitOfWork, name: str, version: int) -> bool:
    """Tell, inside the unit of work, whether the version has a trust decision."""
    return _trust_row(uow.session.connection(), name, version) is not None


def describe_model(uow: UnitOfWork, name: str, description: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> RegisteredModel:
    """Set a registered model's description and/or tags (None leaves one unchanged).

    Raises:
        NotFoundError: when no model ``name`` is registered.
        InvalidArgumentError: when ``tags`` is not a JSON-serialisable mapping.
    """
    validate_name(name, "model")
    if tags is not None:
        validate_json_mapping(tags, "tags")
    uow.serialise()
    connection = uow.session.connection()
    row = connection.execute(sa.select(REGISTERED_MODELS).where(
        REGISTERED_MODELS.c.name == name).with_for_update()).mappings().first()
    if row is None:
        raise missing_model(name)
    before = to_model(row)
    after = replace(before, description=before.description if description is None
                    else description, tags=before.tags if tags is None else _json(tags) or {})
    values = {"description": after.description, "tags": dict(after.tags)}
    connection.execute(sa.update(REGISTERED_MODELS).where(REGISTERED_MODELS.c.name == name)
                       .values(**values))
    uow.audit("model.updated", f"models:/{name}",
              {"description": before.description, "tags": dict(before.tags)}, values)
    return after
