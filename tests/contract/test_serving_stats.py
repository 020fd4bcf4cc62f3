"""Serving stats on every backend: cumulative upserts, stale flushes ignored, window reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from loopline.core.deployments import WindowStats
from loopline.core.errors import InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.data.serving_windows import window
from loopline.store import MetadataStore
from loopline.store.models import ROLLOUT_VERDICTS
from loopline.store.serving_stats import (
    StatsRow,
    add_stats,
    latest_verdict_end,
    prune_stats,
    window_rows,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
V1, V2 = "models:/churn/1", "models:/churn/2"


def row(instance: str = "a", bucket: int = 0, requests: int = 10, errors: int = 1,
        version: str = V1, latencies: list[float] | None = None,
        deployment: str = "churn") -> StatsRow:
    values = latencies if latencies is not None else [5.0] * requests
    return StatsRow(deployment, version, instance, T0 + timedelta(seconds=10 * bucket),
                    requests, errors, QuantileSketch.of(values).to_dict())


def test_rows_read_back_in_key_order_within_the_window(store: MetadataStore) -> None:
    add_stats(store, [row("b", 1), row("a", 0), row("a", 1, version=V2), row("a", 6),
                      row("a", 0, deployment="other")])
    found = window_rows(store.engine, "churn", T0, T0 + timedelta(minutes=1))
    assert [(r.model_version, r.instance, r.bucket_start) for r in found] == [
        (V1, "a", T0), (V1, "b", T0 + timedelta(seconds=10)),
        (V2, "a", T0 + timedelta(seconds=10))]
    assert found[0] == row("a", 0)
    assert found[0].bucket_start.tzinfo is not None


def test_a_second_flush_replaces_the_row_with_the_cumulative_state(
        store: MetadataStore) -> None:
    add_stats(store, [row(requests=10, errors=1)])
    add_stats(store, [row(requests=25, errors=3, latencies=[5.0] * 20 + [50.0] * 5)])
    add_stats(store, [row(requests=25, errors=3, latencies=[5.0] * 20 + [50.0] * 5)])
    [stored] = window_rows(store.engine, "churn", T0, T0 + timedelta(seconds=10))
    assert (stored.requests, stored.errors) == (25, 3)
    assert QuantileSketch.from_dict(dict(stored.latency_sketch)).count == 25


def test_a_stale_flush_with_fewer_requests_leaves_the_row_as_it_is(
        store: MetadataStore) -> None:
    add_stats(store, [row(requests=30, errors=2)])
    add_stats(store, [row(requests=10, errors=9)])
    [stored] = window_rows(store.engine, "churn", T0, T0 + timedelta(seconds=10))
    assert (stored.requests, stored.errors) == (30, 2)


def test_window_merges_instances_and_buckets_per_version(store: MetadataStore) -> None:
    add_stats(store, [row("a", 0, 10, 1), row("b", 0, 20, 0, latencies=[9.0] * 20),
                      row("a", 1, 30, 3), row("a", 0, 40, 4, version=V2)])
    merged = window(store, "churn", T0, T0 + timedelta(seconds=20))
    assert set(merged) == {V1, V2}
    assert (merged[V1].requests, merged[V1].errors) == (60, 4)
    assert QuantileSketch.from_dict(dict(merged[V1].latency_sketch)).count == 60
    assert merged[V2].error_rate == 0.1
    assert window(store, "churn", T0 + timedelta(hours=1), T0 + timedelta(hours=2)) == {}
    assert isinstance(merged[V1], WindowStats)


def test_empty_batch_writes_nothing_and_no_verdict_means_no_window_end(
        store: MetadataStore) -> None:
    add_stats(store, [])
    assert window_rows(store.engine, "churn", T0, T0 + timedelta(days=1)) == []
    assert latest_verdict_end(store.engine, "churn") is None


BAD_ROWS = [
    (row(requests=-1, latencies=[]), "rows[0].requests"),
    (row(requests=2, errors=3, latencies=[1.0]), "rows[0].errors"),
    (row(deployment="no spaces"), "rows[0].deployment"),
    (row(instance=""), "rows[0].instance"),
    (row(version="x" * 257), "rows[0].model_version"),
    (StatsRow("churn", V1, "a", datetime(2026, 1, 1), 1, 0, {}),  # noqa: DTZ001 - the point
     "rows[0].bucket_start"),
    (StatsRow("churn", V1, "a", T0, True, 0, {}), "rows[0].requests"),  # type: ignore[arg-type]
]


def test_bad_rows_are_refused_naming_the_field_and_nothing_is_written(
        store: MetadataStore) -> None:
    for bad, field in BAD_ROWS:
        with pytest.raises(InvalidArgumentError) as caught:
            add_stats(store, [row("ok", requests=1, latencies=[1.0]), bad])
        assert caught.value.field == field.replace("rows[0]", "rows[1]")
    assert window_rows(store.engine, "churn", T0 - timedelta(days=400), T0 + timedelta(1)) == []


def test_one_key_twice_in_a_batch_is_refused(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="twice"):
        add_stats(store, [row(requests=1, latencies=[1.0]), row(requests=2, latencies=[1.0])])


def test_bad_window_bounds_are_refused_naming_the_bound(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        window_rows(store.engine, "churn", T0, T0 - timedelta(seconds=1))
    assert caught.value.field == "end"
    with pytest.raises(InvalidArgumentError) as caught:
        window_rows(store.engine, "churn", datetime(2026, 1, 1), T0)  # noqa: DTZ001
    assert caught.value.field == "start"


def test_latest_verdict_end_can_be_limited_to_decisive_verdicts(store: MetadataStore) -> None:
    with store.write("t") as uow:
        for index, (verdict, minutes) in enumerate((("pass", 1), ("inconclusive", 3),
                                                    ("fail", 2))):
            uow.session.connection().execute(sa.insert(ROLLOUT_VERDICTS), {
                "id": f"v{index}", "deployment": "churn", "revision": 2, "step": 0,
                "window_start": T0, "window_end": T0 + timedelta(minutes=minutes),
                "verdict": verdict, "numbers": {}, "decided_at": T0})
    assert latest_verdict_end(store.engine, "churn") == T0 + timedelta(minutes=3)
    assert latest_verdict_end(store.engine, "churn", ("pass", "fail")) == \
        T0 + timedelta(minutes=2)
    assert latest_verdict_end(store.engine, "churn", ("pass",)) == T0 + timedelta(minutes=1)
    assert latest_verdict_end(store.engine, "other", ("pass", "fail")) is None


def test_prune_deletes_only_the_deployments_buckets_before_the_cutoff(
        store: MetadataStore) -> None:
    add_stats(store, [row("a", 0), row("b", 0), row("a", 1), row("a", 2),
                      row("a", 0, deployment="other")])
    assert prune_stats(store, "churn", T0 + timedelta(seconds=20)) == 3
    left = window_rows(store.engine, "churn", T0, T0 + timedelta(minutes=1))
    assert [r.bucket_start for r in left] == [T0 + timedelta(seconds=20)]
    assert len(window_rows(store.engine, "other", T0, T0 + timedelta(minutes=1))) == 1
    with pytest.raises(InvalidArgumentError, match="before"):
        prune_stats(store, "churn", datetime(2026, 3, 1))  # noqa: DTZ001 - naive on purpose
    with pytest.raises(InvalidArgumentError, match="deployment"):
        prune_stats(store, "no such/name", T0)
