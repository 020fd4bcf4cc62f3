"""Benchmark drift from profiles against a plain scipy per-column computation, in one run.

Prints one JSON document on stdout (progress goes to stderr). For each window size (10k,
100k and 1M rows by default) a seeded reference table and a current table of 25 columns (20
numeric of assorted normal and lognormal shapes, 5 categorical of 5 to 50 values) are built,
with shifts planted in some current columns (``PLANTED``). Measured on the same data:

    loopline   the reference profile is built once (``Profiler`` over 65,536-row batches,
               timed apart, as registration does); then the timed path: profile the current
               window the same way and ``dataset_drift(reference, current, DriftSettings())``
               (``auto``: Wasserstein / Jensen-Shannon above 1000 rows, KS / chi-square
               below). The same profiles are also compared with every column forced to KS
               or chi-square, the tests the scipy baseline runs, to check agreement.
    scipy      the raw reference and current columns as numpy arrays (the reference's raw
               rows must be kept for it); ``scipy.stats.ks_2samp(method="asymp")`` per numeric
               column, and per categorical column ``pandas.Series.value_counts`` of each side
               then ``scipy.stats.chi2_contingency`` (no continuity correction).

Time is the best of ``--repeat`` runs (stage times from that run). Memory is measured in a
separate run of each path: ``traced_peak_mib`` is tracemalloc's peak (Python objects, numpy
and pandas buffers), ``arrow_peak_mib`` the peak of Arrow's allocator (a proxy pool set as the
default for the run), ``peak_mib`` their sum; the input tables, built before, are not
counted. Ratios: ``speedup_vs_scipy`` is scipy's time over loopline's (above 1: loopline is
faster); ``peak_vs_scipy`` is loopline's peak over scipy's (below 1: less memory).
``agreement`` checks that both flag every planted column and lists what else each flagged
(scipy's KS at p < 0.05 also flags chance differences in a few unshifted columns at 1M rows;
the distances ``auto`` uses there do not).

    expand     ``window_rows.expand_predictions`` over ``--requests`` logged one-row requests
               (10 input columns as records, a prediction and a label each), against a plain
               ``orjson.loads`` of every body, ``pandas.DataFrame.from_records`` and
               ``pyarrow.Table.from_pandas`` (inputs only: no outputs, labels or checks).

    loop       the closed loop of ``loopline demo`` (``cli.demo_loop``), run after the rest so
               it slows nothing measured above: a real server answers a load generator and
               takes labels, the customers shift, the rules fire, the retrain playbook trains
               v2, its canary is promoted. On the loop's simulated clock (rule windows of whole
               minutes, evaluated once a minute once 15 s have settled; canary windows of one
               minute judged 15 s after they end): ``time_to_detect_s`` (shift to the
               accuracy alert; the drift alert's too) and ``time_to_recover_s`` (alert to v2
               at 100 %), each against its floor under the configured rules: ``for`` x the
               one-minute evaluation period plus the settle for detection, one analysis
               interval plus the settle per canary step for recovery (``*_vs_floor``: 1.0
               means nothing was lost to the loop itself; its 20 s rounds add up to 20 s).
               Accuracy before, during and after, and the wall time (``--loop small`` under
               ``--quick``, ``demo`` otherwise; ``none`` skips it).

Run ``.venv/bin/python benchmarks/monitoring.py --help``.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy
from scipy import stats

from bench_common import check, elapsed, machine, max_rss_mib, progress, ratio
from loopline.app import Workspace
from loopline.cli.demo_loop import run_loop
from loopline.cli.demo_loop_config import DEMO, SMALL, LoopSettings
from loopline.cli.demo_loop_timeline import timeline
from loopline.cli.output import console
from loopline.core.monitoring import ColumnDriftSpec, DriftMethod, DriftSettings
from loopline.data.profiling import Profile, Profiler
from loopline.loop.rollout import DEFAULT_SETTLE
from loopline.monitoring.drift import DriftReport, dataset_drift
from loopline.monitoring.window_rows import expand_predictions
from loopline.monitoring.windows import SETTLE

T = TypeVar("T")

NUMERIC = 20
CATEGORICAL = 5
BATCH_ROWS = 65_536
CATEGORY_SIZES = (5, 8, 12, 20, 50)
PLANTED = {"num_00": "mean + 0.5 sd", "num_01": "sd x 1.5", "num_02": "mean + 0.3 sd",
           "num_04": "lognormal sigma 1.0 -> 1.4", "cat_0": "category mix reversed"}
DEFAULTS: dict[str, Any] = {"sizes": [10_000, 100_000, 1_000_000], "repeat": 3,
                            "requests": 100_000, "loop": "demo"}
QUICK: dict[str, Any] = {"sizes": [2_000, 20_000], "repeat": 1, "requests": 5_000,
                         "loop": "small"}
LOOPS: dict[str, LoopSettings] = {"demo": DEMO, "small": SMALL}
EVALUATION_PERIOD = timedelta(minutes=1)  # the scheduler's monitoring duty
TARGET_1M_SECONDS = 2.0  # "1M x 25 in a couple of seconds"
KIB, MIB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Settings:
    """What to measure."""

    sizes: list[int]
    repeat: int
    requests: int
    seed: int
    quick: bool
    loop: str = "none"
    tmpdir: str | None = None


# -- data ------------------------------------------------------------------------------------


def _numeric(rng: np.random.Generator, index: int, rows: int, shifted: bool) -> np.ndarray:
    loc, scale = index * 0.5 - 3.0, 0.5 + (index % 4) * 0.5
    if index % 5 == 4:  # lognormal shapes: skewed, positive
        sigma = 1.4 if shifted and index == 4 else 1.0
        return rng.lognormal(0.0, sigma, rows)
    if shifted and index == 0:
        loc += 0.5 * scale
    if shifted and index == 1:
        scale *= 1.5
    if shifted and index == 2:
        loc += 0.3 * scale
    return rng.normal(loc, scale, rows)


def _categorical(rng: np.random.Generator, index: int, rows: int, shifted: bool) -> pa.Array:
    size = CATEGORY_SIZES[index]
    weights = np.arange(1, size + 1, dtype=np.float64)
    if shifted and index == 0:
        weights = weights[::-1]
    values = pa.array([f"c{index}_v{value:02d}" for value in range(size)])
    codes = rng.choice(size, rows, p=weights / weights.sum())
    return pc.take(values, pa.array(codes))


def make_table(rows: int, seed: int, shifted: bool) -> pa.Table:
    """Return ``rows`` seeded rows of the 25 columns, with the planted shifts if ``shifted``."""
    columns: dict[str, Any] = {}
    for index in range(NUMERIC):
        rng = np.random.default_rng([seed, rows, index, int(shifted)])
        columns[f"num_{index:02d}"] = _numeric(rng, index, rows, shifted)
    for index in range(CATEGORICAL):
        rng = np.random.default_rng([seed, rows, 100 + index, int(shifted)])
        columns[f"cat_{index}"] = _categorical(rng, index, rows, shifted)
    return pa.table(columns)


def raw_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """Return the table's columns as numpy arrays (strings as objects), as scipy takes them."""
    return {name: table.column(name).to_numpy() for name in table.column_names}


