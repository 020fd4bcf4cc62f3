"""The server's Prometheus metrics: names, labels, values, and a registry of their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from loopline.serving.metrics import (
    CONTENT_TYPE,
    MULTIPROCESS_ENV,
    ServingMetrics,
    shared_metrics_dir,
)


def samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_requests_are_counted_by_deployment_version_and_status_with_latency() -> None:
    metrics = ServingMetrics()
    for seconds in (0.0003, 0.002, 0.4):
        metrics.observe("shop", "models:/m/1", 200, seconds)
    metrics.observe("shop", "models:/m/2", 422, 0.001)
    got = samples(metrics)
    v1 = (("code", "200"), ("deployment", "shop"), ("model_version", "models:/m/1"))
    assert got[("loopline_requests_total", v1)] == 3
    assert got[("loopline_requests_total", (("code", "422"), ("deployment", "shop"),
                                            ("model_version", "models:/m/2")))] == 1
    latency = (("deployment", "shop"), ("model_version", "models:/m/1"))
    assert got[("loopline_request_seconds_count", latency)] == 3
    assert abs(got[("loopline_request_seconds_sum", latency)] - 0.4023) < 1e-9
    assert got[("loopline_request_seconds_bucket", (*latency[:1], ("le", "0.0005"),
                                                    *latency[1:]))] == 1


def test_batches_gauges_and_swap_counters_are_exported() -> None:
    metrics = ServingMetrics()
    metrics.batch("models:/m/1", 7)
    metrics.batch("models:/m/1", 1)
    metrics.set_queue_depth(12)
    metrics.set_dropped(3)
    metrics.set_dropped(5)
    metrics.table_swapped()
    metrics.load_failed()
    metrics.load_failed(2)
    got = samples(metrics)
    assert got[("loopline_batch_rows_count", (("model_version", "models:/m/1"),))] == 2
    assert got[("loopline_batch_rows_sum", (("model_version", "models:/m/1"),))] == 8
    assert got[("loopline_prediction_queue_depth", ())] == 12
    assert got[("loopline_prediction_log_dropped", ())] == 5
    assert got[("loopline_table_swaps_total", ())] == 1
    assert got[("loopline_model_load_failures_total", ())] == 3


def test_each_instance_has_its_own_registry_and_the_global_one_is_untouched() -> None:
    first, second = ServingMetrics(), ServingMetrics()
    first.table_swapped()
    assert samples(second)[("loopline_table_swaps_total", ())] == 0
    assert REGISTRY.get_sample_value("loopline_table_swaps_total") is None


def test_render_is_prometheus_text() -> None:
    text = ServingMetrics().render().decode("utf-8")
    assert "# TYPE loopline_requests_total counter" in text
    assert "# TYPE loopline_request_seconds histogram" in text
    assert CONTENT_TYPE.startswith("text/plain")


def test_shared_metrics_dir_is_made_for_the_run_and_removed_unless_the_caller_gave_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_ENV, raising=False)
    with shared_metrics_dir() as made:
        assert os.environ[MULTIPROCESS_ENV] == made and Path(made).is_dir()
    assert MULTIPROCESS_ENV not in os.environ and not Path(made).exists()
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    with shared_metrics_dir() as given:
        assert given == str(tmp_path)
    assert os.environ[MULTIPROCESS_ENV] == str(tmp_path) and tmp_path.is_dir()
