"""Applying a retention policy: delete what expired, keep what is held or served.

Order keeps every record's blob present: the decision (``retention_scan``) and every row
deletion or purge mark commit in ONE write transaction with one audit entry
(``governance.retention_applied``) and a ``governance.retention_applied`` event; only after
the commit are blobs deleted. A crash in between leaves blobs nothing names, which the next
``unreferenced_artifacts`` pass removes; never a record naming a missing blob. A dry run
decides the same way on a read connection and writes nothing at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import InvalidArgumentError, LooplineError, NotFoundError
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ports import Authorizer, BlobStore
from loopline.governance.retention_policy import DataClass, RetentionPolicy
from loopline.governance.retention_scan import (
    SEGMENT_KINDS,
    ClassPlan,
    HeldItem,
    Plan,
    StoredObject,
    plan_retention,
)
from loopline.store import MetadataStore, UnitOfWork, blob_references
from loopline.store import retention_records as records

__all__ = ["MAX_ITEMS", "ClassReport", "HeldItem", "RetentionReport", "RetentionService"]

MAX_ITEMS = 1_000
AUDIT_ACTION = "governance.retention_applied"


@dataclass(frozen=True, slots=True)
class ClassReport:
    """One data class's pass: cut-off, candidates, and what was deleted or kept and why.

    Lists hold the first ``MAX_ITEMS`` refs; the ``*_total`` counts are complete.
    ``unknown_age`` are objects kept because neither the catalogue nor the storage tells
    when they were written. In a dry run, ``deleted`` and ``bytes_freed`` say what would be.
    """

    data_class: DataClass
    max_age: timedelta
    cutoff: datetime
    candidates: int
    deleted: int
    rows: int
    held: tuple[HeldItem, ...]
    held_total: int
    referenced: tuple[str, ...]
    referenced_total: int
    blobs_deleted: int
    bytes_freed: int
    items: tuple[str, ...]
    items_total: int
    unknown_age: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What a retention run deleted (or, dry, would delete) per data class."""

    policy: str
    dry_run: bool
    now: datetime
    classes: tuple[ClassReport, ...]
    blobs_left: tuple[str, ...] = ()  # blobs whose deletion failed or that became named again

    def of(self, data_class: DataClass | str) -> ClassReport:
        """Return the report of ``data_class``.

        Raises:
            NotFoundError: when the policy did not name that class.
        """
        for report in self.classes:
            if report.data_class == data_class:
                return report
        raise NotFoundError("retention class", str(data_class),
                            f"policy {self.policy!r} does not name it")

    @property
    def deleted(self) -> int:
        """How many items every class deleted together."""
        return sum(report.deleted for report in self.classes)


def object_modified(blobs: BlobStore, digest: str) -> datetime | None:
    """Return when the store last put ``digest``, or None when it cannot tell.

    Only a ``ContentAddressedStore`` can tell (``modified``); a put that found the object
    already stored counts as a write on local storage, so a blob about to be named again
    looks new.
    """
    if not isinstance(blobs, ContentAddressedStore):
        return None
    try:
        return blobs.modified(digest)
    except LooplineError:  # deleted meanwhile, or the storage failed: age unknown
        return None


