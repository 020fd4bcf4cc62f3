"""Benchmark the data layer against pandas and plain pyarrow baselines measured in the same run.

Prints one JSON document on stdout (progress goes to stderr). Every loopline figure sits next
to a baseline timed in the same process on the same data, and the two are reported as a ratio
(loopline rate / baseline rate). Nothing here asserts a timing.

    snapshots    ``datasets.snapshot`` of a seeded Parquet file and the same rows as CSV (MB/s
                 of the source file, rows/s), against ``pandas.read_*(...).describe()`` and
                 a plain pyarrow read + ``pq.write_table(zstd)`` copy of the same file
    profiles     ``profile_table`` rows/s on the in-memory table, against
                 ``DataFrame.describe(include="all")`` and ``DataFrame.describe()``
    memory       peak RSS of a fresh process streaming a Parquet file of ``--memory-batches``
                 x 65,536 rows through ``Profiler.update``, against a process that reads the
                 whole file with ``pq.read_table`` and profiles it
    predictions  rows/s appended to the prediction log as Arrow tables, as PredictionRecord
                 lists and through ``PredictionWriter``, on SQLite and PostgreSQL, against
                 ``pq.write_table(zstd)`` of the same tables to a local file
    lineage      upstream/downstream walks on a 100k-node graph, with the graph and the walk
                 timing of ``benchmarks/lineage.py`` (imported, not copied)

PostgreSQL is measured in a private schema ``lb_<hex>`` (dropped afterwards) when
``--postgres-url`` or ``LOOPLINE_TEST_POSTGRES_URL`` is set. Run ``make bench`` or
``.venv/bin/python benchmarks/data.py --help``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench_common import (
    add_common_arguments,
    check,
    elapsed,
    machine,
    max_rss_mib,
    measure,
    on_postgres,
    per_second,
    progress,
    public_settings,
    ratio,
    scratch,
)
from loopline.app import Workspace
from loopline.core.predictions import PredictionRecord
from loopline.data.prediction_writer import PredictionWriter, WriterOptions
from loopline.data.profiling import profile_table

MIB = 1 << 20
PROFILE_BATCH = 65_536  # the batch size snapshots and ``iter_batches`` read
LINEAGE_SCRIPT = Path(__file__).resolve().parent / "lineage.py"
DEFAULTS: dict[str, Any] = {"rows": 1_500_000, "repeat": 2, "memory_batches": 40,
                            "segments": 10, "segment_rows": 100_000, "records": 100_000,
                            "lineage_nodes": 100_000, "lineage_queries": 100}
QUICK: dict[str, Any] = {"rows": 50_000, "repeat": 1, "memory_batches": 10, "segments": 2,
                         "segment_rows": 5_000, "records": 5_000, "lineage_nodes": 3_000,
                         "lineage_queries": 20}
RATIO_NOTE = "ratios are loopline rate / baseline rate from the same run (1.0 = as fast)"
CATEGORIES = ("basic", "plus", "pro", "team", "enterprise", "trial", "edu", "partner")


@dataclass(frozen=True, slots=True)
class Settings:
    """What to measure and how much of it."""

    rows: int
    repeat: int
    memory_batches: int
    segments: int
    segment_rows: int
    records: int
    lineage_nodes: int
    lineage_queries: int
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool


# -- helpers -------------------------------------------------------------------------------


def mib(size: float) -> float:
    """Return ``size`` bytes in MiB, rounded."""
    return round(size / MIB, 2)


# -- the data ------------------------------------------------------------------------------


def make_table(rows: int, seed: int) -> pa.Table:
    """Return ``rows`` seeded rows of 12 mixed columns (floats, ints, string, time, bool)."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(rows) < 0.1
    codes = rng.integers(0, len(CATEGORIES), rows).astype(np.int32)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    return pa.table({
        "amount": rng.lognormal(3.0, 1.0, rows),
        "score": rng.random(rows),
        "x1": rng.normal(0.0, 1.0, rows),
        "x2": rng.normal(50.0, 10.0, rows),
        "balance": pa.array(rng.normal(1000.0, 300.0, rows), mask=nulls),
        "user_id": rng.integers(0, 10_000_000, rows),
        "age": rng.integers(18, 90, rows),
        "visits": rng.poisson(4.0, rows),
        "rank": rng.integers(0, 1000, rows).astype(np.int32),
        "plan": pa.DictionaryArray.from_arrays(codes, pa.array(CATEGORIES)).cast(pa.string()),
        "seen_at": pa.array(start + rng.integers(0, 365 * 86_400_000_000, rows)),
        "churned": rng.random(rows) < 0.2,
    })


