"""Deciding what a retention run deletes: candidates, holds, production lineage, blobs.

Reads only, on the connection it is given (a dry run's read connection, or a real run's
write transaction, so the decision and the deletions see the same state). A candidate is
kept when an active legal hold covers it, or when the lineage of a production model reaches
it; a blob is deleted only when no record left after the run names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loopline.core.governance import LegalHold
from loopline.core.lineage import NodeKind
from loopline.core.models import model_version_node
from loopline.core.predictions import KIND_FEEDBACK, KIND_PREDICTIONS
from loopline.governance.retention_policy import DataClass, RetentionPolicy
from loopline.store import retention_records as records

SEGMENT_KINDS = {DataClass.PREDICTION_LOG: KIND_PREDICTIONS, DataClass.FEEDBACK: KIND_FEEDBACK}
HOLDERS = {DataClass.PREDICTION_LOG: records.HOLDER_SEGMENT,
           DataClass.FEEDBACK: records.HOLDER_SEGMENT,
           DataClass.DATASET_SNAPSHOTS: records.HOLDER_SNAPSHOT,
           DataClass.RUN_LOGS: records.HOLDER_RUN_LOGS}
# Classes in the order a run decides them: unreferenced artifacts last, because what the
# other classes delete changes which blobs are referenced.
ORDER = (DataClass.PREDICTION_LOG, DataClass.FEEDBACK, DataClass.DATASET_SNAPSHOTS,
         DataClass.RUN_LOGS, DataClass.UNREFERENCED_ARTIFACTS)


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A blob in the store: its size and, when the storage tells, when it was written."""

    size: int
    modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """One thing retention may delete.

    ``ref`` is what holds match and the report lists (a segment id, ``name@version``, a run
    id, a digest); ``key`` is the record's id; ``digests`` are the blobs it names.
    """

    ref: str
    key: str
    digests: tuple[str, ...] = ()
    rows: int = 0
    # More refs a hold may name: a snapshot's dataset, a segment's deployment, a run's pipeline.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeldItem:
    """A candidate kept because active legal holds cover it."""

    ref: str
    holds: tuple[str, ...]


@dataclass(slots=True)
class ClassPlan:
    """What one data class's pass found and decided."""

    data_class: DataClass
    max_age: timedelta
    cutoff: datetime
    candidates: int = 0
    doomed: list[Item] = field(default_factory=list)
    held: list[HeldItem] = field(default_factory=list)
    referenced: list[str] = field(default_factory=list)
    unknown_age: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Protected:
    """What the lineage of production model versions reaches: never deleted."""

    snapshots: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    runs: frozenset[str] = frozenset()
    digests: frozenset[str] = frozenset()

    def covers(self, data_class: DataClass, item: Item) -> bool:
        """Tell whether ``item`` of ``data_class`` is reached by a production lineage."""
        refs = {DataClass.DATASET_SNAPSHOTS: self.snapshots, DataClass.RUN_LOGS: self.runs,
                DataClass.PREDICTION_LOG: self.segments, DataClass.FEEDBACK: self.segments,
                DataClass.UNREFERENCED_ARTIFACTS: self.digests}[data_class]
        return item.ref in refs or (data_class is not DataClass.RUN_LOGS
                                    and any(d in self.digests for d in item.digests))


@dataclass(slots=True)
class Plan:
    """Every class's decision, and the blobs to delete once the records are gone."""

    classes: list[ClassPlan]

    def blobs(self) -> list[str]:
        """Return every blob digest the run deletes after its transaction commits."""
        return [digest for plan in self.classes for digest in plan.blobs]

    def removed_holders(self) -> set[tuple[str, str]]:
        """Return ``(holder, key)`` of every record whose references the run removes."""
        return {(HOLDERS[plan.data_class], item.key) for plan in self.classes
                if plan.data_class in HOLDERS for item in plan.doomed}


_LINEAGE_KINDS: dict[str, str] = {
    NodeKind.DATASET_SNAPSHOT: "snapshots", NodeKind.PREDICTION_SEGMENT: "segments",
    NodeKind.PIPELINE_RUN: "runs", NodeKind.ARTIFACT: "digests", NodeKind.ENVIRONMENT: "digests"}


