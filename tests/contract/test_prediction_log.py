"""Contract of the prediction log and its writer, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from loopline.artifacts import ContentAddressedStore
from loopline.core.canonical import canonical_json
from loopline.core.clock import ManualClock
from loopline.core.errors import (
    AccessDeniedError,
    BackendError,
    ConflictError,
    InvalidArgumentError,
)
from loopline.core.predictions import (
    RETENTION_ACTION,
    SEGMENT_WRITTEN,
    FeedbackRecord,
    PredictionRecord,
    PredictionWindow,
    SegmentInfo,
)
from loopline.data.prediction_log import PredictionLog, ReadOptions
from loopline.data.prediction_writer import PredictionWriter, WriterOptions
from loopline.governance.access import AccessControl
from loopline.governance.legal_holds import LegalHolds
from loopline.store import AuditFilter, MetadataStore
from loopline.store.predictions import insert_segment

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def record(i: int, minutes: float = 0.0, deployment: str = "churn", version: str = "v1",
           **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": f"req-{i}", "time": at(minutes), "deployment": deployment,
        "model_version": version, "inputs": {"x": i, "name": "é", "tags": [1, 2]},
        "outputs": {"score": i / 10}, "latency_ms": 1.5}
    fields.update(changes)
    return PredictionRecord(**fields)


class Blobs:
    """A blob store that delegates to the real one and counts reads (a public-seam fake)."""

    def __init__(self, inner: ContentAddressedStore) -> None:
        self.inner = inner
        self.reads: list[str] = []

    def get_bytes(self, digest: str) -> bytes:
        self.reads.append(digest)
        return self.inner.get_bytes(digest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(ContentAddressedStore.from_url(str(tmp_path / "blobs")))


@pytest.fixture
def log(store: MetadataStore, blobs: Blobs, clock: ManualClock) -> PredictionLog:
    return PredictionLog(store, blobs, "tester", clock)


@pytest.fixture
def writer_factory(log: PredictionLog) -> Iterator[Any]:
    made: list[PredictionWriter] = []

    def make(target: PredictionLog = log, **options: Any) -> PredictionWriter:
        writer = PredictionWriter(target, WriterOptions(**options))
        made.append(writer)
        return writer

    yield make
    for writer in made:
        with contextlib.suppress(BackendError):  # a test that made flushes fail checked that
            writer.close(timeout=10)


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def ids(table: pa.Table) -> list[str]:
    return list(table["request_id"].to_pylist())


# ------------------------------------------------------------------------------ round trip


def test_appended_records_read_back_with_canonical_json_and_one_indexed_segment(
        log: PredictionLog, store: MetadataStore, blobs: Blobs) -> None:
    records = [record(i, minutes=i) for i in range(5)]
    info = log.append(records)

    assert (info.kind, info.deployment, info.model_versions, info.rows) == (
        "predictions", "churn", ("v1",), 5)
    assert (info.min_time, info.max_time) == (at(0), at(4))
    assert blobs.inner.exists(info.blob_digest)
    assert log.segments() == [info]
    table = log.read()
    assert table.num_rows == 5
    for row, original in zip(table.to_pylist(), records, strict=True):
        assert row["request_id"] == original.request_id
        assert row["time"] == original.time
        assert row["inputs"] == canonical_json(original.inputs)
        assert row["outputs"] == canonical_json(original.outputs)
        assert (row["deployment"], row["model_version"], row["latency_ms"]) == (
            "churn", "v1", 1.5)
    events = store.events.read_after(0, types=[SEGMENT_WRITTEN])
    assert [(e.subject, e.payload["rows"]) for e in events] == [
        (f"prediction_segment:{info.id}", 5)]
    assert store.audit.entries(AuditFilter(action=RETENTION_ACTION)) == []


def test_a_table_and_a_dataframe_append_the_same_rows_as_records(log: PredictionLog) -> None:
    records = [record(i, minutes=i) for i in range(3)]
    log.append(records)
    expected = log.read().drop_columns(["request_id"])
    table = pa.table({
        "request_id": [f"t-{i}" for i in range(3)],
        "time": pa.array([at(i) for i in range(3)], pa.timestamp("ms", tz="Europe/Paris")),
        "deployment": ["churn"] * 3, "model_version": ["v1"] * 3,
        "inputs": [f'{{ "tags": [1, 2], "x": {i}, "name": "é" }}' for i in range(3)],
        "outputs": pa.array([{"score": i / 10} for i in range(3)]),
        "latency_ms": pa.array([1.5] * 3, pa.float32()),
    })
    log.append(table)
    frame = pd.DataFrame({
        "request_id": [f"f-{i}" for i in range(3)], "time": [at(i) for i in range(3)],
        "deployment": "churn", "model_version": "v1",
        "inputs": [{"x": i, "name": "é", "tags": [1, 2]} for i in range(3)],
        "outputs": [{"score": i / 10} for i in range(3)], "latency_ms": 1.5})
    log.append(frame)

    for prefix in ("t-", "f-"):
        window = log.read()
        picked = window.filter(pc.starts_with(window["request_id"], prefix))
        assert picked.drop_columns(["request_id"]).equals(expected)


# ------------------------------------------------------------------------------ windows


def test_windowed_reads_prune_segments_and_filter_rows_exactly_at_the_edges(
        log: PredictionLog, blobs: Blobs) -> None:
    a_v1 = log.append([record(i, minutes=i) for i in range(10)])  # churn v1, 0..9
    a_v2 = log.append([record(100 + i, minutes=10 + i, version="v2") for i in range(10)])
    b_v1 = log.append([record(200 + i, minutes=i, deployment="fraud") for i in range(20)])
    mixed = log.append([record(300, minutes=30, deployment="fraud"),
                        record(301, minutes=31, version="v3")])
    assert mixed.deployment is None
    assert mixed.model_versions == ("v1", "v3")

    window = PredictionWindow(deployment="churn", start=at(5), end=at(12))
    assert [s.id for s in log.segments(window)] == [a_v1.id, a_v2.id]
    blobs.reads.clear()
    assert ids(log.read(window)) == [f"req-{i}" for i in (5, 6, 7, 8, 9, 100, 101)]
    assert sorted(blobs.reads) == sorted([a_v1.blob_digest, a_v2.blob_digest])

    by_version = PredictionWindow(model_version="v2")
    assert [s.id for s in log.segments(by_version)] == [a_v2.id]
    assert ids(log.read(by_version)) == [f"req-{100 + i}" for i in range(10)]

    fraud = log.read(PredictionWindow(deployment="fraud", start=at(19)))
    assert ids(fraud) == ["req-219", "req-300"]
    assert [s.id for s in log.segments(PredictionWindow(deployment="fraud", start=at(19)))] \
        == [b_v1.id, mixed.id]
    v3 = log.read(PredictionWindow(model_version="v3"), ReadOptions(columns=("request_id",)))
    assert v3.column_names == ["request_id"]
    assert ids(v3) == ["req-301"]
    assert log.read(PredictionWindow(start=at(40))).num_rows == 0
    assert log.read(PredictionWindow(start=at(3), end=at(3))).num_rows == 0


def test_read_segments_yields_the_windows_rows_one_segment_at_a_time(
        log: PredictionLog, blobs: Blobs) -> None:
    first = log.append([record(i, minutes=i) for i in range(10)])
    log.append([record(100 + i, minutes=i, deployment="fraud") for i in range(5)])
    third = log.append([record(200 + i, minutes=10 + i) for i in range(10)])
    window = PredictionWindow(deployment="churn", start=at(5), end=at(12))
    blobs.reads.clear()
    parts = log.read_segments(window)
    head = next(parts)
    assert ids(head) == [f"req-{i}" for i in range(5, 10)]
    assert blobs.reads == [first.blob_digest]  # the next segment is not read yet
    rest = list(parts)
    assert [ids(part) for part in rest] == [["req-200", "req-201"]]
    assert sorted(blobs.reads) == sorted([first.blob_digest, third.blob_digest])
    whole = log.read(window)
    assert pa.concat_tables([head, *rest]).equals(whole)
    assert list(log.read_segments(PredictionWindow(start=at(40)))) == []


def test_read_last_returns_the_newest_rows_in_time_order(log: PredictionLog) -> None:
    log.append([record(i, minutes=i) for i in range(10)])
    log.append([record(100 + i, minutes=5 + i, deployment="fraud") for i in range(10)])
    log.append([record(200 + i, minutes=20 + i) for i in range(3)])

    assert ids(log.read_last(4)) == ["req-109", "req-200", "req-201", "req-202"]
    assert ids(log.read_last(3, deployment="fraud")) == ["req-107", "req-108", "req-109"]
    assert log.read_last(1000).num_rows == 23
    with pytest.raises(InvalidArgumentError, match="n"):
        log.read_last(0)


def test_feedback_join_takes_the_newest_label_and_leaves_missing_labels_null(
        log: PredictionLog) -> None:
    log.append([record(i, minutes=i) for i in range(4)])
    log.log_feedback([FeedbackRecord("req-0", at(60), "late"),
                      FeedbackRecord("req-1", at(50), {"churned": True})])
    log.log_feedback([FeedbackRecord("req-0", at(55), "early"),  # written later, but older
                      FeedbackRecord("req-1", at(50), {"churned": False}),  # tie: last wins
                      FeedbackRecord("req-9", at(50), "no such prediction")])

    table = log.read(options=ReadOptions(with_feedback=True))
    rows = {row["request_id"]: row for row in table.to_pylist()}
    assert ids(table) == [f"req-{i}" for i in range(4)]
    assert (rows["req-0"]["label"], rows["req-0"]["label_time"]) == ('"late"', at(60))
    assert rows["req-1"]["label"] == canonical_json({"churned": False})
    assert rows["req-2"]["label"] is None
    assert rows["req-3"]["label_time"] is None
    assert log.segments(kind="feedback")[0].deployment is None


# ------------------------------------------------------------------------------ writer


def test_several_threads_writing_through_one_writer_lose_nothing(
        log: PredictionLog, writer_factory: Any) -> None:
    writer = writer_factory(batch_rows=700, max_queue=1_000_000)
    threads, per_thread = 8, 2_500

    def produce(worker: int) -> None:
        for i in range(per_thread):
            number = worker * per_thread + i
            assert writer.submit(record(number, minutes=number / 1000,
                                        deployment=f"dep-{worker % 3}"))

    workers = [threading.Thread(target=produce, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    writer.close()

    table = log.read()
    expected = {f"req-{n}" for n in range(threads * per_thread)}
    assert table.num_rows == len(expected)
    assert set(ids(table)) == expected
    stats = writer.stats()
    assert (stats.submitted, stats.written, stats.dropped, stats.failed_rows, stats.pending) == (
        len(expected), len(expected), 0, 0, 0)
    assert sum(s.rows for s in log.segments()) == len(expected)
    assert all(s.deployment is not None for s in log.segments())


def test_flush_makes_submitted_records_durable_and_close_flushes_the_rest(
        log: PredictionLog, writer_factory: Any) -> None:
    writer = writer_factory(batch_rows=10_000, max_age=timedelta(hours=1))
    for i in range(10):
        writer.submit(record(i, minutes=i))
    writer.flush()
    assert log.read().num_rows == 10

    for i in range(10, 15):
        writer.submit(record(i, minutes=i))
    writer.close()
    assert log.read().num_rows == 15
    with pytest.raises(ConflictError, match="closed"):
        writer.submit(record(99))


def test_the_writer_writes_a_batch_once_it_is_older_than_max_age_by_the_clock(
        log: PredictionLog, clock: ManualClock, writer_factory: Any) -> None:
    writer = writer_factory(batch_rows=10_000, max_age=timedelta(minutes=1),
                            poll_interval=0.01)
    for i in range(3):
        writer.submit(record(i))
    time.sleep(0.2)
    assert log.segments() == []
    clock.advance(timedelta(minutes=2))
    wait_until(lambda: writer.stats().written == 3)
    assert log.read().num_rows == 3


def test_the_writer_refuses_a_bad_record_in_the_callers_thread(writer_factory: Any) -> None:
    writer = writer_factory()
    with pytest.raises(InvalidArgumentError, match=r"record\.time"):
        writer.submit(record(1, time=datetime(2026, 1, 1)))  # noqa: DTZ001
    with pytest.raises(InvalidArgumentError, match="record"):
        writer.submit({"request_id": "x"})
    assert writer.stats().submitted == 0


class GatedBlobs(Blobs):
    """Holds every put until released, so the writer's queue can be filled on purpose."""

    def __init__(self, inner: ContentAddressedStore) -> None:
        super().__init__(inner)
        self.entered = threading.Event()
        self.release = threading.Event()

    def put_bytes(self, data: bytes) -> Any:
        self.entered.set()
        assert self.release.wait(10)
        return self.inner.put_bytes(data)