def _bounded(values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(values[:MAX_ITEMS])


def _class_report(plan: ClassPlan, freed: Mapping[str, int]) -> ClassReport:
    gone = [digest for digest in plan.blobs if digest in freed]
    return ClassReport(
        data_class=plan.data_class, max_age=plan.max_age, cutoff=plan.cutoff,
        candidates=plan.candidates, deleted=len(plan.doomed),
        rows=sum(item.rows for item in plan.doomed), held=_bounded(plan.held),
        held_total=len(plan.held), referenced=_bounded(plan.referenced),
        referenced_total=len(plan.referenced), blobs_deleted=len(gone),
        bytes_freed=sum(freed[digest] for digest in gone),
        items=_bounded([item.ref for item in plan.doomed]), items_total=len(plan.doomed),
        unknown_age=_bounded(plan.unknown_age))


def _summary(plan: Plan) -> dict[str, Any]:
    return {str(c.data_class): {
        "cutoff": c.cutoff.isoformat(), "candidates": c.candidates, "deleted": len(c.doomed),
        "rows": sum(item.rows for item in c.doomed), "held": len(c.held),
        "referenced": len(c.referenced), "blobs": len(c.blobs),
        "refs": [item.ref for item in c.doomed[:MAX_ITEMS]], "total": len(c.doomed),
    } for c in plan.classes}


class RetentionService:
    """Run a retention policy over one workspace's records and blobs."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, authorizer: Authorizer,
                 actor: str) -> None:
        self._store = store
        self._blobs = blobs
        self._authorizer = authorizer
        self._actor = actor

    def run(self, policy: RetentionPolicy, *, dry_run: bool = False,
            now: datetime | None = None) -> RetentionReport:
        """Delete what ``policy`` lets expire at ``now`` (default: the store's clock).

        Raises:
            AccessDeniedError: when the actor lacks ``admin`` (``read`` for a dry run).
            InvalidArgumentError: naming ``policy`` or ``now`` when it is not usable.
            BackendError: when the database fails (nothing was deleted).
        """
        if not isinstance(policy, RetentionPolicy):
            raise InvalidArgumentError("policy", "must be a RetentionPolicy (kind: retention)")
        if now is not None and (not isinstance(now, datetime) or now.utcoffset() is None):
            raise InvalidArgumentError("now", "must be a timezone-aware datetime")
        self._authorizer.authorize(self._actor, Permission.READ if dry_run else Permission.ADMIN)
        moment = (now or self._store.clock.now()).astimezone(UTC)
        objects = (self._stored_objects() if DataClass.UNREFERENCED_ARTIFACTS in policy.classes
                   else {})
        if dry_run:
            with self._store.engine.connect() as connection:
                plan = plan_retention(connection, policy, moment, objects)
            freed, left = self._sizes(plan, objects), tuple[str, ...]()
        else:
            with self._store.write(self._actor) as uow:
                uow.serialise()  # decide and delete under the lock every writer takes
                plan = plan_retention(uow.session.connection(), policy, moment, objects)
                self._apply(uow, plan, policy.name, moment)
            freed, left = self._delete_blobs(plan, objects)
        return RetentionReport(policy.name, dry_run, moment,
                               tuple(_class_report(c, freed) for c in plan.classes), left)

    def _stored_objects(self) -> dict[str, StoredObject]:
        return {info.digest: StoredObject(info.size, object_modified(self._blobs, info.digest))
            for info in self._blobs.iter_objects()}

    def _apply(self, uow: UnitOfWork, plan: Plan, name: str, now: datetime) -> None:
        connection = uow.session.connection()
        for decided in plan.classes:
            keys = [item.key for item in decided.doomed]
            if decided.data_class in SEGMENT_KINDS:
                records.delete_segments(connection, keys)
            elif decided.data_class is DataClass.DATASET_SNAPSHOTS:
                records.mark_purged(connection, keys, uow.now())
            elif decided.data_class is DataClass.RUN_LOGS:
                records.clear_run_logs(connection, keys)
        # Unreferenced artifacts have no record but their catalogue row, removed here too.
        records.uncatalogue(connection, plan.blobs())
        summary = _summary(plan)
        uow.audit(AUDIT_ACTION, f"retention:{name}", None,
                  {"policy": name, "now": now.isoformat(), "classes": summary})
        uow.emit(EventType.RETENTION_APPLIED, f"retention:{name}", {
            "policy": name, "classes": {key: {field: value[field] for field in
                                              ("deleted", "held", "referenced", "blobs")}
                                        for key, value in summary.items()}})

    def _size(self, digest: str, objects: Mapping[str, StoredObject]) -> int:
        if digest in objects:
            return objects[digest].size
        try:
            return self._blobs.info(digest).size
        except LooplineError:  # gone already (an earlier run crashed), or unreadable
            return 0

    def _sizes(self, plan: Plan, objects: Mapping[str, StoredObject]) -> dict[str, int]:
        return {digest: self._size(digest, objects) for digest in plan.blobs()}

    def _delete_blobs(self, plan: Plan, objects: Mapping[str, StoredObject],
                      ) -> tuple[dict[str, int], tuple[str, ...]]:
        """Delete the plan's blobs now that no committed record names them.

        A blob a new record named meanwhile (a snapshot of the same rows) is kept, and so is
        one the storage fails to delete; both are reported in ``blobs_left``.
        """
        doomed = plan.blobs()
        if not doomed:
            return {}, ()
        with self._store.engine.connect() as connection:
            named_again = blob_references.directly_referenced(connection, doomed)
        freed: dict[str, int] = {}
        left: list[str] = []
        for digest in doomed:
            if digest in named_again:
                left.append(digest)
                continue
            size = self._size(digest, objects)
            try:
                self._blobs.delete(digest)
            except NotFoundError:
                size = 0  # already gone: a crash after an earlier run's commit
            except LooplineError:
                left.append(digest)
                continue
            freed[digest] = size
        return freed, tuple(left)