def write_sources(table: pa.Table, folder: Path) -> dict[str, Path]:
    """Write ``table`` as Parquet (pyarrow's default snappy) and as CSV; return the paths."""
    paths = {"parquet": folder / "source.parquet", "csv": folder / "source.csv"}
    pq.write_table(table, paths["parquet"])
    pacsv.write_csv(table, paths["csv"])
    return paths


# -- snapshots -----------------------------------------------------------------------------


def read_frame(kind: str, path: Path) -> pd.DataFrame:
    """Read a source with pandas as a user would (timestamps parsed in the CSV)."""
    if kind == "parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, parse_dates=["seen_at"])


def arrow_copy(kind: str, path: Path, out: Path) -> int:
    """Read ``path`` with pyarrow and write it as zstd Parquet: a snapshot without loopline."""
    table = pq.read_table(path) if kind == "parquet" else pacsv.read_csv(path)
    pq.write_table(table, out, compression="zstd")
    out.unlink()
    return int(table.num_rows)


def snapshot_round(paths: dict[str, Path], work: Path, rows: int) -> dict[str, float]:
    """Time one snapshot of each source into a fresh workspace, and the baselines; seconds."""
    seconds: dict[str, float] = {}
    with scratch(work, "snapshot") as folder:
        ws = Workspace.init(folder / "ws")
        try:
            for kind, path in paths.items():
                result, seconds[f"{kind}.snapshot"] = measure(
                    lambda p=path, k=kind: ws.datasets.snapshot(p, f"bench_{k}"))
                check(result.created and result.version.rows == rows, f"{kind} snapshot rows")
        finally:
            ws.close()
        for kind, path in paths.items():
            described, seconds[f"{kind}.pandas_describe"] = measure(
                lambda p=path, k=kind: read_frame(k, p).describe(include="all"))
            check(int(described["amount"]["count"]) == rows, f"{kind} describe count")
            copied, seconds[f"{kind}.arrow_copy"] = measure(
                lambda p=path, k=kind: arrow_copy(k, p, folder / "copy.parquet"))
            check(copied == rows, f"{kind} arrow copy rows")
    return seconds


def snapshot_figures(kind: str, path: Path, best: dict[str, float], rows: int,
                     ) -> dict[str, Any]:
    """Return one source format's rates and ratios from the best round."""
    size = path.stat().st_size
    rate = {name: per_second(size / MIB, best[f"{kind}.{name}"])
            for name in ("snapshot", "pandas_describe", "arrow_copy")}
    return {
        "source_mib": mib(size),
        "rows": rows,
        "snapshot_mb_s": rate["snapshot"],
        "snapshot_rows_per_s": per_second(rows, best[f"{kind}.snapshot"]),
        "baseline": {"pandas_read_describe_mb_s": rate["pandas_describe"],
                     "arrow_read_write_zstd_mb_s": rate["arrow_copy"]},
        "ratios": {"snapshot_vs_pandas_read_describe": ratio(rate["snapshot"],
                                                             rate["pandas_describe"]),
                   "snapshot_vs_arrow_read_write": ratio(rate["snapshot"],
                                                         rate["arrow_copy"])},
    }


