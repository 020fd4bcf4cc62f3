"""Retention in SQL: expired candidates, what retention never deletes, and the deletions.

Reads take a ``Connection`` so the same queries serve a dry run (a read connection) and a
real run (the connection of the write transaction that then deletes). Writes run inside
the caller's unit of work. Which records name which blobs is ``store.blob_references``;
the legal holds themselves are ``store.legal_hold_records``.

What retention never deletes is decided here, so every deletion path asks the same
questions: ``RetentionScope`` (active holds, and the lineage that served model versions and
held models reach) and ``decide_segments``, which ``governance.retention`` and
``PredictionLog.delete_before`` both use.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loopline.core.governance import LegalHold
from loopline.core.lineage import Direction, NodeKind
from loopline.core.models import model_version_node
from loopline.core.predictions import KIND_FEEDBACK, KIND_PREDICTIONS
from loopline.store.blob_references import digests_in
from loopline.store.legal_hold_records import list_holds
from loopline.store.lineage import MAX_DEPTH, MAX_LIMIT, _statements
from loopline.store.models import (
    MODEL_ALIASES,
    MODEL_VERSIONS,
    PIPELINE_RUNS,
    TASK_ATTEMPTS,
    TASK_RUNS,
    ArtifactRow,
    DatasetVersionRow,
    PredictionSegmentRow,
)

ARTIFACTS = cast(sa.Table, ArtifactRow.__table__)
VERSIONS = cast(sa.Table, DatasetVersionRow.__table__)
SEGMENTS = cast(sa.Table, PredictionSegmentRow.__table__)
# What governance passes back in: a connection, opaque outside the store.
Handle = Connection
CHUNK = 500  # keys per IN (...) list: well under every backend's bound-parameter limit
# Versions whose lineage retention keeps: these statuses, and every version an alias names
# (aliases are how serving refers to a model: ``production``, ``champion``, ``live`` ...).
PROTECTED_STATUSES = ("production", "staging")
# The retention data class of each segment kind (``governance.retention_policy.DataClass``).
SEGMENT_CLASSES = {KIND_PREDICTIONS: "prediction_log", KIND_FEEDBACK: "feedback"}


@dataclass(frozen=True, slots=True)
class SegmentCandidate:
    """A prediction log segment whose rows all precede the cut-off."""

    id: str
    kind: str
    deployment: str | None
    blob_digest: str
    rows: int
    max_time: datetime


@dataclass(frozen=True, slots=True)
class SnapshotCandidate:
    """A dataset version made before the cut-off that is not its dataset's newest."""

    id: str
    dataset: str
    version: int
    blob_digest: str
    rows: int
    created_at: datetime

    @property
    def ref(self) -> str:
        """The human reference ``name@version``."""
        return f"{self.dataset}@{self.version}"


@dataclass(frozen=True, slots=True)
class RunLogCandidate:
    """A pipeline run that finished before the cut-off and still keeps attempt logs."""

    run_id: str
    pipeline: str
    finished_at: datetime
    attempts: int
    digests: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VersionRefs:
    """A model version and what it names directly: blob digests and training snapshots."""

    name: str
    version: int
    digests: tuple[str, ...]
    datasets: tuple[str, ...]


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


# -- candidates ----------------------------------------------------------------------------


def expired_segments(connection: Connection, kind: str, cutoff: datetime,
                     ) -> list[SegmentCandidate]:
    """List the segments of ``kind`` whose newest row precedes ``cutoff``, oldest first."""
    query = (sa.select(SEGMENTS.c.id, SEGMENTS.c.kind, SEGMENTS.c.deployment,
                       SEGMENTS.c.blob_digest, SEGMENTS.c.rows, SEGMENTS.c.max_time)
             .where(SEGMENTS.c.kind == kind, SEGMENTS.c.max_time < cutoff)
             .order_by(SEGMENTS.c.max_time, SEGMENTS.c.id))
    return [SegmentCandidate(r.id, r.kind, r.deployment, r.blob_digest, int(r.rows),
                             r.max_time)
            for r in connection.execute(query)]


