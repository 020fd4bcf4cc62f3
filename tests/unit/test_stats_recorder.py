"""The stats recorder: cumulative per-bucket counts and sketches, retries, bounds, threads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from loopline.core.clock import ManualClock
from loopline.core.errors import BackendError, InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.serving.stats_recorder import StatsRecorder, default_instance
from loopline.store import MetadataStore
from loopline.store.serving_stats import StatsRow, window_rows

T0 = datetime(2026, 1, 1, 12, 0, 3, tzinfo=UTC)
V1, V2 = "models:/m/1", "models:/m/2"


class Sink:
    def __init__(self) -> None:
        self.calls: list[list[StatsRow]] = []
        self.fail = False

    def __call__(self, rows: Sequence[StatsRow]) -> None:
        if self.fail:
            raise BackendError("database is down")
        self.calls.append(list(rows))

    def last(self) -> dict[tuple[str, str, datetime], StatsRow]:
        return {(r.deployment, r.model_version, r.bucket_start): r for r in self.calls[-1]}


def recorder(sink: Sink, clock: ManualClock, **kwargs: float) -> StatsRecorder:
    return StatsRecorder(sink, "host-1", clock, flush_seconds=None, **kwargs)


def test_requests_errors_and_latencies_are_grouped_by_version_and_floored_bucket() -> None:
    sink, clock = Sink(), ManualClock(T0)
    stats = recorder(sink, clock)
    for ms in (1.0, 2.0, 3.0):
        stats.record("shop", V1, False, ms)
    stats.record("shop", V1, True, 100.0)
    stats.record("shop", V2, False, 5.0)
    clock.advance(timedelta(seconds=8))  # 12:00:11 -> next 10 s bucket
    stats.record("shop", V1, False, 4.0)
    assert stats.flush()
    rows = sink.last()
    first = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    second = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert set(rows) == {("shop", V1, first), ("shop", V2, first), ("shop", V1, second)}
    row = rows[("shop", V1, first)]
    assert (row.requests, row.errors, row.instance) == (4, 1, "host-1")
    sketch = QuantileSketch.from_dict(dict(row.latency_sketch))
    assert sketch.count == 4
    assert sketch.quantile(1.0) == pytest.approx(100.0, rel=0.02)
    assert row.bucket_start.tzinfo is not None


def test_each_flush_sends_only_changed_cells_with_their_cumulative_state() -> None:
    sink, clock = Sink(), ManualClock(T0)
    stats = recorder(sink, clock)
    stats.record("shop", V1, False, 1.0)
    stats.record("shop", V2, False, 1.0)
    stats.flush()
    stats.record("shop", V1, True, 2.0)
    stats.flush()
    assert [(r.model_version, r.requests, r.errors) for r in sink.calls[-1]] == [(V1, 2, 1)]
    assert QuantileSketch.from_dict(dict(sink.calls[-1][0].latency_sketch)).count == 2
    calls = len(sink.calls)
    assert stats.flush()
    assert len(sink.calls) == calls  # nothing changed, nothing written
    assert stats.pending() == 0


def test_a_failed_flush_keeps_everything_for_the_next_one() -> None:
    sink, clock = Sink(), ManualClock(T0)
    stats = recorder(sink, clock)
    stats.record("shop", V1, False, 1.0)
    sink.fail = True
    assert not stats.flush()
    stats.record("shop", V1, False, 2.0)
    assert not stats.flush()
    assert stats.flush_failures == 2
    assert stats.pending() == 1
    sink.fail = False
    assert stats.flush()
    (row,) = sink.calls[-1]
    assert row.requests == 2
    assert QuantileSketch.from_dict(dict(row.latency_sketch)).count == 2


def test_written_cells_of_closed_buckets_are_forgotten() -> None:
    sink, clock = Sink(), ManualClock(T0)
    stats = recorder(sink, clock, bucket_seconds=10)
    stats.record("shop", V1, False, 1.0)
    stats.flush()
    clock.advance(timedelta(seconds=30))
    stats.flush()
    stats.record("shop", V1, False, 1.0)
    stats.flush()
    assert [r.bucket_start.second for r in sink.calls[-1]] == [30]
    assert len(stats._cells) == 1


def test_beyond_the_cap_the_oldest_unwritten_buckets_are_dropped_and_counted() -> None:
    sink, clock = Sink(), ManualClock(T0)
    sink.fail = True
    stats = StatsRecorder(sink, "host-1", clock, bucket_seconds=1, flush_seconds=None,
                          max_buckets=3)
    for _ in range(5):
        stats.record("shop", V1, False, 1.0)
        clock.advance(timedelta(seconds=1))
    stats.flush()
    assert stats.dropped_buckets == 2
    sink.fail = False
    stats.flush()
    assert sorted(r.bucket_start.second for r in sink.calls[-1]) == [5, 6, 7]


def test_records_from_many_threads_are_all_counted_and_close_flushes() -> None:
    sink, clock = Sink(), ManualClock(T0)
    stats = StatsRecorder(sink, "host-1", clock, flush_seconds=0.01)

    def work() -> None:
        for i in range(2000):
            stats.record("shop", V1, i % 100 == 0, 1.0 + i % 7)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats.close()
    latest = {}
    for call in sink.calls:
        for row in call:
            latest[row.model_version] = row
    assert latest[V1].requests == 8000
    assert latest[V1].errors == 80
    assert QuantileSketch.from_dict(dict(latest[V1].latency_sketch)).count == 8000
    assert stats.pending() == 0


def test_bad_settings_are_refused_naming_the_field() -> None:
    for kwargs, field in (({"bucket_seconds": 0}, "bucket_seconds"),
                          ({"flush_seconds": -1}, "flush_seconds"),
                          ({"max_buckets": 0}, "max_buckets")):
        with pytest.raises(InvalidArgumentError, match=field):
            StatsRecorder(Sink(), "i", ManualClock(T0), **kwargs)


def test_default_instance_names_differ_between_recorders() -> None:
    assert default_instance() != default_instance()
    assert 0 < len(default_instance()) <= 128


def test_for_store_writes_cumulative_rows_that_a_retry_does_not_double(
        store: MetadataStore) -> None:
    clock = ManualClock(T0)
    stats = StatsRecorder.for_store(store, "host-1", clock)
    try:
        for ms in (1.0, 2.0):
            stats.record("shop", V1, False, ms)
        stats.flush()
        stats.record("shop", V1, True, 3.0)
        stats._mark_dirty(list(stats._cells))  # a repeated flush resends the same state
        stats.flush()
        stats.flush()
    finally:
        stats.close()
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    (row,) = window_rows(store.engine, "shop", start, start + timedelta(minutes=1))
    assert (row.requests, row.errors, row.instance) == (3, 1, "host-1")
    assert QuantileSketch.from_dict(dict(row.latency_sketch)).count == 3
