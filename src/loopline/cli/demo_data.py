"""The data part of ``loopline demo``: snapshot, profile, validate, diff, lineage, predictions.

Data is generated with a fixed seed (no downloads): a week of orders, then a second week in
which a checkout bug leaves some amounts empty, which validation catches.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from loopline.app import Workspace
from loopline.cli.output import console, table
from loopline.core.predictions import PredictionWindow
from loopline.data.prediction_log import ReadOptions
from loopline.data.validation import Suite

SUITE = """
name: orders
expectations:
  - {type: column_exists, column: order_id}
  - {type: values_unique, column: order_id}
  - {type: null_rate_at_most, column: amount, max: 0.001}
  - {type: values_between, column: amount, min: 0, max: 5000}
  - {type: values_in_set, column: status, values: [new, paid, shipped, refunded]}
  - {type: row_count_between, min: 1000}
  - {type: null_rate_shift_at_most, max_shift: 0.01}
"""


def orders(week: int, rows: int = 20_000) -> pd.DataFrame:
    """Generate a week of orders; from week 2 a bug leaves 3% of amounts empty."""
    rng = np.random.default_rng(week)
    start = pd.Timestamp("2026-06-01", tz="UTC") + pd.Timedelta(weeks=week - 1)
    frame = pd.DataFrame({
        "order_id": np.arange(rows) + week * 1_000_000,
        "amount": rng.gamma(2.0, 40.0 + 5 * week, rows).round(2),
        "items": rng.integers(1, 8, rows),
        "status": rng.choice(["new", "paid", "shipped", "refunded"], rows, p=[.2, .5, .28, .02]),
        "country": rng.choice(["de", "fr", "nl", "se", "es"], rows),
        "placed_at": start + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86_400, rows)), "s"),
    })
    if week >= 2:
        frame.loc[rng.random(rows) < 0.03, "amount"] = None
    return frame


def snapshot_and_validate(workspace: Workspace, folder: Path) -> None:
    """Snapshot two weeks of orders, validate both, and show what changed."""
    suite = Suite.from_yaml(SUITE)
    for week in (1, 2):
        path = folder / f"orders-week{week}.parquet"
        orders(week).to_parquet(path, row_group_size=5_000)
        parents = [f"orders@{week - 1}"] if week > 1 else []
        version = workspace.datasets.snapshot(path, "orders", parents=parents).version
        console.print(f"   {path.name} → {version.ref}: {version.rows:,} rows, "
                      f"content {version.content_hash[:12]}")
        report = workspace.validate_dataset(version.ref, suite)
        verdict = "passed" if report.passed else f"FAILED ({len(report.failures)} failing)"
        console.print(f"   validation of {version.ref}: {verdict}",
                      style="green" if report.passed else "red")
        for failure in report.failures:
            console.print(f"     ✗ {failure.label}: {failure.message}", style="red")
    profile = workspace.datasets.get("orders@1").profile["columns"]
    table("profile of orders@1", ["column", "kind", "null rate", "min", "max"], [
        (name, col["kind"], f"{col['null_rate']:.1%}", _short(col.get("min")),
         _short(col.get("max"))) for name, col in profile.items()])
    again = workspace.datasets.snapshot(orders(2), "orders")
    console.print(f"   week 2 again, from a DataFrame → {again.version.ref}, new: {again.created}"
                  " (identity is content)")


def _short(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)[:19]


def show_lineage(workspace: Workspace) -> None:
    """Print where orders@2 came from."""
    view = workspace.lineage.upstream("dataset_snapshot:orders@2")
    for node in sorted(view.nodes, key=lambda n: view.depths[n.id]):
        console.print(f"   {'  ' * view.depths[node.id]}{node.id}")


def log_predictions(workspace: Workspace) -> None:
    """Append a batch of predictions and late feedback, then read a window with labels."""
    rng = np.random.default_rng(7)
    rows = 50_000
    start = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)
    ids = [f"req-{i}" for i in range(rows)]
    times = [start + dt.timedelta(seconds=i) for i in range(rows)]
    scores = rng.random(rows)
    predictions = pa.table({
        "request_id": ids,
        "time": pa.array(times, pa.timestamp("us", "UTC")),
        "deployment": ["fraud-api"] * rows,
        "model_version": ["fraud-3"] * rows,
        "inputs": [f'{{"amount": {a:.2f}}}' for a in rng.gamma(2.0, 40.0, rows)],
        "outputs": [f'{{"score": {s:.4f}}}' for s in scores],
        "latency_ms": rng.gamma(2.0, 1.5, rows),
    })
    segment = workspace.predictions.append(predictions)
    labelled = pa.table({
        "request_id": ids[::10],
        "time": pa.array([t + dt.timedelta(days=1) for t in times[::10]],
                         pa.timestamp("us", "UTC")),
        "label": ['{"fraud": %s}' % ("true" if s > 0.95 else "false") for s in scores[::10]],
    })
    workspace.predictions.log_feedback(labelled)
    window = workspace.predictions.read(
        PredictionWindow(deployment="fraud-api", start=start,
                         end=start + dt.timedelta(hours=1)), ReadOptions(with_feedback=True))
    with_labels = window.num_rows - window["label"].null_count
    console.print(f"   logged {segment.rows:,} predictions and {labelled.num_rows:,} labels; "
                  f"the first hour holds {window.num_rows:,} rows, {with_labels:,} labelled")
