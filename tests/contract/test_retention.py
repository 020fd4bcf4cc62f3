"""Retention and legal holds on every backend: each data class deletes exactly what expired,
keeps the newest snapshot, what a served or staged model's lineage reaches and what a legal hold
covers; a dry run writes nothing; blobs go only after the records; bad input names its field."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pytest
import sqlalchemy as sa
from model_payloads import MeanModel

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.artifacts import ContentAddressedStore
from loopline.core.clock import ManualClock
from loopline.core.errors import (
    AccessDeniedError,
    BackendError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.events import EventType
from loopline.core.lineage import EdgeKind, LineageEdge, NodeKind, NodeRef
from loopline.core.models import model_version_node
from loopline.core.predictions import FeedbackRecord, PredictionRecord
from loopline.governance.access import AccessControl
from loopline.governance.legal_holds import LegalHolds
from loopline.governance.retention import HeldItem, RetentionReport, RetentionService
from loopline.governance.retention_policy import DataClass, RetentionPolicy
from loopline.pipelines.context import current_task
from loopline.store import AuditFilter, UnitOfWork, legal_hold_records
from loopline.store.models import TASK_ATTEMPTS, ArtifactRow, DatasetVersionRow

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ACTION = "governance.retention_applied"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def ws(db_url: str, tmp_path: Path, clock: ManualClock) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "ws", overrides={"db_url": db_url}, clock=clock)
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def access(ws: Workspace) -> AccessControl:
    return AccessControl(ws.store)


@pytest.fixture
def service(ws: Workspace, access: AccessControl) -> RetentionService:
    return RetentionService(ws.store, ws.artifacts.blobs, access, ws.actor)


@pytest.fixture
def holds(ws: Workspace, access: AccessControl) -> LegalHolds:
    return LegalHolds(ws.store, access, ws.actor)


def policy(**classes: str) -> RetentionPolicy:
    return RetentionPolicy.model_validate(
        {"kind": "retention", "name": "default",
         "classes": {name: {"max_age": age} for name, age in classes.items()}})


def frame(seed: int, rows: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"x": [seed * 100 + i for i in range(rows)], "y": ["a"] * rows})


def snapshot(ws: Workspace, name: str, seed: int) -> str:
    return ws.datasets.snapshot(frame(seed), name).version.ref


def blobs(ws: Workspace) -> ContentAddressedStore:
    store = ws.artifacts.blobs
    assert isinstance(store, ContentAddressedStore)
    return store


def retention_entries(ws: Workspace) -> list[Any]:
    return ws.store.audit.entries(AuditFilter(action=ACTION))


def prediction(i: int, when: datetime) -> PredictionRecord:
    return PredictionRecord(request_id=f"req-{i}", time=when, deployment="churn",
                            model_version="v1", inputs={"x": i}, outputs={"score": i / 10},
                            latency_ms=1.0)


# ------------------------------------------------------------------------------ prediction log


def test_prediction_and_feedback_segments_older_than_max_age_are_deleted_with_their_blobs(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    old = ws.predictions.append([prediction(1, T0)])
    old_labels = ws.predictions.log_feedback([FeedbackRecord("req-1", T0, 1)])
    clock.advance(timedelta(days=100))
    new = ws.predictions.append([prediction(2, clock.now())])
    new_labels = ws.predictions.log_feedback([FeedbackRecord("req-2", clock.now(), 0)])

    report = service.run(policy(prediction_log="90d", feedback="90d"))

    assert report.of(DataClass.PREDICTION_LOG).items == (old.id,)
    assert report.of(DataClass.FEEDBACK).items == (old_labels.id,)
    assert report.of(DataClass.PREDICTION_LOG).rows == 1
    assert report.of(DataClass.PREDICTION_LOG).bytes_freed > 0
    assert [s.id for s in ws.predictions.segments()] == [new.id]
    assert [s.id for s in ws.predictions.segments(kind="feedback")] == [new_labels.id]
    assert not blobs(ws).exists(old.blob_digest)
    assert not blobs(ws).exists(old_labels.blob_digest)
    assert blobs(ws).exists(new.blob_digest) and blobs(ws).exists(new_labels.blob_digest)


def test_a_class_the_policy_does_not_name_is_kept_whatever_its_age(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    labels = ws.predictions.log_feedback([FeedbackRecord("req-1", T0, 1)])
    clock.advance(timedelta(days=1000))
    report = service.run(policy(prediction_log="1d"))
    assert [c.data_class for c in report.classes] == [DataClass.PREDICTION_LOG]
    assert [s.id for s in ws.predictions.segments(kind="feedback")] == [labels.id]
    with pytest.raises(NotFoundError, match="feedback"):
        report.of(DataClass.FEEDBACK)


# ------------------------------------------------------------------------------ snapshots


def test_old_snapshots_are_purged_but_the_newest_of_each_dataset_is_kept(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    first, second = snapshot(ws, "iris", 1), snapshot(ws, "iris", 2)
    solo = snapshot(ws, "solo", 3)
    digest = ws.datasets.get(first).blob_digest
    clock.advance(timedelta(days=200))
    third = snapshot(ws, "iris", 4)

    report = service.run(policy(dataset_snapshots="180d"))

    snapshots = report.of(DataClass.DATASET_SNAPSHOTS)
    assert snapshots.items == (first, second) and snapshots.deleted == 2
    assert snapshots.cutoff == clock.now() - timedelta(days=180)
    assert not blobs(ws).exists(digest)
    with pytest.raises(NotFoundError, match=r"purged by retention on 2030-07-20"):
        ws.datasets.read(first)
    with pytest.raises(NotFoundError, match="purged by retention"):
        next(ws.datasets.iter_batches(second))
    assert ws.datasets.get(first).content_hash  # the record stays as evidence
    assert ws.datasets.read(third).num_rows == 5 and ws.datasets.read(solo).num_rows == 5
    again = service.run(policy(dataset_snapshots="180d"))
    assert again.of(DataClass.DATASET_SNAPSHOTS).candidates == 0  # purged once only


def test_a_purged_snapshots_blob_is_kept_while_a_newer_version_holds_the_same_rows(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    first = snapshot(ws, "iris", 1)
    snapshot(ws, "iris", 2)
    clock.advance(timedelta(days=200))
    back = snapshot(ws, "iris", 1)  # a rollback: the same rows, the same Parquet bytes
    assert ws.datasets.get(back).blob_digest == ws.datasets.get(first).blob_digest

    report = service.run(policy(dataset_snapshots="180d"))

    assert report.of(DataClass.DATASET_SNAPSHOTS).deleted == 2
    assert report.of(DataClass.DATASET_SNAPSHOTS).blobs_deleted == 1
    assert ws.datasets.read(back).num_rows == 5


@pytest.mark.parametrize("how", ["status", "alias", "staging", "champion"])
def test_a_snapshot_upstream_of_a_served_or_staged_model_is_kept(
        ws: Workspace, service: RetentionService, clock: ManualClock, how: str) -> None:
    trained = snapshot(ws, "iris", 1)
    parent = ws.datasets.snapshot(frame(9), "raw").version.ref
    derived = ws.datasets.snapshot(frame(8), "clean", parents=[parent]).version.ref
    other = snapshot(ws, "iris", 2)
    snapshot(ws, "raw", 10)
    snapshot(ws, "clean", 11)
    version = ws.models.register(MeanModel(1.0), "mean", flavor="python",
                                 datasets=[trained, derived])
    if how in ("status", "staging"):
        ws.models.set_status(version.uri, "production" if how == "status" else "staging")
    else:  # any alias protects: serving refers to models by alias, whatever its name
        ws.models.set_alias("mean", "production" if how == "alias" else "champion",
                            version.version)
    clock.advance(timedelta(days=200))
    snapshot(ws, "iris", 3)

    report = service.run(policy(dataset_snapshots="180d", unreferenced_artifacts="1d"))

    snapshots = report.of(DataClass.DATASET_SNAPSHOTS)
    assert set(snapshots.referenced) == {trained, derived, parent}
    assert snapshots.items == (other,)
    assert ws.datasets.read(trained).num_rows == 5 and ws.datasets.read(parent).num_rows == 5
    assert blobs(ws).exists(version.artifact_digest)  # its artifact is never unreferenced


def test_a_snapshot_only_an_unserved_version_trained_on_is_purged(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    trained = snapshot(ws, "iris", 1)
    snapshot(ws, "iris", 2)
    ws.models.register(MeanModel(1.0), "mean", flavor="python", datasets=[trained])
    clock.advance(timedelta(days=200))
    report = service.run(policy(dataset_snapshots="180d"))
    assert trained in report.of(DataClass.DATASET_SNAPSHOTS).items


def test_a_hold_naming_a_model_keeps_the_lineage_of_its_versions_until_released(
        ws: Workspace, service: RetentionService, holds: LegalHolds,
        clock: ManualClock) -> None:
    trained = snapshot(ws, "iris", 1)
    other = snapshot(ws, "iris", 2)
    snapshot(ws, "iris", 3)
    ws.models.register(MeanModel(1.0), "fraud-model", flavor="python", datasets=[trained])
    hold = holds.add("dataset_snapshots", "fraud-*", "litigation")
    clock.advance(timedelta(days=200))

    report = service.run(policy(dataset_snapshots="180d"))

    snapshots = report.of(DataClass.DATASET_SNAPSHOTS)
    assert snapshots.held == (HeldItem(trained, (hold.id,)),)
    assert snapshots.items == (other,)
    assert ws.datasets.read(trained).num_rows == 5
    holds.release(hold.id)
    assert service.run(policy(dataset_snapshots="180d")).of(
        DataClass.DATASET_SNAPSHOTS).items == (trained,)


def test_a_segment_a_champion_model_was_trained_on_survives_both_deletion_paths(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    labels = ws.predictions.log_feedback([FeedbackRecord("req-1", T0, 1)])
    loose = ws.predictions.log_feedback([FeedbackRecord("req-2", T0, 0)])
    version = ws.models.register(MeanModel(1.0), "mean", flavor="python")
    ws.lineage.record([], [LineageEdge(NodeRef(NodeKind.PREDICTION_SEGMENT, labels.id),
                                       model_version_node("mean", version.version),
                                       EdgeKind.TRAINED_ON)], actor=ws.actor)
    ws.models.set_alias("mean", "champion", version.version)
    clock.advance(timedelta(days=100))

    report = service.run(policy(feedback="90d"), dry_run=True)
    assert report.of(DataClass.FEEDBACK).referenced == (labels.id,)
    assert ws.predictions.delete_before(clock.now()) == 1
    assert [s.id for s in ws.predictions.segments(kind="feedback")] == [labels.id]
    assert not blobs(ws).exists(loose.blob_digest) and blobs(ws).exists(labels.blob_digest)


# ------------------------------------------------------------------------------ run logs


@task
def chatty(n: int) -> int:
    current_task().record_log("stdout", b"hello from a task\n")
    return n


@task
def broken() -> int:
    raise ValueError("boom")


@pipeline
def talk(n: int) -> Any:
    return chatty(n)


@pipeline
def fail() -> Any:
    return broken()


def attempt_logs(ws: Workspace, run_id: str) -> list[tuple[Any, Any]]:
    tasks = sa.text("SELECT id FROM task_runs WHERE run_id = :run")
    with ws.store.engine.connect() as connection:
        ids = [row.id for row in connection.execute(tasks, {"run": run_id})]
        rows = connection.execute(sa.select(TASK_ATTEMPTS.c.logs, TASK_ATTEMPTS.c.traceback)
                                  .where(TASK_ATTEMPTS.c.task_run_id.in_(ids)))
        return [(row.logs, row.traceback) for row in rows]


def test_run_logs_and_tracebacks_of_runs_finished_before_the_cutoff_are_cleared(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    old = ws.pipelines.run(talk, {"n": 1})
    failed = ws.pipelines.run(fail)
    assert not failed.succeeded
    digest = attempt_logs(ws, old.run.id)[0][0]["stdout"]["digest"]
    clock.advance(timedelta(days=40))
    new = ws.pipelines.run(talk, {"n": 2})

    report = service.run(policy(run_logs="30d"))

    logs = report.of(DataClass.RUN_LOGS)
    assert set(logs.items) == {old.run.id, failed.run.id} and logs.rows == 2
    assert attempt_logs(ws, old.run.id) == [(None, None)]
    assert attempt_logs(ws, failed.run.id) == [(None, None)]
    assert attempt_logs(ws, new.run.id)[0][0] is not None
    # Both runs logged the same bytes: the blob stays while the newer run names it.
    assert blobs(ws).exists(digest) and logs.blobs_deleted == 0
    clock.advance(timedelta(days=40))
    assert service.run(policy(run_logs="30d")).of(DataClass.RUN_LOGS).blobs_deleted == 1
    assert not blobs(ws).exists(digest)


# ------------------------------------------------------------------------------ artifacts


def test_unreferenced_artifacts_older_than_max_age_are_deleted_with_their_catalogue_rows(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    old = ws.artifacts.put_bytes(b"old and forgotten").digest
    model = ws.models.register(MeanModel(2.0), "mean", flavor="python")
    stray = blobs(ws).put_bytes(b"left by a crash").digest  # not catalogued: its mtime counts
    clock.advance(timedelta(days=100))
    new = ws.artifacts.put_bytes(b"new and unreferenced").digest
    fresh = blobs(ws).put_bytes(b"written just now").digest
    path = Path(blobs(ws).storage.url, "objects", fresh[:2], fresh)
    os.utime(path, (clock.now().timestamp(), clock.now().timestamp()))

    report = service.run(policy(unreferenced_artifacts="30d"))

    artifacts = report.of(DataClass.UNREFERENCED_ARTIFACTS)
    assert set(artifacts.items) == {old, stray}
    assert artifacts.bytes_freed == len(b"old and forgotten") + len(b"left by a crash")
    assert not blobs(ws).exists(old) and not blobs(ws).exists(stray)
    assert blobs(ws).exists(new) and blobs(ws).exists(fresh)
    assert blobs(ws).exists(model.artifact_digest)
    with ws.store.engine.connect() as connection:
        catalogued = set(connection.execute(sa.select(ArtifactRow.digest)).scalars())
    assert old not in catalogued and new in catalogued


def _age(store: ContentAddressedStore, digest: str, when: datetime) -> None:
    path = Path(store.storage.url, "objects", digest[:2], digest)
    os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_modified_says_when_an_object_was_written_and_refuses_an_absent_one(
        tmp_path: Path, where: str) -> None:
    url = str(tmp_path / "blobs") if where == "local" else f"memory://m-{tmp_path.name}"
    store = ContentAddressedStore.from_url(url)
    before = datetime.now(UTC) - timedelta(minutes=5)
    digest = store.put_bytes(b"dated").digest
    written = store.modified(digest)
    assert written is not None and written.utcoffset() is not None and written > before
    with pytest.raises(NotFoundError):
        store.modified("0" * 64)
    with pytest.raises(InvalidArgumentError, match="digest"):
        store.modified("not-a-digest")


def test_putting_a_stored_object_again_refreshes_its_local_modification_time(
        tmp_path: Path) -> None:
    store = ContentAddressedStore.from_url(str(tmp_path / "blobs"))
    digest = store.put_bytes(b"orphan").digest
    year_ago = datetime.now(UTC) - timedelta(days=365)
    _age(store, digest, year_ago)
    assert store.modified(digest) == year_ago
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert store.put_bytes(b"orphan").created is False
    refreshed = store.modified(digest)
    assert refreshed is not None and refreshed > before


def test_an_old_orphan_put_again_by_a_registration_is_not_deleted_as_unreferenced(
        ws: Workspace, service: RetentionService) -> None:
    orphan = blobs(ws).put_bytes(b"an orphan about to be named").digest
    forgotten = blobs(ws).put_bytes(b"an orphan nobody wants").digest
    year_ago = datetime.now(UTC) - timedelta(days=365)
    _age(blobs(ws), orphan, year_ago)
    _age(blobs(ws), forgotten, year_ago)
    blobs(ws).put_bytes(b"an orphan about to be named")  # a dedup put, before the record

    report = service.run(policy(unreferenced_artifacts="30d"), now=datetime.now(UTC))

    assert report.of(DataClass.UNREFERENCED_ARTIFACTS).items == (forgotten,)
    assert blobs(ws).exists(orphan) and not blobs(ws).exists(forgotten)


class OpaqueBlobs:
    """The real store behind a seam that cannot say when an object was written."""

    def __init__(self, inner: ContentAddressedStore, fail_deletes: bool = False) -> None:
        self.inner = inner
        self.fail_deletes = fail_deletes

    def delete(self, digest: str) -> None:
        if self.fail_deletes:
            raise BackendError("the object store is unreachable")
        self.inner.delete(digest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_uncatalogued_object_of_unknown_age_is_kept_and_reported(
        ws: Workspace, access: AccessControl, clock: ManualClock) -> None:
    stray = blobs(ws).put_bytes(b"no idea when").digest
    clock.advance(timedelta(days=100))
    service = RetentionService(ws.store, OpaqueBlobs(blobs(ws)), access, ws.actor)
    report = service.run(policy(unreferenced_artifacts="30d"))
    artifacts = report.of(DataClass.UNREFERENCED_ARTIFACTS)
    assert artifacts.deleted == 0 and stray in artifacts.unknown_age
    assert blobs(ws).exists(stray)


def test_blobs_left_by_a_failed_delete_are_removed_by_the_next_unreferenced_pass(
        ws: Workspace, access: AccessControl, clock: ManualClock) -> None:
    segment = ws.predictions.append([prediction(1, T0)])
    clock.advance(timedelta(days=100))
    failing = RetentionService(ws.store, OpaqueBlobs(blobs(ws), fail_deletes=True), access,
                               ws.actor)
    report = failing.run(policy(prediction_log="90d"))
    assert report.of(DataClass.PREDICTION_LOG).deleted == 1
    assert report.blobs_left == (segment.blob_digest,)
    assert ws.predictions.segments() == []  # no record names the blob left behind

    healthy = RetentionService(ws.store, blobs(ws), access, ws.actor)
    again = healthy.run(policy(unreferenced_artifacts="1d"))
    assert again.of(DataClass.UNREFERENCED_ARTIFACTS).items == (segment.blob_digest,)
    assert not blobs(ws).exists(segment.blob_digest)


# ------------------------------------------------------------------------------ legal holds


def test_a_legal_hold_keeps_what_it_covers_until_released(
        ws: Workspace, service: RetentionService, holds: LegalHolds,
        clock: ManualClock) -> None:
    first, second = snapshot(ws, "iris", 1), snapshot(ws, "iris", 2)
    segment = ws.predictions.append([prediction(1, T0)])
    on_iris = holds.add("dataset_snapshots", "iris", "litigation 2030-17")
    on_all = holds.add("*", segment.id, "regulator asked")
    clock.advance(timedelta(days=200))
    snapshot(ws, "iris", 3)

    report = service.run(policy(dataset_snapshots="180d", prediction_log="90d"))

    snapshots = report.of(DataClass.DATASET_SNAPSHOTS)
    assert snapshots.deleted == 0 and snapshots.candidates == 2
    assert [(h.ref, h.holds) for h in snapshots.held] == [(first, (on_iris.id,)),
                                                           (second, (on_iris.id,))]
    assert report.of(DataClass.PREDICTION_LOG).held[0].holds == (on_all.id,)
    assert ws.datasets.read(first).num_rows == 5

    released = holds.release(on_iris.id)
    assert released.released_by == ws.actor and released.released_at == clock.now()
    assert [h.id for h in holds.list()] == [on_all.id]
    assert [h.id for h in holds.list(active_only=False)] == [on_iris.id, on_all.id]
    after = service.run(policy(dataset_snapshots="180d", prediction_log="90d"))
    assert after.of(DataClass.DATASET_SNAPSHOTS).items == (first, second)
    assert after.of(DataClass.PREDICTION_LOG).deleted == 0


def test_a_hold_by_version_glob_keeps_only_the_versions_it_matches(
        ws: Workspace, service: RetentionService, holds: LegalHolds,
        clock: ManualClock) -> None:
    first, second = snapshot(ws, "iris", 1), snapshot(ws, "iris", 2)
    holds.add("dataset_snapshots", "iris@1", "keep the first")
    clock.advance(timedelta(days=200))
    snapshot(ws, "iris", 3)
    report = service.run(policy(dataset_snapshots="180d"))
    assert report.of(DataClass.DATASET_SNAPSHOTS).items == (second,)
    assert report.of(DataClass.DATASET_SNAPSHOTS).held[0].ref == first


def test_a_hold_may_name_a_segments_deployment_or_a_runs_pipeline(
        ws: Workspace, service: RetentionService, holds: LegalHolds,
        clock: ManualClock) -> None:
    segment = ws.predictions.append([prediction(1, T0)])
    run = ws.pipelines.run(talk, {"n": 7})
    by_deployment = holds.add("prediction_log", "churn", "complaint about churn scores")
    by_pipeline = holds.add("run_logs", "tal*", "keep the talk logs")
    clock.advance(timedelta(days=100))
    report = service.run(policy(prediction_log="90d", run_logs="30d"))
    assert report.of(DataClass.PREDICTION_LOG).held[0] == HeldItem(segment.id,
                                                                   (by_deployment.id,))
    assert report.of(DataClass.RUN_LOGS).held[0] == HeldItem(run.run.id, (by_pipeline.id,))
    assert report.deleted == 0


def test_adding_and_releasing_holds_is_audited_with_events(
        ws: Workspace, holds: LegalHolds) -> None:
    hold = holds.add("run_logs", "*", "audit season")
    holds.release(hold.id)
    entries = ws.store.audit.entries(AuditFilter(subject=f"legal_hold:{hold.id}"))
    actions = [e.action for e in entries]
    assert actions == ["governance.legal_hold_released", "governance.legal_hold_added"]
    events = ws.store.events.read_after(0, 100, [EventType.LEGAL_HOLD_CHANGED])
    assert [e.payload["action"] for e in events] == ["added", "released"]


@pytest.mark.parametrize(("args", "field"), [
    (("prediction_logs", "*", "why"), "data_class"),
    (("feedback", "", "why"), "ref"),
    (("feedback", "   ", "why"), "ref"),
    (("feedback", "a\nb", "why"), "ref"),
    (("feedback", "x" * 513, "why"), "ref"),
    (("feedback", "*", ""), "reason"),
    (("feedback", "*", "  "), "reason"),
])
def test_a_bad_hold_names_the_field_and_writes_nothing(
        holds: LegalHolds, args: tuple[str, str, str], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        holds.add(*args)
    assert raised.value.field == field
    assert holds.list(active_only=False) == []


def test_releasing_an_unknown_or_released_hold_is_refused(holds: LegalHolds) -> None:
    with pytest.raises(InvalidArgumentError, match="hold_id"):
        holds.release("nope")
    with pytest.raises(NotFoundError, match="legal hold"):
        holds.release("0" * 32)
    hold = holds.add("feedback", "*", "why")
    holds.release(hold.id)
    with pytest.raises(ConflictError, match="already released"):
        holds.release(hold.id)


def test_releasing_a_hold_takes_the_append_lock_before_the_holds_row_lock(
        holds: LegalHolds, monkeypatch: pytest.MonkeyPatch) -> None:
    hold = holds.add("feedback", "*", "why")
    taken: list[str] = []
    serialise, get_hold = UnitOfWork.serialise, legal_hold_records.get_hold

    def spy_serialise(uow: UnitOfWork) -> None:
        taken.append("append lock")
        serialise(uow)

    def spy_get_hold(connection: Any, hold_id: str, lock: bool = False) -> Any:
        taken.append("row lock" if lock else "read")
        return get_hold(connection, hold_id, lock)

    monkeypatch.setattr(UnitOfWork, "serialise", spy_serialise)
    monkeypatch.setattr(legal_hold_records, "get_hold", spy_get_hold)
    holds.release(hold.id)
    assert taken.index("append lock") < taken.index("row lock")


# ------------------------------------------------------------------------------ dry run, audit


def _state(ws: Workspace) -> tuple[Any, ...]:
    """Every blob, every version's ``purged_at``, every catalogue row, every segment."""
    with ws.store.engine.connect() as connection:
        purged = connection.execute(sa.select(
            DatasetVersionRow.id, DatasetVersionRow.purged_at)).all()
        catalogue = connection.execute(sa.select(ArtifactRow.digest,
                                                 ArtifactRow.created_at)).all()
    segments = [s.id for kind in ("predictions", "feedback")
                for s in ws.predictions.segments(kind=kind)]
    return ({o.digest for o in blobs(ws).iter_objects()}, sorted(purged), sorted(catalogue),
            sorted(segments))