# -- the two paths -----------------------------------------------------------------------------


def profile(table: pa.Table) -> Profile:
    """Profile ``table`` batch by batch, as a window streamed from the log would be."""
    profiler = Profiler()
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        profiler.update(batch)
    return profiler.result()


def loopline_path(reference: Profile, current: pa.Table, settings: DriftSettings
                  ) -> tuple[DriftReport, float, float]:
    """Profile the window and compare; return the report and the two stages' seconds."""
    start = time.perf_counter()
    window = profile(current)
    profiled = time.perf_counter()
    report = dataset_drift(reference, window, settings)
    return report, profiled - start, time.perf_counter() - profiled


def scipy_path(reference: dict[str, np.ndarray], current: dict[str, np.ndarray]
               ) -> dict[str, tuple[float, float]]:
    """Return each column's (statistic, p-value): KS for numbers, chi-square for categories."""
    found: dict[str, tuple[float, float]] = {}
    for name, mine in reference.items():
        theirs = current[name]
        if mine.dtype.kind == "f":
            result = stats.ks_2samp(mine, theirs, method="asymp")
            found[name] = (float(result.statistic), float(result.pvalue))
            continue
        left, right = pd.Series(mine).value_counts(), pd.Series(theirs).value_counts()
        labels = left.index.union(right.index)
        table = np.vstack([left.reindex(labels, fill_value=0).to_numpy(),
                           right.reindex(labels, fill_value=0).to_numpy()])
        result = stats.chi2_contingency(table, correction=False)
        found[name] = (float(result.statistic), float(result.pvalue))
    return found


# -- measuring ---------------------------------------------------------------------------------


