"""The store benchmark runs end to end in --quick mode and prints one well-formed report.

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
