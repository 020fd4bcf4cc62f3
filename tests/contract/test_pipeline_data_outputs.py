"""Data outputs on every backend: tables, arrays and files flow between tasks by digest,
hit the cache on a second run, and read back the same after an interrupted run resumes."""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loopline import pipeline, task
from loopline.artifacts import ContentAddressedStore
from loopline.core.runs import RunState, TaskState
from loopline.pipelines import Runner, RunnerOptions
from loopline.store import MetadataStore

CALLS: Counter[str] = Counter()
INTERRUPTS = {"left": 0}
OUT_DIR = "LOOPLINE_TEST_DATA_OUT"  # read at run time, so worker processes see it too


@pytest.fixture(autouse=True)
def _reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    INTERRUPTS["left"] = 0
    (tmp_path / "out").mkdir()
    monkeypatch.setenv(OUT_DIR, str(tmp_path / "out"))


@pytest.fixture
def blobs(tmp_path: Path) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path / "artifacts")


@pytest.fixture
def runner(store: MetadataStore, blobs: ContentAddressedStore) -> Runner:
    return Runner(store, blobs, RunnerOptions(actor="tester"))


@task
def make_frame(n: int) -> pd.DataFrame:
    CALLS["make_frame"] += 1
    return pd.DataFrame({"x": np.arange(n, dtype="int64"), "label": [f"r{i}" for i in range(n)]},
                        index=pd.Index([f"k{i}" for i in range(n)], name="key"))


@task
def to_array(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
    CALLS["to_array"] += 1
    if list(frame.index) != [f"k{i}" for i in range(len(frame))]:
        raise ValueError(f"the index did not survive: {list(frame.index)}")
    return frame["x"].to_numpy(dtype="float64") * 2.5


@task
def write_report(values: np.ndarray[Any, np.dtype[np.float64]]) -> Path:
    CALLS["write_report"] += 1
    path = Path(os.environ[OUT_DIR]) / "report.csv"
    path.write_text("".join(f"{value:.1f}\n" for value in values))
    return path


@task
def read_report(report: Path) -> dict[str, Any]:
    CALLS["read_report"] += 1
    if INTERRUPTS["left"] > 0:
        INTERRUPTS["left"] -= 1
        raise KeyboardInterrupt  # the runner dies mid-task: the run stays `running`
    lines = report.read_text().split()
    return {"name": report.name, "lines": len(lines), "total": sum(map(float, lines)),
            "read_only": stat.S_IMODE(report.stat().st_mode) & 0o222 == 0,
            "a_copy": report.parent != Path(os.environ[OUT_DIR])}


@pipeline
def reporting(n: int) -> Any:
    return read_report(write_report(to_array(make_frame(n))))


EXPECTED = {"name": "report.csv", "lines": 4, "total": 15.0, "read_only": True, "a_copy": True}
KINDS = {"make_frame": "table", "to_array": "ndarray", "write_report": "file",
         "read_report": "json"}


def _records(runner: Runner, run_id: str) -> dict[str, dict[str, Any]]:
    return {t.task_key: dict(t.outputs or {}) for t in runner.runs.tasks(run_id)}


def test_data_outputs_flow_between_tasks_through_the_artifact_store(
        runner: Runner, blobs: ContentAddressedStore) -> None:
    result = runner.run(reporting, {"n": 4})
    assert result.succeeded, result.run.error
    assert result.result == EXPECTED
    records = _records(runner, result.run.id)
    assert {key: record["kind"] for key, record in records.items()} == KINDS
    for key in ("make_frame", "to_array", "write_report"):
        assert "value" not in records[key] and blobs.exists(records[key]["digest"])
    assert records["write_report"]["name"] == "report.csv"
    assert blobs.get_bytes(records["write_report"]["digest"]) == b"0.0\n2.5\n5.0\n7.5\n"
    pd.testing.assert_frame_equal(result.outputs["make_frame"], make_frame.fn(4))
    np.testing.assert_array_equal(result.outputs["to_array"], [0.0, 2.5, 5.0, 7.5])
    assert result.outputs["write_report"].read_bytes() == b"0.0\n2.5\n5.0\n7.5\n"


def test_a_second_run_with_the_same_data_is_served_from_the_cache(runner: Runner) -> None:
    first = runner.run(reporting, {"n": 4})
    again = runner.run(reporting, {"n": 4})
    assert again.succeeded and again.result == first.result == EXPECTED
    assert dict(CALLS) == dict.fromkeys(KINDS, 1)
    assert {t.state for t in runner.runs.tasks(again.run.id)} == {TaskState.CACHED}
    cache_keys = [{t.task_key: t.cache_key for t in runner.runs.tasks(r.run.id)}
                  for r in (first, again)]
    assert cache_keys[0] == cache_keys[1]


def test_an_interrupted_run_resumes_with_the_same_data_values(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    first = Runner(store, blobs, RunnerOptions(actor="tester", heartbeat_seconds=0.05,
                                               lease_seconds=0.2))
    INTERRUPTS["left"] = 1
    with pytest.raises(KeyboardInterrupt):
        first.run(reporting, {"n": 4})
    run = first.runs.runs()[0]
    before = _records(first, run.id)
    states = {t.task_key: t.state for t in first.runs.tasks(run.id)}
    assert states["read_report"] is TaskState.RUNNING
    assert all(states[key] is TaskState.SUCCEEDED for key in KINDS if key != "read_report")
    time.sleep(0.3)  # the dead attempt's lease runs out

    resumed = Runner(store, blobs, RunnerOptions(actor="tester")).resume(run.id, reporting)
    assert resumed.succeeded, resumed.run.error
    assert resumed.result == EXPECTED
    assert dict(CALLS) == {**dict.fromkeys(KINDS, 1), "read_report": 2}
    after = _records(first, run.id)
    assert all(after[key] == before[key] for key in KINDS if key != "read_report")
    pd.testing.assert_frame_equal(resumed.outputs["make_frame"], make_frame.fn(4))
    np.testing.assert_array_equal(resumed.outputs["to_array"], [0.0, 2.5, 5.0, 7.5])
    assert resumed.run.state is RunState.SUCCEEDED


def test_data_outputs_cross_worker_processes(
        store: MetadataStore, blobs: ContentAddressedStore) -> None:
    runner = Runner(store, blobs, RunnerOptions(actor="tester", executor="process",
                                                max_workers=2, cache=False))
    try:
        result = runner.run(reporting, {"n": 4})
    finally:
        runner.close()
    assert result.succeeded, result.run.error
    assert result.result == EXPECTED
    assert {k: r["kind"] for k, r in _records(runner, result.run.id).items()} == KINDS
