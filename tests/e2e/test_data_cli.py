"""`loopline data` end to end: bad input in subprocesses as a user runs it (one clear line on
stderr, the exit code the shell sees); the rest in this process (``cli.main.run``), which
runs the same code for a fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import InProcessCli, run_console


def _orders(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "order_id": np.arange(rows),
        "amount": rng.gamma(2.0, 30.0, rows).round(2),
        "status": rng.choice(["new", "paid", "shipped"], rows),
        "placed_at": pd.date_range("2026-06-01", periods=rows, freq="min", tz="UTC"),
    })


SUITE = """
name: orders
expectations:
  - {type: column_exists, column: order_id}
  - {type: values_unique, column: order_id}
  - {type: null_rate_at_most, column: amount, max: 0.0}
  - {type: values_between, column: amount, min: 0}
  - {type: values_in_set, column: status, values: [new, paid, shipped]}
  - {type: row_count_between, min: 100}
  - {type: null_rate_shift_at_most, max_shift: 0.05}
"""


def test_snapshot_list_show_diff_validate_export(tmp_path: Path, run_cli: InProcessCli) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    _orders(400, 1).to_parquet(tmp_path / "orders.parquet")
    first = run_cli(tmp_path, "data", "snapshot", "orders.parquet", "--name", "orders", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["created"] is True
    again = json.loads(run_cli(tmp_path, "data", "snapshot", "orders.parquet", "--name", "orders",
                               "--json").stdout)
    assert again["created"] is False and again["ref"] == "orders@1"
    changed = _orders(400, 1)
    changed.loc[3, "amount"] = None
    changed.to_csv(tmp_path / "orders-v2.csv", index=False)
    assert run_cli(tmp_path, "data", "snapshot", "orders-v2.csv", "--name", "orders",
                   "--parent", "orders@1").returncode == 0
    listed = json.loads(run_cli(tmp_path, "data", "list", "--json").stdout)
    assert [v["ref"] for v in listed] == ["orders@2", "orders@1"]
    shown = json.loads(run_cli(tmp_path, "data", "show", "orders@1", "--json").stdout)
    assert shown["profile"]["columns"]["status"]["kind"] == "categorical"
    diff = run_cli(tmp_path, "data", "diff", "orders@1", "orders@2")
    assert diff.returncode == 0 and "amount" in diff.stdout
    (tmp_path / "suite.yaml").write_text(SUITE)
    good = run_cli(tmp_path, "data", "validate", "orders@1", "--suite", "suite.yaml")
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run_cli(tmp_path, "data", "validate", "orders@2", "--suite", "suite.yaml", "--json")
    assert bad.returncode == 9
    report = json.loads(bad.stdout)
    assert {r["expectation"] for r in report["results"] if not r["passed"]} == {
        "null_rate_at_most"}
    assert run_cli(tmp_path, "data", "export", "orders@1", "copy.parquet").returncode == 0
    assert pd.read_parquet(tmp_path / "copy.parquet").shape == (400, 4)
    lineage = json.loads(run_cli(tmp_path, "lineage", "show", "dataset_snapshot:orders@2",
                                 "--upstream", "--json").stdout)
    assert "dataset_snapshot:orders@1" in {n["id"] for n in lineage["nodes"]}


def test_append_and_read_a_window(tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    data = _orders(120, 2)
    for index in range(3):
        data[index * 40:(index + 1) * 40].to_parquet(tmp_path / f"batch{index}.parquet")
        appended = run_cli(tmp_path, "data", "append", "clicks", f"batch{index}.parquet",
                           "--time-column", "placed_at")
        assert appended.returncode == 0, appended.stderr
    window = run_cli(tmp_path, "data", "read", "clicks", "window.parquet",
                     "--start", "2026-06-01T00:30:00+00:00", "--end", "2026-06-01T01:00:00+00:00")
    assert window.returncode == 0, window.stderr
    assert pd.read_parquet(tmp_path / "window.parquet")["order_id"].tolist() == list(range(30, 60))
    last = run_cli(tmp_path, "data", "read", "clicks", "last.parquet", "--last", "5")
    assert last.returncode == 0
    assert pd.read_parquet(tmp_path / "last.parquet")["order_id"].tolist() == list(range(115, 120))


@pytest.mark.e2e
def test_bad_data_input_is_one_clear_line(tmp_path: Path, run_cli: InProcessCli) -> None:
    run_cli(tmp_path, "init")
    (tmp_path / "empty.csv").write_text("")
    for args, needle in (
        (("data", "snapshot", "missing.csv", "--name", "x"), "no such file"),
        (("data", "snapshot", "empty.csv", "--name", "x"), "empty"),
        (("data", "snapshot", "empty.csv", "--name", "bad name"), "name"),
        (("data", "show", "nothing@3"), "not found"),
    ):
        result = run_cli(tmp_path, *args)
        assert result.returncode not in (0, 1), (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
    # The console entry point exits and prints exactly so, as the shell sees it.
    assert run_console(tmp_path, "data", "show", "nothing@3") == result
    assert json.loads(run_cli(tmp_path, "data", "list", "--json").stdout) == []
