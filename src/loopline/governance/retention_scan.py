"""Deciding what a retention run deletes: candidates, holds, protected lineage, blobs.

Reads only, on the connection it is given (a dry run's read connection, or a real run's
write transaction, so the decision and the deletions see the same state). A candidate is
kept when an active legal hold covers it (by its ref, a name it belongs to, or the lineage
of a model the hold names), or when the lineage of a version in production or staging, or
named by any alias, reaches it; a blob is deleted only when no record left after the run
names it. What is kept is decided by the store's ``RetentionScope`` and, for segments,
``decide_segments``: the same code ``PredictionLog.delete_before`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loopline.core.predictions import KIND_FEEDBACK, KIND_PREDICTIONS
from loopline.governance.retention_policy import DataClass, RetentionPolicy
from loopline.store import blob_references
from loopline.store import retention_records as records

SEGMENT_KINDS = {DataClass.PREDICTION_LOG: KIND_PREDICTIONS, DataClass.FEEDBACK: KIND_FEEDBACK}
HOLDERS = {DataClass.PREDICTION_LOG: blob_references.HOLDER_SEGMENT,
           DataClass.FEEDBACK: blob_references.HOLDER_SEGMENT,
           DataClass.DATASET_SNAPSHOTS: blob_references.HOLDER_SNAPSHOT,
           DataClass.RUN_LOGS: blob_references.HOLDER_RUN_LOGS}
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


def _sort(plan: ClassPlan, items: Iterable[Item], scope: records.RetentionScope) -> None:
    """Count ``items`` as candidates and file each as held, referenced or doomed."""
    for item in items:
        plan.candidates += 1
        held_by = scope.holding(plan.data_class, (item.ref, *item.aliases), item.digests)
        if held_by:
            plan.held.append(HeldItem(item.ref, held_by))
        elif scope.protected.covers(plan.data_class, item.ref, item.digests):
            plan.referenced.append(item.ref)
        else:
            plan.doomed.append(item)


def _segments(connection: records.Handle, plan: ClassPlan,
              scope: records.RetentionScope) -> None:
    """File expired segments as ``decide_segments`` sorts them (``delete_before`` does too)."""
    decision = records.decide_segments(connection, SEGMENT_KINDS[plan.data_class], plan.cutoff,
                                       scope)
    plan.candidates += len(decision.doomed) + len(decision.held) + len(decision.protected)
    plan.held.extend(HeldItem(ref, holds) for ref, holds in decision.held)
    plan.referenced.extend(decision.protected)
    plan.doomed.extend(Item(s.id, s.id, (s.blob_digest,), s.rows) for s in decision.doomed)


def _expired(connection: records.Handle, data_class: DataClass, cutoff: datetime) -> list[Item]:
    if data_class is DataClass.DATASET_SNAPSHOTS:
        return [Item(s.ref, s.id, (s.blob_digest,), s.rows, (s.dataset,))
                for s in records.expired_snapshots(connection, cutoff)]
    return [Item(r.run_id, r.run_id, r.digests, r.attempts, (r.pipeline,))
            for r in records.expired_run_logs(connection, cutoff)]


@dataclass(frozen=True, slots=True)
class _Context:
    connection: records.Handle
    now: datetime
    scope: records.RetentionScope


def _unreferenced(context: _Context, plan: ClassPlan, objects: Mapping[str, StoredObject],
                  taken: set[str]) -> None:
    """File stored objects no remaining record names and older than the cut-off."""
    catalogued = blob_references.catalogue(context.connection)
    items = []
    for digest, stored in sorted(objects.items()):
        if digest in taken:
            continue
        # The newest of both: a put that found the object stored refreshes a local object's
        # time, so an old orphan a registration is naming right now does not look expired.
        known = [t for t in (catalogued.get(digest), stored.modified) if t is not None]
        written = max(known) if known else None
        if written is None:
            plan.unknown_age.append(digest)
        elif written < plan.cutoff:
            items.append(Item(digest, digest, (digest,)))
    _sort(plan, items, context.scope)
    plan.blobs.extend(item.key for item in plan.doomed)


def plan_retention(connection: records.Handle, policy: RetentionPolicy, now: datetime,
                   objects: Mapping[str, StoredObject] | None = None) -> Plan:
    """Decide what ``policy`` deletes at ``now``; nothing is written.

    ``objects`` lists the blob store (needed when the policy names unreferenced artifacts).
    """
    context = _Context(connection, now, records.retention_scope(connection))
    plans = [ClassPlan(c, policy.classes[c].max_age, now - policy.classes[c].max_age)
             for c in ORDER if c in policy.classes]
    for plan in plans:
        if plan.data_class in SEGMENT_KINDS:
            _segments(connection, plan, context.scope)
        elif plan.data_class is not DataClass.UNREFERENCED_ARTIFACTS:
            _sort(plan, _expired(connection, plan.data_class, plan.cutoff), context.scope)
    result = Plan(plans)
    removed = result.removed_holders()
    still = {ref.digest for ref in blob_references.references(connection)
             if (ref.holder, ref.key) not in removed} | context.scope.protected.digests
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