def expired_snapshots(connection: Connection, cutoff: datetime) -> list[SnapshotCandidate]:
    """List unpurged versions made before ``cutoff`` that are not their dataset's newest."""
    newer = VERSIONS.alias("newer")
    has_newer = sa.exists().where(newer.c.dataset == VERSIONS.c.dataset,
                                  newer.c.version > VERSIONS.c.version)
    query = (sa.select(VERSIONS.c.id, VERSIONS.c.dataset, VERSIONS.c.version,
                       VERSIONS.c.blob_digest, VERSIONS.c.rows, VERSIONS.c.created_at)
             .where(VERSIONS.c.created_at < cutoff, VERSIONS.c.purged_at.is_(None), has_newer)
             .order_by(VERSIONS.c.dataset, VERSIONS.c.version))
    return [SnapshotCandidate(r.id, r.dataset, int(r.version), r.blob_digest, int(r.rows),
                              r.created_at) for r in connection.execute(query)]


def expired_run_logs(connection: Connection, cutoff: datetime) -> list[RunLogCandidate]:
    """List runs finished before ``cutoff`` whose attempts still keep logs or tracebacks."""
    query = (sa.select(PIPELINE_RUNS.c.id, PIPELINE_RUNS.c.pipeline, PIPELINE_RUNS.c.finished_at,
                       TASK_ATTEMPTS.c.logs, TASK_ATTEMPTS.c.traceback)
             .select_from(PIPELINE_RUNS.join(TASK_RUNS, TASK_RUNS.c.run_id == PIPELINE_RUNS.c.id)
                          .join(TASK_ATTEMPTS, TASK_ATTEMPTS.c.task_run_id == TASK_RUNS.c.id))
             .where(PIPELINE_RUNS.c.finished_at < cutoff,
                    sa.or_(TASK_ATTEMPTS.c.logs.is_not(None),
                           TASK_ATTEMPTS.c.traceback.is_not(None)))
             .order_by(PIPELINE_RUNS.c.finished_at, PIPELINE_RUNS.c.id))
    found: dict[str, RunLogCandidate] = {}
    for row in connection.execute(query):
        if not row.logs and row.traceback is None:
            continue  # a JSON ``null`` left by a driver: nothing to clear
        seen = found.get(row.id) or RunLogCandidate(row.id, row.pipeline, row.finished_at, 0, ())
        digests = tuple(sorted(set(seen.digests) | digests_in(row.logs)))
        found[row.id] = replace(seen, attempts=seen.attempts + 1, digests=digests)
    return list(found.values())


# -- protected lineage ---------------------------------------------------------------------


def _version_refs(connection: Connection, condition: Any) -> list[VersionRefs]:
    query = sa.select(MODEL_VERSIONS).where(condition).order_by(MODEL_VERSIONS.c.name,
                                                                MODEL_VERSIONS.c.version)
    found = []
    for row in connection.execute(query).mappings():
        digests = {row["artifact_digest"]} | digests_in([row["extra"], row["environment"]])
        found.append(VersionRefs(row["name"], int(row["version"]), tuple(sorted(digests)),
                                 tuple(row["datasets"] or ())))
    return found


def protected_versions(connection: Connection) -> list[VersionRefs]:
    """List versions in status ``production`` or ``staging``, or named by any alias."""
    aliased = sa.select(MODEL_ALIASES.c.name, MODEL_ALIASES.c.version)
    return _version_refs(connection, sa.or_(
        MODEL_VERSIONS.c.status.in_(PROTECTED_STATUSES),
        sa.tuple_(MODEL_VERSIONS.c.name, MODEL_VERSIONS.c.version).in_(aliased)))