def best_of(repeat: int, action: Callable[[], T]) -> tuple[T, float]:
    """Run ``action`` ``repeat`` times; return the fastest run's result and seconds."""
    runs: list[tuple[float, T]] = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = action()
        runs.append((time.perf_counter() - start, result))
    seconds, result = min(runs, key=lambda run: run[0])
    return result, seconds


def memory_of(action: Callable[[], Any]) -> dict[str, float]:
    """Run ``action`` once; return its tracemalloc and Arrow allocator peaks in MiB.

    Arrow's allocations are counted by a proxy pool set as the default for the run; the sum
    of the two peaks bounds the path's peak from above (they need not coincide).
    """
    gc.collect()
    base = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(base)
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        action()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(base)
    arrow = pool.max_memory()
    return {"traced_peak_mib": round(traced / MIB, 2), "arrow_peak_mib": round(arrow / MIB, 2),
            "peak_mib": round((traced + arrow) / MIB, 2)}


# -- one size --------------------------------------------------------------------------------


def _forced(names: list[str]) -> DriftSettings:
    return DriftSettings(columns={name: ColumnDriftSpec(
        DriftMethod.KS if name.startswith("num") else DriftMethod.CHI_SQUARE)
        for name in names})


def agreement(auto: DriftReport, forced: DriftReport, scipy_found: dict[str, tuple[float, float]]
              ) -> dict[str, Any]:
    """Compare the flags and the statistics of loopline's reports with scipy's."""
    planted = sorted(PLANTED)
    scipy_flagged = sorted(name for name, (_, p) in scipy_found.items() if p < 0.05)
    numeric = [c for c in forced.columns if c.method is DriftMethod.KS]
    categorical = [c for c in forced.columns if c.method is DriftMethod.CHI_SQUARE]
    return {
        "planted": planted,
        "loopline_auto_flagged": sorted(auto.drifted_columns),
        "loopline_ks_chi_square_flagged": sorted(forced.drifted_columns),
        "scipy_flagged": scipy_flagged,
        "planted_found_by_loopline_auto": set(planted) <= set(auto.drifted_columns),
        "planted_found_by_scipy": set(planted) <= set(scipy_flagged),
        "auto_methods": sorted({c.method.value for c in auto.columns}),
        "ks_statistic_max_abs_diff": max(abs(c.details["statistic"] - scipy_found[c.column][0])
                                         for c in numeric),
        "ks_statistic_error_bound_max": max(c.details["statistic_error_bound"]
                                            for c in numeric),
        "chi_square_p_max_abs_diff": max(abs(c.score - scipy_found[c.column][1])
                                         for c in categorical),
        "dataset_share_auto": auto.share,
    }


def measure_size(rows: int, settings: Settings) -> dict[str, Any]:
    """Build one size's data, time and measure both paths, and check their verdicts."""
    progress(f"{rows} rows: generating reference and current (25 columns, seed {settings.seed})")
    reference_table = make_table(rows, settings.seed, shifted=False)
    current_table = make_table(rows, settings.seed, shifted=True)
    reference_raw, current_raw = raw_columns(reference_table), raw_columns(current_table)
    progress(f"{rows} rows: reference profile (once)")
    reference, reference_s = best_of(1, lambda: profile(reference_table))
    auto_settings = DriftSettings()
    forced_settings = _forced(list(reference.names))
    progress(f"{rows} rows: loopline, best of {settings.repeat}")
    (auto, profile_s, drift_s), total_s = best_of(
        settings.repeat, lambda: loopline_path(reference, current_table, auto_settings))
    check(reference.rows == rows and len(auto.columns) == NUMERIC + CATEGORICAL,
          f"{rows}: every row and column profiled and tested")
    forced = dataset_drift(reference, profile(current_table), forced_settings)
    progress(f"{rows} rows: scipy, best of {settings.repeat}")
    scipy_found, scipy_s = best_of(settings.repeat,
                                   lambda: scipy_path(reference_raw, current_raw))
    progress(f"{rows} rows: memory of each path")
    loopline_memory = memory_of(lambda: loopline_path(reference, current_table, auto_settings))
    scipy_memory = memory_of(lambda: scipy_path(reference_raw, current_raw))
    agreed = agreement(auto, forced, scipy_found)
    check(agreed["planted_found_by_loopline_auto"], f"{rows}: loopline missed a planted shift")
    check(agreed["planted_found_by_scipy"], f"{rows}: scipy missed a planted shift")
    check(agreed["ks_statistic_max_abs_diff"] <= agreed["ks_statistic_error_bound_max"] + 1e-9,
          f"{rows}: a sketch KS statistic is outside its bound")
    profile_kib = len(json.dumps(reference.to_dict())) / KIB
    return {
        "rows": rows, "columns": NUMERIC + CATEGORICAL,
        "loopline": {"reference_profile_s": round(reference_s, 4),
                     "profile_current_s": round(profile_s, 4), "drift_s": round(drift_s, 4),
                     "total_s": round(total_s, 4), "rows_per_s": round(rows / total_s),
                     "reference_profile_json_kib": round(profile_kib, 1), **loopline_memory},
        "scipy": {"total_s": round(scipy_s, 4), "rows_per_s": round(rows / scipy_s),
                  "reference_raw_arrow_mib": round(reference_table.nbytes / MIB, 1),
                  **scipy_memory},
        "ratios": {"speedup_vs_scipy": ratio(scipy_s, total_s),
                   "peak_vs_scipy": ratio(loopline_memory["peak_mib"],
                                          scipy_memory["peak_mib"])},
        "agreement": agreed,
    }


