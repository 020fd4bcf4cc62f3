"""Serving health on every backend: requests, errors, error rate, throughput and latency
percentiles per version and overall, merged across instances and buckets from the stored
serving stats; bad windows refused naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.monitoring.health import health
from loopline.store import MetadataStore
from loopline.store.serving_stats import StatsRow, add_stats

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
V1, V2 = "models:/churn/1", "models:/churn/2"
RELATIVE = 0.02  # the sketches' relative accuracy (alpha 0.01), with room


def stats(version: str, instance: str, bucket: int, latencies: np.ndarray, errors: int,
          deployment: str = "churn") -> StatsRow:
    return StatsRow(deployment, version, instance, T0 + timedelta(seconds=10 * bucket),
                    len(latencies), errors, QuantileSketch.of(latencies).to_dict())


@pytest.fixture
def latencies() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {"v1a": rng.lognormal(2.0, 0.5, 300), "v1b": rng.lognormal(2.0, 0.5, 200),
            "v2": rng.lognormal(3.0, 0.3, 100)}


@pytest.fixture
def written(store: MetadataStore, latencies: dict[str, np.ndarray]) -> MetadataStore:
    add_stats(store, [
        stats(V1, "a", 0, latencies["v1a"][:150], 3),
        stats(V1, "a", 1, latencies["v1a"][150:], 2),
        stats(V1, "b", 1, latencies["v1b"], 5),
        stats(V2, "a", 2, latencies["v2"], 10),
        stats(V1, "a", 6, np.full(50, 999.0), 50),  # after the window
        stats(V1, "a", 0, np.full(50, 999.0), 50, deployment="other"),
    ])
    return store


def test_health_per_version_merges_instances_and_buckets(
        written: MetadataStore, latencies: dict[str, np.ndarray]) -> None:
    report = health(written, "churn", None, T0, T0 + timedelta(seconds=50))
    assert set(report.versions) == {V1, V2}
    first = report.versions[V1]
    both = np.concatenate([latencies["v1a"], latencies["v1b"]])
    assert (first.requests, first.errors) == (500, 10)
    assert first.error_rate == pytest.approx(10 / 500)
    assert first.throughput == pytest.approx(500 / 50)
    for found, q in ((first.p50_ms, 50), (first.p95_ms, 95), (first.p99_ms, 99)):
        assert found == pytest.approx(np.percentile(both, q, method="inverted_cdf"),
                                      rel=RELATIVE)
    second = report.versions[V2]
    assert (second.requests, second.errors, second.error_rate) == (100, 10, 0.1)
    assert second.p50_ms == pytest.approx(np.median(latencies["v2"]), rel=RELATIVE)


def test_overall_health_merges_every_version(written: MetadataStore,
                                             latencies: dict[str, np.ndarray]) -> None:
    report = health(written, "churn", None, T0, T0 + timedelta(seconds=50))
    everything = np.concatenate(list(latencies.values()))
    assert (report.overall.requests, report.overall.errors) == (600, 20)
    assert report.overall.error_rate == pytest.approx(20 / 600)
    assert report.overall.throughput == pytest.approx(600 / 50)
    assert report.overall.p99_ms == pytest.approx(
        np.percentile(everything, 99, method="inverted_cdf"), rel=RELATIVE)
    assert report.overall.p99_ms > report.versions[V1].p99_ms  # the slow version counts


def test_health_of_one_version_leaves_the_others_out(written: MetadataStore) -> None:
    report = health(written, "churn", V2, T0, T0 + timedelta(seconds=50))
    assert set(report.versions) == {V2}
    assert (report.overall.requests, report.overall.errors) == (100, 10)


def test_a_window_without_traffic_has_zero_counts_and_no_percentiles(
        written: MetadataStore) -> None:
    report = health(written, "churn", None, T0 + timedelta(hours=1),
                    T0 + timedelta(hours=2))
    assert report.versions == {}
    assert report.overall.to_dict() == {"requests": 0, "errors": 0, "error_rate": 0.0,
                                        "throughput": 0.0, "p50_ms": None, "p95_ms": None,
                                        "p99_ms": None}


def test_the_report_is_json_ready(written: MetadataStore) -> None:
    data = health(written, "churn", None, T0, T0 + timedelta(seconds=50)).to_dict()
    assert data["deployment"] == "churn"
    assert data["start"] == T0.isoformat()
    assert data["versions"][V1]["requests"] == 500


@pytest.mark.parametrize(("start", "end", "version", "field"), [
    (T0, T0, None, "end"),
    (T0 + timedelta(seconds=1), T0, None, "end"),
    (T0.replace(tzinfo=None), T0 + timedelta(seconds=10), None, "start"),
    (T0, T0 + timedelta(seconds=10), "", "model_version"),
])
def test_a_bad_window_or_version_is_refused_naming_the_field(
        store: MetadataStore, start: datetime, end: datetime, version: str | None,
        field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        health(store, "churn", version, start, end)
    assert caught.value.field == field


def test_a_bad_deployment_name_is_refused(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        health(store, "../churn", None, T0, T0 + timedelta(seconds=10))
    assert caught.value.field == "deployment"