def versions_of_models(connection: Connection, pattern: str) -> list[VersionRefs]:
    """List every version of the models whose name matches the glob ``pattern``."""
    names = [name for name in connection.execute(
        sa.select(MODEL_VERSIONS.c.name).distinct()).scalars()
        if fnmatch.fnmatchcase(name, pattern)]
    return _version_refs(connection, MODEL_VERSIONS.c.name.in_(names)) if names else []


def upstream_nodes(connection: Connection, node_id: str,
                   ) -> list[tuple[str, str, Mapping[str, Any]]]:
    """Return ``(kind, ref, attributes)`` of ``node_id`` and every node upstream of it.

    The walk of ``store.lineage``, on the caller's connection so it sees the same
    transaction; empty when the node is not recorded.
    """
    nodes_query, _ = _statements(Direction.UPSTREAM)
    rows = connection.execute(nodes_query, {"root": node_id, "max_depth": MAX_DEPTH,
                                            "limit": MAX_LIMIT})
    return [(row.kind, row.ref, row.attributes or {}) for row in rows]


_REACH_FIELDS = {"dataset_snapshots": "snapshots", "run_logs": "runs",
                 "prediction_log": "segments", "feedback": "segments",
                 "unreferenced_artifacts": "digests"}
_LINEAGE_FIELDS: dict[str, str] = {
    NodeKind.DATASET_SNAPSHOT: "snapshots", NodeKind.PREDICTION_SEGMENT: "segments",
    NodeKind.PIPELINE_RUN: "runs", NodeKind.ARTIFACT: "digests", NodeKind.ENVIRONMENT: "digests"}


@dataclass(frozen=True, slots=True)
class Reach:
    """What the upstream lineage of some model versions reaches, by kind of ref."""

    snapshots: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    runs: frozenset[str] = frozenset()
    digests: frozenset[str] = frozenset()

    def covers(self, data_class: str, ref: str, digests: Iterable[str] = ()) -> bool:
        """Tell whether ``ref`` of ``data_class`` (or a blob it names) is reached."""
        name = _REACH_FIELDS.get(data_class)
        refs: frozenset[str] = getattr(self, name) if name else frozenset()
        # A run's logs name artifacts the run wrote; reaching those keeps the artifacts,
        # not the logs.
        return ref in refs or (data_class != "run_logs" and any(d in self.digests
                                                                for d in digests))


def reach_of(connection: Connection, versions: Iterable[VersionRefs]) -> Reach:
    """Collect what the upstream lineage of ``versions`` reaches.

    A version's own artifact, holdout and environment digests and its training snapshots
    count too, even when the lineage graph lacks them.
    """
    found: dict[str, set[str]] = {"snapshots": set(), "segments": set(), "runs": set(),
                                  "digests": set()}
    for version in versions:
        found["digests"].update(version.digests)
        found["snapshots"].update(version.datasets)
        node = model_version_node(version.name, version.version)
        for kind, ref, attributes in upstream_nodes(connection, node.id):
            if kind in _LINEAGE_FIELDS:
                found[_LINEAGE_FIELDS[kind]].add(ref)
            found["digests"].update(digests_in(attributes))
    return Reach(frozenset(found["snapshots"]), frozenset(found["segments"]),
                 frozenset(found["runs"]), frozenset(found["digests"]))


@dataclass(frozen=True, slots=True)
class RetentionScope:
    """What no retention path may delete: held items and protected lineage.

    ``held_models`` maps a hold naming models (its ref matches model names) to what those
    models' versions' lineage reaches; ``protected`` is what the lineage of versions in
    production or staging, or named by an alias, reaches.
    """

    holds: tuple[LegalHold, ...] = ()
    held_models: Mapping[str, Reach] = field(default_factory=dict)
    protected: Reach = Reach()

    def holding(self, data_class: str, refs: Sequence[str],
                digests: Iterable[str] = ()) -> tuple[str, ...]:
        """Return the ids of the active holds covering an item (its refs, blobs, lineage)."""
        names = tuple(digests)
        return tuple(hold.id for hold in self.holds if (
            any(hold.covers(data_class, ref) for ref in refs)
            or (hold.id in self.held_models and hold.data_class in ("*", data_class)
                and self.held_models[hold.id].covers(data_class, refs[0], names))))