@pytest.mark.parametrize("when_full", ["drop", "raise"])
def test_a_full_queue_sheds_records_without_blocking(
        store: MetadataStore, blobs: Blobs, clock: ManualClock, writer_factory: Any,
        when_full: str) -> None:
    gated = GatedBlobs(blobs.inner)
    log = PredictionLog(store, gated, "tester", clock)
    writer = writer_factory(log, batch_rows=2, max_queue=3, when_full=when_full)
    assert writer.submit(record(0)) and writer.submit(record(1))
    assert gated.entered.wait(10)  # the writer holds the first batch and waits on the store
    for i in range(2, 5):
        assert writer.submit(record(i))
    started = time.monotonic()
    if when_full == "drop":
        assert writer.submit(record(5)) is False
    else:
        with pytest.raises(BackendError, match="queue is full"):
            writer.submit(record(5))
    assert time.monotonic() - started < 0.5
    gated.release.set()
    writer.close()
    assert sorted(ids(log.read())) == [f"req-{i}" for i in range(5)]
    assert writer.stats().dropped == (1 if when_full == "drop" else 0)


class FlakyBlobs(Blobs):
    """Fails the first ``failures`` puts, as a store that is briefly unreachable would."""

    def __init__(self, inner: ContentAddressedStore, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures

    def put_bytes(self, data: bytes) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("object store unreachable")
        return self.inner.put_bytes(data)


def test_a_failed_segment_write_is_retried_until_it_lands(
        store: MetadataStore, blobs: Blobs, clock: ManualClock, writer_factory: Any) -> None:
    log = PredictionLog(store, FlakyBlobs(blobs.inner, failures=2), "tester", clock)
    writer = writer_factory(log, attempts=4, backoff=0.001)
    for i in range(5):
        writer.submit(record(i))
    writer.flush()
    assert log.read().num_rows == 5
    stats = writer.stats()
    assert (stats.retries, stats.written, stats.failed_rows) == (2, 5, 0)


def test_a_segment_that_fails_every_attempt_is_counted_and_reported_by_flush(
        store: MetadataStore, blobs: Blobs, clock: ManualClock, writer_factory: Any) -> None:
    log = PredictionLog(store, FlakyBlobs(blobs.inner, failures=3), "tester", clock)
    writer = writer_factory(log, attempts=3, backoff=0.001)
    for i in range(5):
        writer.submit(record(i))
    with pytest.raises(BackendError, match="5 predictions could not be written.*unreachable"):
        writer.flush()
    stats = writer.stats()
    assert (stats.failed_segments, stats.failed_rows, stats.written) == (1, 5, 0)
    writer.submit(record(9))
    writer.flush()  # the failure was reported once; later records land normally
    assert ids(log.read()) == ["req-9"]


# ------------------------------------------------------------------------------ retention


def test_retention_deletes_only_old_segments_and_blobs_nothing_else_references(
        log: PredictionLog, store: MetadataStore, blobs: Blobs) -> None:
    day1 = log.append([record(1, minutes=60 * 24)])
    day2 = log.append([record(2, minutes=60 * 48)])
    day3 = log.append([record(3, minutes=60 * 72)])
    old_label = log.log_feedback([FeedbackRecord("req-1", at(60 * 25), 1)])
    # A newer index row naming day 1's bytes keeps those bytes alive.
    sharer = SegmentInfo("f" * 32, "predictions", "churn", ("v1",), 1, at(60 * 96),
                         at(60 * 96), day1.blob_digest, at(0))
    with store.write("tester") as uow:
        insert_segment(uow.session, sharer)

    assert log.delete_before(at(60 * 60)) == 3
    assert {s.id for s in log.segments()} == {day3.id, sharer.id}
    assert log.segments(kind="feedback") == []
    assert blobs.inner.exists(day1.blob_digest)
    assert not blobs.inner.exists(day2.blob_digest)
    assert not blobs.inner.exists(old_label.blob_digest)
    assert blobs.inner.exists(day3.blob_digest)

    assert log.delete_before(at(60 * 60)) == 0
    entries = store.audit.entries(AuditFilter(action=RETENTION_ACTION))
    assert len(entries) == 1
    assert entries[0].after is not None
    assert (entries[0].after["segments"], entries[0].after["rows"]) == (3, 3)
    assert len(store.events.read_after(0, types=["prediction.retention_applied"])) == 1
    assert store.audit.verify().ok
    with pytest.raises(InvalidArgumentError, match="cutoff"):
        log.delete_before(datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.fixture
def access(store: MetadataStore) -> AccessControl:
    control = AccessControl(store)
    control.grant("root", "root", "admin")
    control.grant("root", "dev", "developer")
    control.grant("root", "val", "viewer")
    return control


def governed(store: MetadataStore, blobs: Blobs, clock: ManualClock, access: AccessControl,
             actor: str) -> PredictionLog:
    return PredictionLog(store, blobs, actor, clock, access)


def test_writing_predictions_or_feedback_needs_write_and_a_refusal_writes_nothing(
        store: MetadataStore, blobs: Blobs, clock: ManualClock, access: AccessControl) -> None:
    viewer = governed(store, blobs, clock, access, "val")
    with pytest.raises(AccessDeniedError, match="val"):
        viewer.append([record(1)])
    with pytest.raises(AccessDeniedError, match="val"):
        viewer.log_feedback([FeedbackRecord("req-1", at(1), 1)])
    assert viewer.segments() == [] and list(blobs.inner.iter_objects()) == []
    assert governed(store, blobs, clock, access, "dev").append([record(1)]).rows == 1


@pytest.mark.parametrize("actor", ["val", "dev"])
def test_delete_before_needs_admin_and_a_refusal_deletes_nothing(
        store: MetadataStore, blobs: Blobs, clock: ManualClock, access: AccessControl,
        actor: str) -> None:
    segment = governed(store, blobs, clock, access, "dev").append([record(1)])
    with pytest.raises(AccessDeniedError, match=actor):
        governed(store, blobs, clock, access, actor).delete_before(at(60))
    assert [s.id for s in governed(store, blobs, clock, access, "val").segments()] == [segment.id]
    assert blobs.inner.exists(segment.blob_digest)
    assert governed(store, blobs, clock, access, "root").delete_before(at(60)) == 1


def test_delete_before_keeps_segments_under_an_active_legal_hold_until_it_is_released(
        store: MetadataStore, blobs: Blobs, clock: ManualClock, access: AccessControl) -> None:
    admin = governed(store, blobs, clock, access, "root")
    churn = admin.append([record(1)])
    fraud = admin.append([record(2, deployment="fraud")])
    label = admin.log_feedback([FeedbackRecord("req-1", at(1), 1)])
    holds = LegalHolds(store, access, "root")
    by_deployment = holds.add("prediction_log", "churn", "litigation")
    all_feedback = holds.add("feedback", "*", "audit")

    assert admin.delete_before(at(60)) == 1

    assert [s.id for s in admin.segments()] == [churn.id]
    assert [s.id for s in admin.segments(kind="feedback")] == [label.id]
    assert not blobs.inner.exists(fraud.blob_digest) and blobs.inner.exists(churn.blob_digest)
    [entry] = store.audit.entries(AuditFilter(action=RETENTION_ACTION))
    assert entry.after is not None and entry.after["held"] == 2
    holds.release(by_deployment.id)
    holds.release(all_feedback.id)
    assert admin.delete_before(at(60)) == 2
    assert admin.segments() == [] and admin.segments(kind="feedback") == []


class RetentionDuringRead(Blobs):
    """Runs retention between the reader's index query and its first blob read."""

    def __init__(self, inner: ContentAddressedStore) -> None:
        super().__init__(inner)
        self.before_first_read: Any = None

    def get_bytes(self, digest: str) -> bytes:
        hook, self.before_first_read = self.before_first_read, None
        if hook is not None:
            hook()
        return super().get_bytes(digest)


def test_a_read_racing_retention_skips_the_segments_retention_removed(
        store: MetadataStore, blobs: Blobs, clock: ManualClock) -> None:
    racing = RetentionDuringRead(blobs.inner)
    log = PredictionLog(store, racing, "tester", clock)
    log.append([record(1, minutes=0)])
    log.append([record(2, minutes=60)])
    racing.before_first_read = lambda: log.delete_before(at(30))
    assert ids(log.read()) == ["req-2"]


# ------------------------------------------------------------------------------ bad input


def _table(**changes: Any) -> pa.Table:
    columns: dict[str, Any] = {
        "request_id": ["a", "b"], "time": pa.array([at(0), at(1)], pa.timestamp("us", "UTC")),
        "deployment": ["churn", "churn"], "model_version": ["v1", "v1"],
        "inputs": ['{"x": 1}', "[]"], "outputs": ["1", "null"], "latency_ms": [1.0, 2.0]}
    columns.update(changes)
    return pa.table({k: v for k, v in columns.items() if v is not None})


BAD_INPUTS = [
    pytest.param([record(0), record(1, time=datetime(2026, 1, 1))],  # noqa: DTZ001
                 r"records\[1\]\.time", id="naive-datetime"),
    pytest.param([record(0, request_id="")], r"records\[0\]\.request_id", id="empty-request-id"),
    pytest.param([record(0, deployment="bad name")], r"records\[0\]\.deployment",
                 id="invalid-deployment"),
    pytest.param([record(0, model_version="../v1")], r"records\[0\]\.model_version",
                 id="invalid-model-version"),
    pytest.param([record(0, latency_ms=-1.0)], r"records\[0\]\.latency_ms", id="negative-latency"),
    pytest.param([record(0, latency_ms=float("nan"))], r"records\[0\]\.latency_ms",
                 id="nan-latency"),
    pytest.param([record(0, inputs={"x": {1, 2}})], r"records\[0\]\.inputs", id="set-inputs"),
    pytest.param([record(0, outputs=float("inf"))], r"records\[0\]\.outputs", id="inf-outputs"),
    pytest.param([record(0), "not a record"], r"records\[1\]", id="not-a-record"),
    pytest.param([], "records", id="no-rows"),
    pytest.param(_table(latency_ms=None), r"records\.latency_ms", id="missing-column"),
    pytest.param(_table(extra=[1, 2]), r"records\.extra", id="unknown-column"),
    pytest.param(_table(time=pa.array([at(0).replace(tzinfo=None)] * 2)), r"records\.time",
                 id="naive-time-column"),
    pytest.param(_table(inputs=['{"x": 1}', "{nope"]), r"records\.inputs.*row 1",
                 id="non-json-text"),
    pytest.param(_table(outputs=["1", "NaN"]), r"records\.outputs", id="nan-json-text"),
    pytest.param(_table(request_id=["a", ""]), r"records\.request_id.*row 1",
                 id="empty-request-id-column"),
    pytest.param(_table(deployment=["churn", "no/slash"]), r"records\.deployment.*row 1",
                 id="invalid-deployment-column"),
    pytest.param(_table(latency_ms=[1.0, -0.5]), r"records\.latency_ms.*row 1",
                 id="negative-latency-column"),
    pytest.param(_table(request_id=pa.array(["a", None])), r"records\.request_id.*null",
                 id="null-request-id"),
    pytest.param(_table().slice(0, 0), "records.*no rows", id="empty-table"),
]


@pytest.mark.parametrize(("records", "field"), BAD_INPUTS)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
        log: PredictionLog, store: MetadataStore, blobs: Blobs, records: Any,
        field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        log.append(records)
    assert log.segments() == []
    assert list(blobs.inner.iter_objects()) == []
    assert store.events.read_after(0, types=[SEGMENT_WRITTEN]) == []


def test_bad_feedback_and_bad_windows_are_refused_naming_the_field(log: PredictionLog) -> None:
    with pytest.raises(InvalidArgumentError, match=r"feedback\[0\]\.label"):
        log.log_feedback([FeedbackRecord("r", at(0), object())])
    with pytest.raises(InvalidArgumentError, match=r"feedback\.label"):
        log.log_feedback(pa.table({"request_id": ["r"], "time": pa.array([at(0)]),
                                   "label": ["{bad"]}))
    with pytest.raises(InvalidArgumentError, match="start"):
        log.read(PredictionWindow(start=datetime(2026, 1, 1)))  # noqa: DTZ001
    with pytest.raises(InvalidArgumentError, match="start"):
        log.read(PredictionWindow(start=at(5), end=at(1)))
    with pytest.raises(InvalidArgumentError, match="deployment"):
        log.read(PredictionWindow(deployment="a b"))
    with pytest.raises(InvalidArgumentError, match="columns"):
        log.read(options=ReadOptions(columns=("label",)))
    assert log.segments(kind="feedback") == []


def test_a_database_error_while_reading_leaves_as_a_backend_error(
        log: PredictionLog, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    import loopline.data.prediction_log as module

    def locked(*_: Any) -> Any:
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(module, "find_segments", locked)
    with pytest.raises(BackendError, match="database is locked"):
        log.segments()
    with pytest.raises(BackendError):
        list(log.read_segments())
