"""The benchmarks run end to end in --quick mode and each prints one well-formed report.

Only the shape and sanity of the figures are checked, never a timing threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "store.py"
POSTGRES_ENV = "LOOPLINE_TEST_POSTGRES_URL"
ARTIFACT_RATIOS = {"put_vs_copy", "put_vs_hash_and_write", "second_put_vs_read_and_hash",
                   "get_vs_read_and_hash", "get_to_file_vs_copy"}
METADATA_RATIOS = {"audit_vs_raw_insert", "events_vs_raw_insert",
                   "batched_events_vs_raw_batched"}


def _run_quick(tmp_path: Path) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("LOOPLINE_") or k == POSTGRES_ENV}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--tmpdir", str(tmp_path)],
                          env=environment, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _assert_positive(figures: dict[str, Any], *names: str) -> None:
    for name in names:
        assert isinstance(figures[name], int | float) and figures[name] > 0, (name, figures)


def _check_artifacts(artifacts: dict[str, Any]) -> None:
    for mode in ("plain", "encrypted"):
        _assert_positive(artifacts[mode], "put_mb_s", "second_put_mb_s", "get_stream_mb_s",
                         "get_to_file_mb_s", "put_peak_traced_mib")
        assert set(artifacts["ratios"][mode]) == ARTIFACT_RATIOS
        _assert_positive(artifacts["ratios"][mode], *ARTIFACT_RATIOS)
    _assert_positive(artifacts["baseline"], "copy_fsync_mb_s", "hash_and_write_fsync_mb_s",
                     "read_and_hash_mb_s")


def _check_backend(figures: dict[str, Any]) -> None:
    _assert_positive(figures, "audit_appends_per_s", "events_per_s", "batched_events_per_s",
                     "dispatch_events_per_s", "audit_verify_entries_per_s")
    _assert_positive(figures["baseline"], "raw_insert_per_s", "raw_insert_batched_rows_per_s")
    assert set(figures["ratios"]) >= METADATA_RATIOS
    _assert_positive(figures["ratios"], *METADATA_RATIOS)
    assert figures["audit_chain_ok"] is True
    lag = figures["delivery_lag"]
    assert lag["missing"] == 0 and lag["samples"] > 0
    assert 0 <= lag["median_ms"] <= lag["p95_ms"] <= lag["max_ms"]


def test_quick_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_quick(tmp_path)
    assert report["machine"]["cpu_count"]
    _check_artifacts(report["artifacts"])
    _check_backend(report["metadata"]["sqlite"])
    postgres = report["metadata"]["postgresql"]
    if os.environ.get(POSTGRES_ENV):
        _check_backend(postgres)
    else:
        assert "skipped" in postgres
    assert list(tmp_path.iterdir()) == [], "the benchmark left temporary files behind"


# -- benchmarks/lineage.py and benchmarks/data.py --------------------------------------------

BENCHMARKS = SCRIPT.parent
WALKS = ("upstream_random", "downstream_random", "upstream_from_predictions",
         "downstream_from_sources")


def _run_script(name: str, tmp_path: Path, *options: str) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("LOOPLINE_") or k == POSTGRES_ENV}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--quick", "--tmpdir", str(tmp_path), *options],
        env=environment, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert list(tmp_path.iterdir()) == [], "the benchmark left temporary files behind"
    return report


def _check_postgres(section: dict[str, Any], check: Any) -> None:
    if os.environ.get(POSTGRES_ENV):
        assert section["schema"].startswith("lb_")
        check(section)
    else:
        assert "skipped" in section


def _check_lineage_backend(figures: dict[str, Any]) -> None:
    _assert_positive(figures, "build_s", "build_nodes_per_s")
    for walk in WALKS:
        assert figures[walk]["walks"] > 0
        timing = figures[walk]["loopline"]
        _assert_positive(timing, "median_ms", "p95_ms", "max_ms")
        assert timing["median_ms"] <= timing["p95_ms"] <= timing["max_ms"]


def test_quick_lineage_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("lineage.py", tmp_path)
    assert report["graph"]["nodes"] == report["settings"]["nodes"] > 0
    _check_lineage_backend(report["sqlite"])
    _check_postgres(report["postgresql"], _check_lineage_backend)


def _check_snapshots(snapshots: dict[str, Any]) -> None:
    for kind in ("parquet", "csv"):
        figures = snapshots[kind]
        _assert_positive(figures, "source_mib", "rows", "snapshot_mb_s", "snapshot_rows_per_s")
        _assert_positive(figures["baseline"], "pandas_read_describe_mb_s",
                         "arrow_read_write_zstd_mb_s")
        _assert_positive(figures["ratios"], "snapshot_vs_pandas_read_describe",
                         "snapshot_vs_arrow_read_write")


def _check_memory(memory: dict[str, Any]) -> None:
    assert memory["rows"] >= 10 * memory["batch_rows"]
    for run in ("streaming", "streaming_pre_buffer_off", "whole_file_baseline"):
        _assert_positive(memory[run], "peak_rss_mib", "rss_after_imports_mib", "rows_per_s")
        assert memory[run]["peak_rss_mib"] >= memory[run]["rss_after_imports_mib"]
    _assert_positive(memory["ratios"], "streaming_peak_vs_whole_file_peak")


def _check_predictions(figures: dict[str, Any]) -> None:
    _assert_positive(figures, "arrow_rows_per_s", "records_rows_per_s", "writer_rows_per_s",
                     "writer_submit_rows_per_s", "writer_segments")
    _assert_positive(figures["ratios"], "arrow_vs_write_table", "records_vs_write_table",
                     "writer_vs_write_table")


def _check_data_lineage(figures: dict[str, Any]) -> None:
    _assert_positive(figures, "upstream_median_ms", "upstream_p95_ms")
    _check_lineage_backend(figures)


def test_quick_data_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("data.py", tmp_path)
    assert report["machine"]["cpu_count"]
    _check_snapshots(report["snapshots"])
    profiles = report["profiles"]
    _assert_positive(profiles, "profile_rows_per_s", "profile_numeric_columns_rows_per_s")
    _assert_positive(profiles["baseline"], "describe_all_rows_per_s",
                     "describe_numeric_rows_per_s")
    _assert_positive(profiles["ratios"], "profile_vs_describe_all",
                     "profile_vs_describe_numeric")
    _check_memory(report["memory"])
    predictions = report["predictions"]
    _assert_positive(predictions["baseline"], "write_table_zstd_rows_per_s")
    _check_predictions(predictions["sqlite"])
    _check_postgres(predictions["postgresql"], _check_predictions)
    lineage = report["lineage"]
    assert lineage["nodes"] == report["settings"]["lineage_nodes"]
    _check_data_lineage(lineage["sqlite"])
    _check_postgres(lineage["postgresql"], _check_data_lineage)


# -- benchmarks/pipelines.py ---------------------------------------------------------------------


def _check_engine_shapes(section: dict[str, Any]) -> None:
    for shape in ("sequential", "fan_out"):
        figures = section[shape]
        assert figures["tasks"] > 0
        _assert_positive(figures["bare_thread_pool"], "seconds", "ms_per_task")
        for run in ("engine", "engine_no_provenance"):
            _assert_positive(figures[run], "seconds", "ms_per_task", "slowdown_vs_bare")
            assert isinstance(figures[run]["overhead_ms_per_task"], int | float)


def test_quick_pipelines_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("pipelines.py", tmp_path)
    assert report["machine"]["cpu_count"]
    _check_engine_shapes(report["sqlite"])
    _check_postgres(report["postgresql"], _check_engine_shapes)
    assert "skipped" in report["process"] and "skipped" in report["ray"]  # --quick
    faults = report["faults"]
    assert faults["tasks"] == report["settings"]["fault_tasks"] > 0
    assert 0 <= faults["success_rate"] <= 1 and faults["expected_success_rate"] == 0.9919
    assert 1 <= faults["attempts_median"] <= faults["attempts_max"] <= 4
    assert faults["retry_sleep_total_s"] == 0  # retry_delay=0 must not sleep
    targets = report["targets"]
    for shape in ("sequential", "fan_out"):
        overhead = report["sqlite"][shape]["engine"]["overhead_ms_per_task"]
        assert targets[f"{shape}_overhead_ms_per_task"] == overhead
        assert targets[f"{shape}_met"] is (overhead <= targets["overhead_ms_per_task_max"])


# -- benchmarks/registry.py ----------------------------------------------------------------------

REGISTRY_RATIOS = {"register_vs_raw_dumps", "register_vs_raw_dumps_fsync", "load_vs_raw_loads",
                   "verify_vs_fresh_process_floor", "verify_vs_raw_load_predict"}


def _check_latency(timing: dict[str, Any]) -> None:
    _assert_positive(timing, "median_ms", "p95_ms", "max_ms")
    assert timing["median_ms"] <= timing["p95_ms"] <= timing["max_ms"]


def _check_registry_backend(figures: dict[str, Any]) -> None:
    assert figures["versions_registered"] >= 2 and figures["artifact_bytes"] > 0
    for name in ("register", "resolve", "load", "verify"):
        _check_latency(figures[name])
    for name in ("raw_dumps", "raw_dumps_fsync", "raw_loads", "raw_load_predict"):
        _check_latency(figures["baseline"][name])
    assert set(figures["ratios"]) == REGISTRY_RATIOS
    _assert_positive(figures["ratios"], *REGISTRY_RATIOS)


def test_quick_registry_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("registry.py", tmp_path)
    assert report["machine"]["skops"]
    _check_latency(report["fresh_process_floor"])
    models = report["models"]
    assert set(models) == {"iris_logreg", "random_forest"}
    for model in models.values():
        assert model["raw_skops_bytes"] > 0
        _check_registry_backend(model["sqlite"])
        assert model["sqlite"]["resolve"]["runs"] == report["settings"]["resolve_repeat"]
        _check_postgres(model["postgresql"], _check_registry_backend)
    assert models["random_forest"]["untrusted_types_skops_reports"]  # skops' Tree


# -- benchmarks/governance.py --------------------------------------------------------------------

GATED_TIMINGS = ("alias_move_governed", "alias_move_no_policy", "gate_check",
                 "gate_check_no_policy", "gather_facts")
GATED_RATIOS = {"alias_move_governed_vs_no_policy", "gate_check_vs_no_policy",
                "gate_check_share_of_governed_move"}


def _check_governance_backend(figures: dict[str, Any]) -> None:
    gated = figures["gated_action"]
    assert gated["rules"] == 50 and gated["moves"] > 0
    for name in GATED_TIMINGS:
        _check_latency(gated[name])
    assert set(gated["ratios"]) == GATED_RATIOS
    _assert_positive(gated["ratios"], *GATED_RATIOS)
    report = figures["report"]
    assert report["versions"] == 100 and report["models"] == 10
    _assert_positive(report, "report_s", "report_ms_per_version", "write_versions_s")
    _assert_positive(report["baseline"], "list_floor_s")
    _assert_positive(report["ratios"], "report_vs_list_floor")
    assert report["sample"]["examined"] == 10
    assert report["violation_rate_matches_planted"] is True
    assert report["violation_rate"] == report["planted_violation_rate"] == 0.2
    assert report["in_use"] == report["in_use_planted"] > 0
    assert report["missing_counts"]["run"] == 100  # no version names a producing run


def test_quick_governance_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("governance.py", tmp_path)
    assert report["machine"]["cpu_count"] and report["settings"]["rules"] == 50
    evaluation = report["evaluation"]
    assert evaluation["rules"] == 50 and evaluation["allowed"] is True
    assert sum(evaluation["rule_kinds"].values()) == 50 and len(evaluation["rule_kinds"]) == 7
    timing = evaluation["evaluate"]
    _assert_positive(timing, "median_us", "p95_us", "max_us")
    assert timing["median_us"] <= timing["p95_us"] <= timing["max_us"]
    _assert_positive(evaluation["baseline"]["hand_written"], "median_us")
    _assert_positive(evaluation["ratios"], "evaluate_vs_hand_written")
    _assert_positive(evaluation["load_policy_set"], "first_ms", "median_ms")
    _check_governance_backend(report["sqlite"])
    _check_postgres(report["postgresql"], _check_governance_backend)


# -- benchmarks/serving.py -----------------------------------------------------------------------

SERVING_SECTIONS = ("client_ceiling", "thin_reference", "loopline_inline", "loopline_batched")


def _check_percentiles(figures: dict[str, Any]) -> None:
    assert figures["count"] > 0
    _assert_positive(figures, "p50_ms", "p95_ms", "p99_ms", "max_ms")
    assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def _check_server_figures(figures: dict[str, Any], rate: float) -> None:
    run = figures["open_loop"]
    assert run["errors"] == 0 and run["rate_per_s"] == rate
    assert run["requests"] == run["latency_from_due"]["count"] > 0
    for name in ("latency_from_due", "latency_from_send"):
        _check_percentiles(run[name])
    assert run["latency_from_due"]["p50_ms"] >= run["latency_from_send"]["p50_ms"]
    assert set(figures["closed_loop"]) == {"c1", "c8", "c32"}
    for key, closed in figures["closed_loop"].items():
        assert closed["concurrency"] == int(key[1:]) and closed["errors"] == 0
        _assert_positive(closed, "requests_per_s", "seconds", "client_cpu_share")
        _check_percentiles(closed["latency"])


def _check_swap(swap: dict[str, Any], versions: int) -> None:
    assert swap["errors"] == 0 and swap["swaps"] == len(swap["replace_call_ms"]) >= 1
    _check_percentiles(swap["steady_window"])
    _check_percentiles(swap["swap_window"])
    assert sum(swap["answers_per_version"].values()) == swap["requests"]
    assert len(swap["answers_per_version"]) == versions  # the swaps were answered
    assert all(ms is not None and ms > 0 for ms in swap["replace_to_first_answer_ms"])


# Shorter than --quick: every run, server and swap still happens, on a smaller forest.
SERVING_SMOKE = ("--open-seconds", "0.3", "--closed-seconds", "0.2", "--swaps", "1",
                 "--trees", "5")


def test_quick_serving_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("serving.py", tmp_path, *SERVING_SMOKE)
    assert report["settings"]["swaps"] == 1 and report["settings"]["trees"] == 5
    assert report["machine"]["uvicorn"] and "SQLite" in report["store"]
    rate = report["settings"]["rate"]
    floor = report["in_process"]
    for name in ("predict_1_row", "predict_32_rows", "thin_handler_1_row"):
        _check_percentiles(floor[name])
    for section in SERVING_SECTIONS:
        _check_server_figures(report[section], rate)
    for mode, rows in (("inline", 0), ("batched", report["settings"]["batch_rows"])):
        figures = report[f"loopline_{mode}"]
        assert figures["batch_max_rows"] == rows
        _check_swap(figures["swap"], versions=2)
        metrics = figures["server_metrics"]
        assert metrics["predict_calls"] > 0 and metrics["prediction_log_dropped"] == 0
    targets = report["targets"]
    assert targets["swap_errors"] == 0
    assert targets["p50_met"] is (targets["p50_overhead_ms"] <= targets["p50_overhead_ms_max"])
    assert targets["throughput_met"] is (
        targets["batched_c32_vs_thin_c32"] >= targets["batched_c32_vs_thin_c32_min"])
    _assert_positive(targets, "batched_c32_vs_thin_c32", "inline_c32_vs_thin_c32",
                     "client_ceiling_c32_vs_batched_c32")


def test_quick_monitoring_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("monitoring.py", tmp_path)
    assert report["machine"]["scipy"] and report["settings"]["quick"] is True
    for size in report["sizes"].values():
        for path in ("loopline", "scipy"):
            _assert_positive(size[path], "total_s", "rows_per_s", "peak_mib")
        _assert_positive(size["ratios"], "speedup_vs_scipy", "peak_vs_scipy")
        agreed = size["agreement"]
        assert agreed["planted_found_by_loopline_auto"] and agreed["planted_found_by_scipy"]
        assert set(agreed["planted"]) <= set(agreed["loopline_ks_chi_square_flagged"])
        assert agreed["ks_statistic_max_abs_diff"] <= agreed["ks_statistic_error_bound_max"]
        assert agreed["chi_square_p_max_abs_diff"] < 1e-9
    _assert_positive(report["expand"], "expand_predictions_s", "expand_rows_per_s")
    loop = report["loop"]
    simulated = loop["simulated"]
    assert simulated["time_to_detect_s"] >= loop["baseline"]["detect_floor_s"]
    assert simulated["time_to_recover_s"] >= loop["baseline"]["recover_floor_s"]
    accuracy = loop["accuracy"]
    assert accuracy["during"] < accuracy["before"] and accuracy["during"] < accuracy["after"]


# -- benchmarks/api.py ---------------------------------------------------------------------------

API_SIDES = ("local", "api")


def _check_rate(figures: dict[str, Any]) -> None:
    _assert_positive(figures, "requests", "rps", "p50_ms", "p99_ms", "max_ms")
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def _check_api_backend(figures: dict[str, Any]) -> None:
    read, write = figures["read_model_show"], figures["write_register"]
    for side in API_SIDES:
        _check_rate(read[side])
        _check_rate(write[side])
    _check_rate(read["api_concurrent"])
    _check_rate(read["auth_only_whoami"])
    for section in (read, write):
        _assert_positive(section, "p50_ratio", "p99_ratio", "rps_ratio")


def test_quick_api_benchmark_prints_one_json_report(tmp_path: Path) -> None:
    report = _run_script("api.py", tmp_path)
    assert report["benchmark"] == "api"
    _check_api_backend(report["sqlite"])
    assert report["sqlite"]["write_register"]["api"]["requests"] == \
        report["settings"]["writes"]
    _check_postgres(report["postgresql"], _check_api_backend)