def bench_snapshots(table: pa.Table, paths: dict[str, Path], work: Path,
                    settings: Settings) -> dict[str, Any]:
    """Measure snapshots of the Parquet and the CSV file against pandas and pyarrow."""
    runs: dict[str, list[float]] = {}
    for number in range(1, settings.repeat + 1):
        progress(f"snapshots round {number}/{settings.repeat}: parquet, csv and baselines")
        for name, value in snapshot_round(paths, work, table.num_rows).items():
            runs.setdefault(name, []).append(value)
    best = {name: min(values) for name, values in runs.items()}
    return {
        "statistic": "best of the rounds; MB/s = MiB of the source file per second; "
                     "a fresh SQLite workspace per round; page cache warm",
        "repeat": settings.repeat,
        "arrow_table_mib": mib(table.nbytes),
        "parquet": snapshot_figures("parquet", paths["parquet"], best, table.num_rows),
        "csv": snapshot_figures("csv", paths["csv"], best, table.num_rows),
        "ratios_note": RATIO_NOTE,
        "rounds_s": {name: [round(v, 3) for v in values] for name, values in runs.items()},
    }


# -- profiles ------------------------------------------------------------------------------


def bench_profiles(table: pa.Table, settings: Settings) -> dict[str, Any]:
    """Time ``profile_table`` against ``DataFrame.describe`` on the same in-memory rows."""
    progress("profiles: profile_table and DataFrame.describe on the in-memory table")
    frame = table.to_pandas()
    numeric = [f.name for f in table.schema
               if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    actions: dict[str, Callable[[], Any]] = {
        "profile_table": lambda: profile_table(table),
        "profile_table_numeric": lambda: profile_table(table.select(numeric)),
        "describe_all": lambda: frame.describe(include="all"),
        "describe_numeric": lambda: frame.describe(),
    }
    runs: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(max(3, settings.repeat)):
        for name, action in actions.items():
            result, seconds = measure(action)
            runs[name].append(seconds)
            if name == "profile_table":
                check(result.rows == table.num_rows, "profile row count")
    rows = table.num_rows
    rate = {name: per_second(rows, min(values)) for name, values in runs.items()}
    return {
        "rows": rows, "columns": table.num_columns, "numeric_columns": len(numeric),
        "statistic": "best of the rounds; the DataFrame is converted before timing",
        "profile_rows_per_s": rate["profile_table"],
        "profile_numeric_columns_rows_per_s": rate["profile_table_numeric"],
        "baseline": {"describe_all_rows_per_s": rate["describe_all"],
                     "describe_numeric_rows_per_s": rate["describe_numeric"]},
        "ratios": {"note": RATIO_NOTE,
                   "profile_vs_describe_all": ratio(rate["profile_table"],
                                                    rate["describe_all"]),
                   "profile_vs_describe_numeric": ratio(rate["profile_table"],
                                                        rate["describe_numeric"]),
                   "profile_numeric_vs_describe_numeric": ratio(
                       rate["profile_table_numeric"], rate["describe_numeric"])},
    }


# -- memory --------------------------------------------------------------------------------

CHILD = """
import json, resource, sys, time, tracemalloc
import pyarrow as pa
import pyarrow.parquet as pq
from loopline.data.profiling import Profiler
mode, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
def peak():
    # VmHWM is this process's own high-water mark; ru_maxrss on Linux carries the parent's
    # RSS at fork across exec, so it would report the benchmark's memory, not the child's.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
before = peak()
tracemalloc.start()
start = time.perf_counter()
profiler = Profiler()
if mode.startswith("stream"):
    parquet = pq.ParquetFile(path, pre_buffer=mode == "stream")
    for part in parquet.iter_batches(batch_size=batch):
        profiler.update(part)
else:
    profiler.update(pq.read_table(path))
rows = profiler.result().rows
seconds = time.perf_counter() - start
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rows": rows, "seconds": seconds, "rss_after_imports": before,
                  "peak_rss": peak(), "traced_peak": traced,
                  "arrow_pool_peak": pa.default_memory_pool().max_memory()}))
"""


def start_child(mode: str, path: Path) -> subprocess.Popen[str]:
    """Start a fresh interpreter that profiles ``path`` (``stream`` or ``whole``)."""
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, str(path), str(PROFILE_BATCH)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_figures(child: subprocess.Popen[str], rows: int) -> dict[str, Any]:
    """Wait for a child; return its memory figures in MiB."""
    out, err = child.communicate(timeout=300)
    check(child.returncode == 0, f"profiling child failed: {err.strip()[-500:]}")
    found = json.loads(out)
    check(found["rows"] == rows, "profiling child row count")
    return {"peak_rss_mib": mib(found["peak_rss"]),
            "rss_after_imports_mib": mib(found["rss_after_imports"]),
            "peak_rss_above_imports_mib": mib(found["peak_rss"] - found["rss_after_imports"]),
            "traced_python_peak_mib": mib(found["traced_peak"]),
            "arrow_pool_peak_mib": mib(found["arrow_pool_peak"]),
            "rows_per_s": per_second(rows, found["seconds"])}


def bench_memory(work: Path, settings: Settings) -> dict[str, Any]:
    """Compare the peak memory of streamed and whole-file profiling of one large file."""
    rows = settings.memory_batches * PROFILE_BATCH
    progress(f"memory: writing a {rows}-row Parquet file ({settings.memory_batches} batches)")
    with scratch(work, "memory") as folder:
        path = folder / "large.parquet"
        table = make_table(rows, settings.seed + 7)
        arrow_size = table.nbytes
        # Row groups of one batch: ``iter_batches`` decodes a whole row group at a time, so
        # pyarrow's default (1Mi rows) would measure the reader's buffer, not the profiler.
        pq.write_table(table, path, row_group_size=PROFILE_BATCH)
        del table
        progress("memory: streaming and whole-file profiling, each in a fresh process")
        # One after the other: two children at once would share the two cores' caches.
        stream = child_figures(start_child("stream", path), rows)
        unbuffered = child_figures(start_child("stream_unbuffered", path), rows)
        whole = child_figures(start_child("whole", path), rows)
        file_size = path.stat().st_size
    return {
        "rows": rows, "batch_rows": PROFILE_BATCH, "batches": settings.memory_batches,
        "row_group_rows": PROFILE_BATCH,
        "file_mib": mib(file_size), "arrow_in_memory_mib": mib(arrow_size),
        "note": "peak RSS (VmHWM) of a fresh interpreter; traced_python_peak is "
                "tracemalloc (Python and numpy), arrow_pool_peak the Arrow allocator's peak. "
                "streaming = ParquetFile(path).iter_batches(65536) into Profiler.update, as "
                "loopline's own Parquet reader does; pyarrow's default pre_buffer=True keeps "
                "every column chunk read so far, so streaming_pre_buffer_off shows the "
                "profiler's bound with ParquetFile(path, pre_buffer=False)",
        "streaming": stream, "streaming_pre_buffer_off": unbuffered,
        "whole_file_baseline": whole,
        "ratios": {
            "streaming_peak_vs_whole_file_peak": ratio(stream["peak_rss_mib"],
                                                       whole["peak_rss_mib"]),
            "streaming_above_imports_vs_whole_file": ratio(
                stream["peak_rss_above_imports_mib"], whole["peak_rss_above_imports_mib"]),
            "streaming_above_imports_vs_arrow_size": ratio(
                stream["peak_rss_above_imports_mib"], mib(arrow_size)),
            "pre_buffer_off_peak_vs_whole_file_peak": ratio(unbuffered["peak_rss_mib"],
                                                            whole["peak_rss_mib"]),
        },
    }


# -- predictions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PredictionData:
    """The tables and records appended on every backend (built before any timing)."""

    tables: list[pa.Table]
    records: list[PredictionRecord]
    writer_records: list[PredictionRecord]


Payload = tuple[dict[str, Any], dict[str, Any], float]


def _payloads(rng: random.Random, count: int) -> list[Payload]:
    """Return ``count`` (inputs, outputs, latency) triples shaped like a tabular model's."""
    return [({"age": rng.randint(18, 90), "plan": rng.choice(CATEGORIES),
              "tenure": round(rng.random() * 60, 2), "visits": rng.randint(0, 40)},
             {"churn": round(rng.random(), 4), "label": rng.random() < 0.2},
             round(rng.uniform(1.0, 30.0), 3))
            for _ in range(count)]


def _version(index: int) -> str:
    return "churn-v3" if index % 10 else "churn-v4"


def _records(prefix: str, start: datetime, payloads: list[Payload]) -> list[PredictionRecord]:
    return [PredictionRecord(f"{prefix}-{i}", start + timedelta(milliseconds=i), "churn-api",
                             _version(i), inputs, outputs, latency)
            for i, (inputs, outputs, latency) in enumerate(payloads)]


def _tables(start: datetime, payloads: list[Payload], segments: int) -> list[pa.Table]:
    """Return ``segments`` tables of the same payloads under new request ids and times.

    The JSON texts are encoded once and shared; loopline canonicalises them again in every
    append (its cache of seen texts lives for one append only), so sharing costs it nothing.
    """
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
    count = len(payloads)
    shared = {"deployment": pa.array(["churn-api"] * count),
              "model_version": pa.array([_version(i) for i in range(count)]),
              "inputs": pa.array([encode(inputs) for inputs, _, _ in payloads]),
              "outputs": pa.array([encode(outputs) for _, outputs, _ in payloads]),
              "latency_ms": pa.array([latency for _, _, latency in payloads], pa.float64())}
    tables = []
    for number in range(segments):
        base = int((start + timedelta(hours=number)).timestamp() * 1_000_000)
        micros = np.arange(base, base + count * 1000, 1000, dtype=np.int64)
        tables.append(pa.table({
            "request_id": [f"t{number}-{i}" for i in range(count)],
            "time": pa.array(micros).cast(pa.timestamp("us", tz="UTC")),
            **shared}))
    return tables


def prediction_data(settings: Settings) -> PredictionData:
    """Build the segment tables and the record lists (seeded; not timed)."""
    start = datetime(2024, 6, 1, tzinfo=UTC)
    rng = random.Random(settings.seed)
    payloads = _payloads(rng, max(settings.segment_rows, settings.records))
    tables = _tables(start, payloads[:settings.segment_rows], settings.segments)
    records = _records("r", start + timedelta(days=1), payloads[:settings.records])
    writer = _records("w", start + timedelta(days=2), payloads[:settings.records])
    return PredictionData(tables, records, writer)


def baseline_parquet(data: PredictionData, work: Path) -> float:
    """Time ``pq.write_table(zstd)`` of every segment table to a local file; rows/s."""
    with scratch(work, "parquet-baseline") as folder:
        start = time.perf_counter()
        for number, table in enumerate(data.tables):
            pq.write_table(table, folder / f"segment-{number}.parquet", compression="zstd")
        seconds = time.perf_counter() - start
    return per_second(sum(t.num_rows for t in data.tables), seconds)


def write_through_writer(ws: Workspace, records: list[PredictionRecord]) -> dict[str, Any]:
    """Submit every record to a ``PredictionWriter`` and close it; time both."""
    options = WriterOptions(batch_rows=10_000, max_queue=len(records) + 1, when_full="raise")
    writer = PredictionWriter(ws.predictions, options)
    start = time.perf_counter()
    try:
        for record in records:
            writer.submit(record)
        submitted = time.perf_counter() - start
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    stats = writer.stats()
    check(stats.written == len(records) and stats.dropped == 0, "writer lost records")
    return {"writer_rows_per_s": per_second(len(records), seconds),
            "writer_submit_rows_per_s": per_second(len(records), submitted),
            "writer_segments": stats.segments, "writer_batch_rows": options.batch_rows}


def predictions_on(url: str | None, data: PredictionData, work: Path) -> dict[str, Any]:
    """Append the tables, the records and the writer's records into a fresh workspace."""
    with scratch(work, "predictions") as folder:
        ws = Workspace.init(folder / "ws", overrides={"db_url": url} if url else None)
        try:
            progress(f"predictions/{ws.store.backend}: {len(data.tables)} Arrow segments")
            per_segment = []
            for table in data.tables:
                _, seconds = measure(lambda t=table: ws.predictions.append(t))
                per_segment.append(seconds)
            progress(f"predictions/{ws.store.backend}: PredictionRecord list and writer")
            _, records_s = measure(lambda: ws.predictions.append(data.records))
            writer = write_through_writer(ws, data.writer_records)
            stored = ws.predictions.segments()
            expected = len(data.tables) + 1 + writer["writer_segments"]
            check(len(stored) == expected, f"{len(stored)} segments stored, {expected} written")
            backend = ws.store.backend
        finally:
            ws.close()
    table_rows = sum(t.num_rows for t in data.tables)
    return {"backend": backend,
            "arrow_rows_per_s": per_second(table_rows, sum(per_segment)),
            "arrow_segment_ms": {"median": round(float(np.median(per_segment)) * 1000, 1),
                                 "max": round(max(per_segment) * 1000, 1)},
            "records_rows_per_s": per_second(len(data.records), records_s), **writer}


def prediction_ratios(figures: dict[str, Any], baseline: float) -> dict[str, float]:
    """Return each append path's rate as a ratio to the local Parquet write."""
    return {"arrow_vs_write_table": ratio(figures["arrow_rows_per_s"], baseline),
            "records_vs_write_table": ratio(figures["records_rows_per_s"], baseline),
            "writer_vs_write_table": ratio(figures["writer_rows_per_s"], baseline)}


def bench_predictions(work: Path, settings: Settings) -> dict[str, Any]:
    """Measure prediction-log appends on SQLite and PostgreSQL against a local Parquet write."""
    progress("predictions: building the segment tables and records")
    data = prediction_data(settings)
    baseline = baseline_parquet(data, work)
    report: dict[str, Any] = {
        "segments": settings.segments, "segment_rows": settings.segment_rows,
        "records": settings.records,
        "note": "inputs/outputs are distinct JSON objects per row; Arrow tables hold JSON "
                "text, records hold dicts; writer rows/s runs from the first submit to close",
        "baseline": {"write_table_zstd_rows_per_s": baseline},
    }
    sqlite = predictions_on(None, data, work)
    report["sqlite"] = {**sqlite, "ratios": prediction_ratios(sqlite, baseline)}

    def postgres(url: str) -> dict[str, Any]:
        figures = predictions_on(url, data, work)
        return {**figures, "ratios": prediction_ratios(figures, baseline)}

    report["postgresql"] = on_postgres(settings.postgres_url, postgres)
    return report


# -- lineage -------------------------------------------------------------------------------


def load_lineage_benchmark() -> ModuleType:
    """Import ``benchmarks/lineage.py`` by path (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("loopline_bench_lineage", LINEAGE_SCRIPT)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {LINEAGE_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.progress = progress  # one clock for the whole run's progress lines
    return module


@contextmanager
def analyzed_batches(lineage: ModuleType) -> Iterator[None]:
    """Make ``lineage.py`` run ``ANALYZE`` after each recorded batch, while in the block.

    On PostgreSQL, recording into never-analysed lineage tables slows down with every batch
    (the existing-node lookups become sequential scans): 100k nodes take minutes instead of
    seconds. Autovacuum would analyse a long-lived database between such batches; here it is
    done explicitly so the walks are timed on a 100k-node graph within the run's budget.
    ``lineage.py`` itself still reports the build without it.
    """
    original = lineage.LineageService

    class Analyzing(original):  # type: ignore[misc, valid-type]
        def __init__(self, store: Any) -> None:
            super().__init__(store)
            self._engine = store.engine

        def record(self, nodes: Any, edges: Any, *, actor: str) -> Any:
            count = super().record(nodes, edges, actor=actor)
            with self._engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE lineage_nodes")
                connection.exec_driver_sql("ANALYZE lineage_edges")
            return count

    lineage.LineageService = Analyzing
    try:
        yield
    finally:
        lineage.LineageService = original


def lineage_summary(figures: dict[str, Any]) -> dict[str, Any]:
    """Pick the upstream walk figures out of a ``lineage.py`` backend report."""
    if "upstream_random" not in figures:
        return figures
    return {**figures,
            "upstream_median_ms": figures["upstream_random"]["loopline"]["median_ms"],
            "upstream_p95_ms": figures["upstream_random"]["loopline"]["p95_ms"]}


def bench_lineage(work: Path, settings: Settings) -> dict[str, Any]:
    """Time lineage walks with ``benchmarks/lineage.py``'s graph and timing code."""
    lineage = load_lineage_benchmark()
    options = lineage.Settings(nodes=settings.lineage_nodes, queries=settings.lineage_queries,
                               seed=settings.seed, postgres_url=settings.postgres_url,
                               tmpdir=str(work), quick=settings.quick)
    progress(f"lineage: building a {settings.lineage_nodes}-node graph")
    graph = lineage.build_graph(settings.lineage_nodes, settings.seed)
    with scratch(work, "lineage") as folder:
        sqlite = lineage.bench_backend(f"sqlite:///{folder / 'lineage.db'}", graph, options)
    with analyzed_batches(lineage):
        postgres = on_postgres(settings.postgres_url,
                               lambda url: lineage.bench_backend(url, graph, options))
    return {"source": "benchmarks/lineage.py (build_graph, bench_backend)",
            "nodes": len(graph[0]), "edges": len(graph[1]), "depth": lineage.DEPTH,
            "queries": settings.lineage_queries,
            "note": "vs_bfs = loopline walk time / in-memory BFS time (lower is better)",
            "postgresql_recording": "ANALYZE after every recorded batch (see analyzed_batches)",
            "sqlite": lineage_summary(sqlite), "postgresql": lineage_summary(postgres)}


# -- command line --------------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` changes the defaults of the size flags only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, help="rows of the snapshot/profile table (1500000)")
    parser.add_argument("--repeat", type=int, help="snapshot rounds, best reported (2)")
    parser.add_argument("--memory-batches", type=int,
                        help=f"rows of the memory file in {PROFILE_BATCH}-row batches (40)")
    parser.add_argument("--segments", type=int, help="Arrow segments appended (10)")
    parser.add_argument("--segment-rows", type=int, help="rows per Arrow segment (100000)")
    parser.add_argument("--records", type=int,
                        help="PredictionRecords appended, and submitted to the writer (100000)")
    parser.add_argument("--lineage-nodes", type=int, help="nodes of the lineage graph (100000)")
    parser.add_argument("--lineage-queries", type=int, help="random walk roots (100)")
    add_common_arguments(parser, "folder for temporary files (default: system temp)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in base.items()}
    if any(value < 1 for value in sizes.values()):
        parser.error("sizes and counts must be at least 1")
    if sizes["lineage_nodes"] < 1_000 or sizes["lineage_queries"] > sizes["lineage_nodes"] // 10:
        parser.error("--lineage-nodes must be at least 1000 and --lineage-queries ≤ nodes/10")
    return Settings(**sizes, seed=args.seed, quick=args.quick, tmpdir=args.tmpdir,
                    postgres_url=None if args.no_postgres else args.postgres_url)


def failed(report: dict[str, Any]) -> bool:
    """Return True when a PostgreSQL section reports an error."""
    return any("error" in report[name].get("postgresql", {})
               for name in ("predictions", "lineage"))


def main(argv: list[str] | None = None) -> int:
    """Measure each part, print the JSON report; exit 1 when PostgreSQL failed."""
    settings = parse_settings(argv)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        work = Path(tmp)
        progress(f"generating {settings.rows} rows x 12 columns (seed {settings.seed})")
        table = make_table(settings.rows, settings.seed)
        with scratch(work, "sources") as folder:
            paths = write_sources(table, folder)
            snapshots = bench_snapshots(table, paths, work, settings)
        profiles = bench_profiles(table, settings)
        del table
        memory = bench_memory(work, settings)
        predictions = bench_predictions(work, settings)
        lineage = bench_lineage(work, settings)
    shown = public_settings(settings)
    report = {
        "benchmark": "loopline data layer",
        "machine": machine(pandas=pd.__version__, pyarrow=pa.__version__, numpy=np.__version__),
        "settings": shown,
        "snapshots": snapshots, "profiles": profiles, "memory": memory,
        "predictions": predictions, "lineage": lineage,
        "process_max_rss_mib": max_rss_mib(),
        "elapsed_s": elapsed(),
    }
    print(json.dumps(report, indent=2))
    progress("done")
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