def retention_scope(connection: Connection) -> RetentionScope:
    """Read the active holds and the protected lineage, on the caller's connection."""
    holds = tuple(list_holds(connection, active_only=True))
    held_models = {}
    for hold in holds:
        versions = versions_of_models(connection, hold.ref) if hold.ref != "*" else []
        if versions:
            held_models[hold.id] = reach_of(connection, versions)
    return RetentionScope(holds, held_models, reach_of(connection, protected_versions(connection)))


@dataclass(frozen=True, slots=True)
class SegmentDecision:
    """Expired segments of one kind: those to delete, those held, those protected."""

    doomed: tuple[SegmentCandidate, ...]
    held: tuple[tuple[str, tuple[str, ...]], ...]  # (segment id, hold ids)
    protected: tuple[str, ...]


def decide_segments(connection: Connection, kind: str, cutoff: datetime,
                    scope: RetentionScope) -> SegmentDecision:
    """Sort the segments of ``kind`` older than ``cutoff`` by what ``scope`` keeps.

    A hold covers a segment by its id, its deployment, or the lineage of a held model.
    """
    data_class = SEGMENT_CLASSES[kind]
    doomed, held, protected = [], [], []
    for segment in expired_segments(connection, kind, cutoff):
        refs = (segment.id, *((segment.deployment,) if segment.deployment else ()))
        holds = scope.holding(data_class, refs, (segment.blob_digest,))
        if holds:
            held.append((segment.id, holds))
        elif scope.protected.covers(data_class, segment.id, (segment.blob_digest,)):
            protected.append(segment.id)
        else:
            doomed.append(segment)
    return SegmentDecision(tuple(doomed), tuple(held), tuple(protected))


# -- deletions -----------------------------------------------------------------------------


def delete_segments(connection: Connection, ids: Sequence[str]) -> None:
    """Delete the index rows of segments ``ids``."""
    for part in _chunks(list(ids)):
        connection.execute(sa.delete(SEGMENTS).where(SEGMENTS.c.id.in_(part)))


def mark_purged(connection: Connection, version_ids: Sequence[str], at: datetime) -> None:
    """Set ``purged_at`` on dataset versions ``version_ids`` (the rows stay as evidence)."""
    for part in _chunks(list(version_ids)):
        connection.execute(sa.update(VERSIONS).where(VERSIONS.c.id.in_(part),
                                                     VERSIONS.c.purged_at.is_(None))
                           .values(purged_at=at))


def clear_run_logs(connection: Connection, run_ids: Sequence[str]) -> int:
    """Set the logs and tracebacks of every attempt of runs ``run_ids`` to NULL; count rows."""
    cleared = 0
    for part in _chunks(list(run_ids)):
        tasks = sa.select(TASK_RUNS.c.id).where(TASK_RUNS.c.run_id.in_(part))
        result = connection.execute(
            sa.update(TASK_ATTEMPTS)
            .where(TASK_ATTEMPTS.c.task_run_id.in_(tasks),
                   sa.or_(TASK_ATTEMPTS.c.logs.is_not(None),
                          TASK_ATTEMPTS.c.traceback.is_not(None)))
            .values(logs=sa.null(), traceback=None))
        cleared += int(result.rowcount or 0)
    return cleared


def uncatalogue(connection: Connection, digests: Sequence[str]) -> None:
    """Delete the catalogue rows of ``digests`` (their blobs go after the commit)."""
    for part in _chunks(sorted(digests)):
        connection.execute(sa.delete(ARTIFACTS).where(ARTIFACTS.c.digest.in_(part)))