def production_lineage(connection: records.Handle) -> Protected:
    """Collect what the upstream lineage of every production model version reaches.

    A version counts when its status is ``production`` or the ``production`` alias names
    it; its own artifact, holdout and environment digests and its training snapshots count
    too, even when the lineage graph lacks them.
    """
    found: dict[str, set[str]] = {"snapshots": set(), "segments": set(), "runs": set(),
                                  "digests": set()}
    for version in records.production_versions(connection):
        found["digests"].update(version.digests)
        found["snapshots"].update(version.datasets)
        node = model_version_node(version.name, version.version)
        for kind, ref, attributes in records.upstream_nodes(connection, node.id):
            if kind in _LINEAGE_KINDS:
                found[_LINEAGE_KINDS[kind]].add(ref)
            found["digests"].update(records.digests_in(attributes))
    return Protected(frozenset(found["snapshots"]), frozenset(found["segments"]),
                     frozenset(found["runs"]), frozenset(found["digests"]))


def _holding(holds: Sequence[LegalHold], data_class: DataClass, item: Item) -> tuple[str, ...]:
    refs = (item.ref, *item.aliases)
    return tuple(h.id for h in holds if any(h.covers(data_class, ref) for ref in refs))


def _sort(plan: ClassPlan, items: Iterable[Item], holds: Sequence[LegalHold],
          protected: Protected) -> None:
    """Count ``items`` as candidates and file each as held, referenced or doomed."""
    for item in items:
        plan.candidates += 1
        held_by = _holding(holds, plan.data_class, item)
        if held_by:
            plan.held.append(HeldItem(item.ref, held_by))
        elif protected.covers(plan.data_class, item):
            plan.referenced.append(item.ref)
        else:
            plan.doomed.append(item)


def _expired(connection: records.Handle, data_class: DataClass, cutoff: datetime) -> list[Item]:
    if data_class in SEGMENT_KINDS:
        return [Item(s.id, s.id, (s.blob_digest,), s.rows, (s.deployment,) if s.deployment else ())
                for s in records.expired_segments(connection, SEGMENT_KINDS[data_class], cutoff)]
    if data_class is DataClass.DATASET_SNAPSHOTS:
        return [Item(s.ref, s.id, (s.blob_digest,), s.rows, (s.dataset,))
                for s in records.expired_snapshots(connection, cutoff)]
    return [Item(r.run_id, r.run_id, r.digests, r.attempts, (r.pipeline,))
            for r in records.expired_run_logs(connection, cutoff)]


@dataclass(frozen=True, slots=True)
class _Context:
    connection: records.Handle
    now: datetime
    holds: Sequence[LegalHold]
    protected: Protected


def _unreferenced(context: _Context, plan: ClassPlan, objects: Mapping[str, StoredObject],
                  taken: set[str]) -> None:
    """File stored objects no remaining record names and older than the cut-off."""
    catalogued = records.catalogue(context.connection)
    items = []
    for digest, stored in sorted(objects.items()):
        if digest in taken:
            continue
        written = catalogued.get(digest, stored.modified)
        if written is None:
            plan.unknown_age.append(digest)
        elif written < plan.cutoff:
            items.append(Item(digest, digest, (digest,)))
    _sort(plan, items, context.holds, context.protected)
    plan.blobs.extend(item.key for item in plan.doomed)


def plan_retention(connection: records.Handle, policy: RetentionPolicy, now: datetime,
                   objects: Mapping[str, StoredObject] | None = None) -> Plan:
    """Decide what ``policy`` deletes at ``now``; nothing is written.

    ``objects`` lists the blob store (needed when the policy names unreferenced artifacts).
    """
    context = _Context(connection, now, records.list_holds(connection, active_only=True),
                       production_lineage(connection))
    plans = [ClassPlan(c, policy.classes[c].max_age, now - policy.classes[c].max_age)
             for c in ORDER if c in policy.classes]
    for plan in plans:
        if plan.data_class is not DataClass.UNREFERENCED_ARTIFACTS:
            _sort(plan, _expired(connection, plan.data_class, plan.cutoff), context.holds,
                  context.protected)
    result = Plan(plans)
    removed = result.removed_holders()
    still = {ref.digest for ref in records.references(connection)
             if (ref.holder, ref.key) not in removed} | context.protected.digests
    taken = set(still)
    for plan in plans:
        if plan.data_class is DataClass.UNREFERENCED_ARTIFACTS:
            _unreferenced(context, plan, objects or {}, taken)
            continue
        for item in plan.doomed:
            fresh = [d for d in item.digests if d not in taken]
            plan.blobs.extend(fresh)
            taken.update(fresh)
    return result