# -- expanding the log ------------------------------------------------------------------------


def make_log(requests: int, seed: int) -> pa.Table:
    """Return a prediction-log table of one-row requests, as the native endpoint logs them."""
    rng = np.random.default_rng([seed, requests])
    numbers = rng.normal(size=(requests, 8)).round(6)
    colors = rng.choice(["red", "green", "blue"], requests)
    inputs = [orjson.dumps([{**{f"x{j}": float(row[j]) for j in range(8)}, "color": str(color),
                             "n": index % 7}], option=orjson.OPT_SORT_KEYS).decode()
              for index, (row, color) in enumerate(zip(numbers, colors, strict=True))]
    return pa.table({
        "request_id": [f"req-{index}" for index in range(requests)],
        "time": pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * requests,
                         pa.timestamp("us", tz="UTC")),
        "model_version": ["model.v1"] * requests, "inputs": inputs,
        "outputs": [f"[{index % 2}]" for index in range(requests)],
        "label": [None if index % 3 else str(index % 2) for index in range(requests)],
    })


def plain_expand(table: pa.Table) -> pa.Table:
    """Decode every body and build a frame from the records: inputs only, nothing checked."""
    records = chain.from_iterable(orjson.loads(text)
                                  for text in table.column("inputs").to_pylist())
    return pa.Table.from_pandas(pd.DataFrame.from_records(list(records)),
                                preserve_index=False)


def measure_expand(settings: Settings) -> dict[str, Any]:
    """Time ``expand_predictions`` against the plain decode-and-frame baseline."""
    progress(f"expand: {settings.requests} logged requests, best of {settings.repeat}")
    table = make_log(settings.requests, settings.seed)
    rows, seconds = best_of(settings.repeat, lambda: expand_predictions(table))
    plain, plain_s = best_of(settings.repeat, lambda: plain_expand(table))
    check(rows.num_rows == plain.num_rows == settings.requests, "expand: one row per request")
    check(rows.column("x0").to_pylist() == plain.column("x0").to_pylist(), "expand: values")
    return {"requests": settings.requests, "input_columns": 10,
            "expand_predictions_s": round(seconds, 4),
            "expand_rows_per_s": round(settings.requests / seconds),
            "baseline": {"plain_decode_and_frame_s": round(plain_s, 4),
                         "rows_per_s": round(settings.requests / plain_s)},
            "ratios": {"expand_vs_plain_rate": ratio(plain_s, seconds)}}


# -- the closed loop ---------------------------------------------------------------------------


def _seconds(value: timedelta) -> float:
    return round(value.total_seconds(), 1)