def test_a_dry_run_writes_nothing_and_the_real_run_deletes_exactly_what_it_reported(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    first = snapshot(ws, "iris", 1)
    snapshot(ws, "iris", 2)
    segment = ws.predictions.append([prediction(1, T0)])
    forgotten = ws.artifacts.put_bytes(b"forgotten").digest
    clock.advance(timedelta(days=200))
    snapshot(ws, "iris", 3)
    rules = policy(dataset_snapshots="180d", prediction_log="90d", unreferenced_artifacts="1d")
    head = ws.store.audit.head()
    events = len(ws.store.events.read_after(0, 10_000))
    before = _state(ws)

    dry = service.run(rules, dry_run=True)

    assert dry.dry_run and ws.store.audit.head() == head
    assert len(ws.store.events.read_after(0, 10_000)) == events
    assert _state(ws) == before
    assert all(c.items for c in dry.classes)  # every class has something to delete
    doomed = ({ws.datasets.get(ref).blob_digest for ref in dry.of("dataset_snapshots").items}
              | {segment.blob_digest} | set(dry.of("unreferenced_artifacts").items))
    assert dry.of("prediction_log").items == (segment.id,)
    assert forgotten in dry.of("unreferenced_artifacts").items

    real = service.run(rules)

    assert _decisions(dry) == _decisions(real)
    after = _state(ws)
    assert before[0] - after[0] == doomed and after[0] <= before[0]
    assert {row[0] for row in before[1]} == {row[0] for row in after[1]}
    purged_now = {row[0] for row in after[1] if row[1] is not None}
    assert purged_now == {ws.datasets.get(ref).id for ref in dry.of("dataset_snapshots").items}
    assert first in dry.of("dataset_snapshots").items
    assert {row[0] for row in before[2]} - {row[0] for row in after[2]} == {
        d for d in dry.of("unreferenced_artifacts").items if d in {r[0] for r in before[2]}}
    assert after[3] == sorted(set(before[3]) - {segment.id})


def _decisions(report: RetentionReport) -> list[tuple[Any, ...]]:
    return [(c.data_class, c.candidates, c.items, c.deleted, c.bytes_freed)
            for c in report.classes]


def test_a_real_run_writes_one_audit_entry_listing_what_it_deleted_and_an_event(
        ws: Workspace, service: RetentionService, clock: ManualClock) -> None:
    first = snapshot(ws, "iris", 1)
    snapshot(ws, "iris", 2)
    segment = ws.predictions.append([prediction(1, T0)])
    clock.advance(timedelta(days=200))
    snapshot(ws, "iris", 3)

    service.run(policy(dataset_snapshots="180d", prediction_log="90d"))

    [entry] = retention_entries(ws)
    assert entry.subject == "retention:default" and entry.actor == ws.actor
    classes = entry.after["classes"]
    assert classes["dataset_snapshots"]["refs"] == [first, "iris@2"]
    assert classes["prediction_log"]["refs"] == [segment.id]
    assert classes["prediction_log"]["deleted"] == 1
    [event] = ws.store.events.read_after(0, 100, [EventType.RETENTION_APPLIED])
    assert event.payload["classes"]["dataset_snapshots"]["deleted"] == 2
    with ws.store.engine.connect() as connection:
        purged = connection.execute(sa.select(DatasetVersionRow.purged_at).where(
            DatasetVersionRow.dataset == "iris").order_by(DatasetVersionRow.version)).scalars()
        assert list(purged) == [clock.now(), clock.now(), None]


def test_running_retention_needs_admin_and_a_dry_run_needs_read(
        ws: Workspace, access: AccessControl) -> None:
    access.grant(ws.actor, ws.actor, "admin")
    access.grant(ws.actor, "vera", "viewer")
    viewer = RetentionService(ws.store, blobs(ws), access, "vera")
    assert viewer.run(policy(feedback="1d"), dry_run=True).dry_run
    with pytest.raises(AccessDeniedError, match="vera"):
        viewer.run(policy(feedback="1d"))
    with pytest.raises(AccessDeniedError):
        LegalHolds(ws.store, access, "vera").add("feedback", "*", "why")
    assert retention_entries(ws) == []


def test_a_naive_now_or_a_non_policy_is_refused(service: RetentionService) -> None:
    with pytest.raises(InvalidArgumentError, match="now"):
        service.run(policy(feedback="1d"), now=datetime(2030, 1, 1))  # noqa: DTZ001
    with pytest.raises(InvalidArgumentError, match="policy"):
        service.run({"feedback": "1d"})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the document


@pytest.mark.parametrize(("classes", "where"), [
    ({"prediction_log": {"max_age": "90x"}}, ("classes", "prediction_log", "max_age")),
    ({"prediction_log": {"max_age": "0d"}}, ("classes", "prediction_log", "max_age")),
    ({"prediction_log": {"max_age": True}}, ("classes", "prediction_log", "max_age")),
    ({"predictions": {"max_age": "1d"}}, ("classes", "predictions", "[key]")),
    ({"feedback": {"max_age": "1d", "min_age": "1d"}}, ("classes", "feedback", "min_age")),
    ({}, ("classes",)),
])
def test_a_bad_retention_document_names_where_it_is_wrong(
        classes: dict[str, Any], where: tuple[str, ...]) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        RetentionPolicy.model_validate({"kind": "retention", "name": "x", "classes": classes})
    assert raised.value.errors()[0]["loc"] == where


def test_a_retention_document_reads_durations_as_written() -> None:
    parsed = policy(prediction_log="90d", run_logs="2w")
    assert parsed.max_age(DataClass.PREDICTION_LOG) == timedelta(days=90)
    assert parsed.classes[DataClass.RUN_LOGS].describe() == "2w"
    assert parsed.max_age(DataClass.FEEDBACK) is None