def measure_loop(settings: Settings) -> dict[str, Any]:
    """Run the demo's closed loop once and report its delays against their floors."""
    loop = LOOPS[settings.loop]
    progress(f"loop: the demo's closed loop, {settings.loop} setting")
    with tempfile.TemporaryDirectory(prefix="loopline-bench-loop-", dir=settings.tmpdir) as root:
        Workspace.init(root).close()
        with console.capture():  # the demo's narration; the JSON report is what counts
            workspace, outcome = run_loop(Path(root), loop)
        with workspace:
            line = timeline(workspace, outcome)
            applied = workspace.monitor_configs.current()
    check(applied is not None, "loop: a monitoring config is in force")
    rule = next(r for r in applied.config.rules if r.name == line.quality_alert.rule)
    before, during, after = (line.phase(name).accuracy for name in ("before", "during", "after"))
    check(line.retrain_runs == 1, "loop: exactly one retrain run")
    check(before is not None and during is not None and after is not None
          and after > during, "loop: quality recovers")
    analysis = loop.canary().analysis
    detect_floor = rule.for_count * EVALUATION_PERIOD + SETTLE
    recover_floor = (len(loop.canary_steps) - 1) * (analysis.interval + DEFAULT_SETTLE)
    drift = line.drift_alert
    return {
        "setting": settings.loop, "requests_per_round": loop.requests,
        "rows_per_request": loop.rows, "round_s": _seconds(loop.round),
        "simulated": {
            "time_to_detect_s": _seconds(line.time_to_detect),
            "drift_alert_after_shift_s": None if drift is None
            else _seconds(drift.opened_at - outcome.shift_at),
            "time_to_recover_s": _seconds(line.time_to_recover),
            "shift_to_recovered_s": _seconds(line.promoted_at - outcome.shift_at),
            "loop_s": _seconds(outcome.end - outcome.start)},
        "accuracy": {"before": before, "during": during, "after": after},
        "wall": {"loop_s": round(outcome.wall_seconds, 2),
                 "retrain_run_s": round(outcome.retrain_seconds, 2),
                 "http_requests": outcome.requests,
                 "simulated_s_per_wall_s": ratio((outcome.end - outcome.start).total_seconds(),
                                                 outcome.wall_seconds)},
        "baseline": {"detect_floor_s": _seconds(detect_floor),
                     "recover_floor_s": _seconds(recover_floor)},
        "ratios": {"detect_vs_floor": ratio(line.time_to_detect.total_seconds(),
                                            detect_floor.total_seconds()),
                   "recover_vs_floor": ratio(line.time_to_recover.total_seconds(),
                                             recover_floor.total_seconds())},
    }


# -- command line ------------------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` changes the defaults of the size flags only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="window sizes in rows (10000 100000 1000000)")
    parser.add_argument("--repeat", type=int, help="timed runs per path, best reported (3)")
    parser.add_argument("--requests", type=int, help="logged requests expanded (100000)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument("--tmpdir", help="where the loop's workspace goes (a temporary folder)")
    parser.add_argument("--loop", choices=["demo", "small", "none"],
                        help="the closed loop's setting (demo; small under --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    sizes = args.sizes if args.sizes is not None else base["sizes"]
    repeat = args.repeat if args.repeat is not None else base["repeat"]
    requests = args.requests if args.requests is not None else base["requests"]
    if repeat < 1 or requests < 1 or any(size < 100 for size in sizes):
        parser.error("--repeat and --requests must be at least 1, every size 100 rows or more")
    return Settings(sizes=list(sizes), repeat=repeat, requests=requests, seed=args.seed,
                    quick=args.quick, loop=args.loop or base["loop"], tmpdir=args.tmpdir)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Report the issue's target (1M x 25 in a couple of seconds) when 1M rows were measured."""
    measured = results.get(str(1_000_000))
    if measured is None:
        return {"skipped": "no 1,000,000-row size measured"}
    seconds = measured["loopline"]["total_s"]
    return {"rows_1m_total_s": seconds, "rows_1m_total_s_max": TARGET_1M_SECONDS,
            "met": seconds <= TARGET_1M_SECONDS}


def main(argv: list[str] | None = None) -> int:
    """Measure every size and print the JSON report."""
    settings = parse_settings(argv)
    results = {str(rows): measure_size(rows, settings) for rows in settings.sizes}
    expand = measure_expand(settings)
    loop = measure_loop(settings) if settings.loop != "none" else {"skipped": "--loop none"}
    report = {
        "benchmark": "loopline monitoring: drift from profiles",
        "machine": machine(numpy=np.__version__, scipy=scipy.__version__,
                           pyarrow=pa.__version__, pandas=pd.__version__),
        "settings": {**asdict(settings), "numeric_columns": NUMERIC,
                     "categorical_columns": CATEGORICAL, "batch_rows": BATCH_ROWS},
        "planted": PLANTED,
        "sizes": results,
        "targets": targets(results),
        "expand": expand,
        "loop": loop,
        "process_max_rss_mib": max_rss_mib(),
        "elapsed_s": elapsed(),
    }
    print(json.dumps(report, indent=2))
    progress("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
