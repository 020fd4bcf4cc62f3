"""Benchmark the foundation stores against plain baselines measured in the same run.

Prints one JSON document on stdout (progress goes to stderr). Every loopline figure sits next
to a baseline timed in the same process on the same filesystem or database, and the two are
reported as a ratio (loopline rate / baseline rate), so numbers from different machines can
be compared by their ratios. Nothing here asserts a timing.

    artifacts  put/get MB/s of one random file, plain and AES-256-GCM encrypted, against a
               durable ``shutil.copyfile`` + fsync, a streamed hash-and-write + fsync, and a
               streamed read-and-hash; the traced peak memory of a put
    metadata   audit appends/s, events/s (one per transaction and batched), dispatch
               throughput, commit-to-delivery lag and audit chain verification, on SQLite
               and, when a URL is given, PostgreSQL, against a DB-API insert of an
               equivalent row per committed transaction

Run ``make bench`` or ``.venv/bin/python benchmarks/store.py --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from bench_common import (
    POSTGRES_ENV,
    add_common_arguments,
    check,
    elapsed,
    machine,
    max_rss_mib,
    measure,
    per_second,
    progress,
    public_settings,
    ratio,
    scratch,
)
from loopline.artifacts import ContentAddressedStore, Keyring, generate_key
from loopline.core.errors import LooplineError
from loopline.core.events import Event
from loopline.loop import Dispatcher
from loopline.store import MetadataStore

CHUNK = 1 << 20
DISPATCH_BATCH = 500
POLL_INTERVAL = 0.05
IDLE_WAIT = 0.5
DELIVERY_TIMEOUT = 15.0
DEFAULTS: dict[str, Any] = {"mb": 256, "repeat": 3, "events": 2000, "audit": 2000,
                            "batch_size": 100, "latency_events": 50}
QUICK: dict[str, Any] = {"mb": 4, "repeat": 1, "events": 100, "audit": 100,
                         "batch_size": 25, "latency_events": 10}
RATIO_NOTE = "ratios are loopline rate / baseline rate from the same run (1.0 = as fast)"


@dataclass(frozen=True, slots=True)
class Settings:
    """What to measure and how much of it."""

    mb: int
    repeat: int
    events: int
    audit: int
    batch_size: int
    latency_events: int
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool
    prime: bool


# -- helpers -------------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    """Fsync a directory so a new entry in it is durable (as the artifact store does)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- artifacts: baselines ------------------------------------------------------------------


def write_random_file(path: Path, mb: int, seed: int) -> None:
    """Write ``mb`` MiB of seeded pseudo-random bytes to ``path``, one MiB at a time."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for _ in range(mb):
            out.write(rng.randbytes(CHUNK))


def read_and_hash(path: Path) -> str:
    """Read ``path`` in 1 MiB pieces and return its SHA-256: the floor of a verified get."""
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        while piece := source.read(CHUNK):
            hasher.update(piece)
    return hasher.hexdigest()


def copy_durably(source: Path, dest: Path) -> None:
    """Copy with ``shutil.copyfile`` (in-kernel on Linux), fsync the file and its folder."""
    shutil.copyfile(source, dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(dest.parent)


def hash_and_write(source: Path, dest: Path) -> str:
    """Stream ``source`` to ``dest`` hashing on the way, then fsync: a put without the store."""
    hasher = hashlib.sha256()
    with open(source, "rb") as inp, open(dest, "wb") as out:
        while piece := inp.read(CHUNK):
            hasher.update(piece)
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(dest.parent)
    return hasher.hexdigest()


class PageCachePrimer:
    """Writes and unlinks a throwaway file so the next timed write finds page cache warm.

    On some virtual machines (seen on a Firecracker guest) the first write into page cache
    after a few idle seconds runs about ten times slower than a write right after another
    one. Priming before every timed write makes loopline and its baselines meet the same
    conditions; ``--no-prime`` turns it off.
    """

    def __init__(self, folder: Path, mb: int, enabled: bool) -> None:
        self._path = folder / "primer.bin"
        self._mb = mb
        self._enabled = enabled
        self._block = b"\xa5" * CHUNK

    def __call__(self) -> None:
        """Write ``mb`` MiB without fsync and unlink the file again."""
        if not self._enabled:
            return
        with open(self._path, "wb") as out:
            for _ in range(self._mb):
                out.write(self._block)
        self._path.unlink()


def baseline_round(source: Path, work: Path, expected: str,
                   prime: PageCachePrimer) -> dict[str, float]:
    """Time the three baselines once; return seconds by name."""
    seconds: dict[str, float] = {}
    with scratch(work, "copy") as folder:
        prime()
        _, seconds["copy_fsync"] = measure(lambda: copy_durably(source, folder / "copy.bin"))
    with scratch(work, "hashwrite") as folder:
        prime()
        digest, seconds["hash_and_write_fsync"] = measure(
            lambda: hash_and_write(source, folder / "copy.bin"))
    check(digest == expected, "hash-and-write digest differs")
    digest, seconds["read_and_hash"] = measure(lambda: read_and_hash(source))
    check(digest == expected, "read-and-hash digest differs")
    return seconds


# -- artifacts: loopline -------------------------------------------------------------------


def drain(store: ContentAddressedStore, digest: str) -> int:
    """Read ``digest`` through the verifying reader to the end; return the bytes read."""
    total = 0
    with store.open(digest) as reader:
        while piece := reader.read(CHUNK):
            total += len(piece)
    return total


def store_round(source: Path, folder: Path, keyring: Keyring | None, expected: str,
                prime: PageCachePrimer) -> dict[str, float]:
    """Time put, idempotent re-put, streamed get and get-to-file on a fresh store."""
    store = ContentAddressedStore.from_url(str(folder / "store"), keyring=keyring)
    prime()
    info, put = measure(lambda: store.put_file(source))
    check(info.digest == expected and info.created, "first put digest or created flag")
    prime()
    again, second_put = measure(lambda: store.put_file(source))
    check(not again.created, "second put of the same file created a new object")
    size, get_stream = measure(lambda: drain(store, info.digest))
    check(size == info.size, "streamed get returned a different size")
    prime()
    _, get_to_file = measure(lambda: store.get_to_file(info.digest, folder / "out.bin"))
    check((folder / "out.bin").stat().st_size == info.size, "get_to_file size differs")
    return {"put": put, "second_put": second_put, "get_stream": get_stream,
            "get_to_file": get_to_file}


def put_peak_mib(source: Path, folder: Path, keyring: Keyring | None) -> float:
    """Return the peak Python heap (tracemalloc) during one put on a fresh store, in MiB."""
    store = ContentAddressedStore.from_url(str(folder / "store"), keyring=keyring)
    tracemalloc.start()
    try:
        store.put_file(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return round(peak / (1 << 20), 2)


def artifact_rounds(source: Path, work: Path, settings: Settings, keyring: Keyring,
                    expected: str) -> dict[str, list[float]]:
    """Run baselines and both store modes ``repeat`` times, interleaved; seconds by name."""
    runs: dict[str, list[float]] = {}
    # Twice the file size: priming with one file size still left some puts on cold pages.
    prime = PageCachePrimer(work, 2 * settings.mb, settings.prime)
    for number in range(1, settings.repeat + 1):
        progress(f"artifacts round {number}/{settings.repeat}: baselines")
        timings = baseline_round(source, work, expected, prime)
        for mode, ring in (("plain", None), ("encrypted", keyring)):
            progress(f"artifacts round {number}/{settings.repeat}: {mode} store")
            with scratch(work, mode) as folder:
                found = store_round(source, folder, ring, expected, prime)
            timings.update({f"{mode}.{name}": value for name, value in found.items()})
        for name, value in timings.items():
            runs.setdefault(name, []).append(value)
    return runs


def mode_figures(rates: dict[str, float], mode: str, peak: float) -> dict[str, float]:
    """Return one store mode's MB/s figures and put peak memory."""
    return {
        "put_mb_s": rates[f"{mode}.put"],
        "second_put_mb_s": rates[f"{mode}.second_put"],
        "get_stream_mb_s": rates[f"{mode}.get_stream"],
        "get_to_file_mb_s": rates[f"{mode}.get_to_file"],
        "put_peak_traced_mib": peak,
    }


def mode_ratios(rates: dict[str, float], mode: str) -> dict[str, float]:
    """Return one store mode's rates as ratios to the baselines."""
    return {
        "put_vs_copy": ratio(rates[f"{mode}.put"], rates["copy_fsync"]),
        "put_vs_hash_and_write": ratio(rates[f"{mode}.put"], rates["hash_and_write_fsync"]),
        "second_put_vs_read_and_hash": ratio(rates[f"{mode}.second_put"],
                                             rates["read_and_hash"]),
        "get_vs_read_and_hash": ratio(rates[f"{mode}.get_stream"], rates["read_and_hash"]),
        "get_to_file_vs_copy": ratio(rates[f"{mode}.get_to_file"], rates["copy_fsync"]),
    }


def artifact_report(settings: Settings, runs: dict[str, list[float]],
                    peaks: dict[str, float]) -> dict[str, Any]:
    """Turn the fastest round of each measurement into MB/s figures and ratios.

    The fastest round is the one least disturbed by the rest of the machine (as ``timeit``
    reports the minimum); every round's figure is kept under ``rounds_mb_s``.
    """
    rates = {name: per_second(settings.mb, min(values)) for name, values in runs.items()}
    rounds = {name: [per_second(settings.mb, value) for value in values]
              for name, values in runs.items()}
    return {
        "size_mb": settings.mb,
        "repeat": settings.repeat,
        "statistic": "best of the rounds, MB/s = MiB/s; page cache warm for every reader",
        "plain": mode_figures(rates, "plain", peaks["plain"]),
        "encrypted": mode_figures(rates, "encrypted", peaks["encrypted"]),
        "baseline": {
            "copy_fsync_mb_s": rates["copy_fsync"],
            "hash_and_write_fsync_mb_s": rates["hash_and_write_fsync"],
            "read_and_hash_mb_s": rates["read_and_hash"],
        },
        "ratios": {"note": RATIO_NOTE, "plain": mode_ratios(rates, "plain"),
                   "encrypted": mode_ratios(rates, "encrypted")},
        "rounds_mb_s": rounds,
    }


def bench_artifacts(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure the artifact store against file-copy and hashing baselines."""
    keyring = Keyring.from_encoded([generate_key()])
    with scratch(work, "artifacts") as folder:
        source = folder / "source.bin"
        progress(f"artifacts: writing {settings.mb} MiB of random bytes (seed {settings.seed})")
        write_random_file(source, settings.mb, settings.seed)
        expected = read_and_hash(source)
        runs = artifact_rounds(source, folder, settings, keyring, expected)
        progress("artifacts: peak memory of a put")
        peaks = {}
        for mode, ring in (("plain", None), ("encrypted", keyring)):
            with scratch(folder, f"memory-{mode}") as target:
                peaks[mode] = put_peak_mib(source, target, ring)
    report = artifact_report(settings, runs, peaks)
    report["process_max_rss_mib"] = max_rss_mib()
    return report


# -- metadata: raw DB-API baselines --------------------------------------------------------

Row = tuple[str, str, str, str, str, str]

SQLITE_RAW_DDL = (
    "CREATE TABLE bench_raw (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id VARCHAR(32) NOT NULL UNIQUE, type VARCHAR(128) NOT NULL,"
    " subject VARCHAR(512) NOT NULL, payload JSON NOT NULL, actor VARCHAR(256) NOT NULL,"
    " occurred_at VARCHAR(32) NOT NULL)",
    "CREATE INDEX ix_bench_raw_type_seq ON bench_raw (type, seq)",
)
POSTGRES_RAW_DDL = (
    "CREATE TABLE {schema}.bench_raw (seq BIGSERIAL PRIMARY KEY,"
    " id VARCHAR(32) NOT NULL UNIQUE, type VARCHAR(128) NOT NULL,"
    " subject VARCHAR(512) NOT NULL, payload JSON NOT NULL, actor VARCHAR(256) NOT NULL,"
    " occurred_at TIMESTAMPTZ NOT NULL)",
    "CREATE INDEX ix_bench_raw_type_seq ON {schema}.bench_raw (type, seq)",
)
RAW_COLUMNS = "(id, type, subject, payload, actor, occurred_at)"


def raw_row(index: int) -> Row:
    """Return a row equivalent to one loopline event: fresh id, JSON payload, timestamp."""
    return (uuid.uuid4().hex, "custom.bench", f"s{index}", json.dumps({"i": index}), "bench",
            datetime.now(UTC).isoformat())


class RawTable(Protocol):
    """A scratch table that takes rows in committed transactions."""

    def insert(self, rows: list[Row]) -> None:
        """Insert ``rows`` one statement each, in one committed transaction."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


class SqliteRaw:
    """Python's sqlite3 on its own file, with the store's pragmas (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        for statement in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                          "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=30000",
                          *SQLITE_RAW_DDL):
            self._conn.execute(statement)

    def insert(self, rows: list[Row]) -> None:
        """Insert ``rows`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (as the store writes)."""
        self._conn.execute("BEGIN IMMEDIATE")
        for row in rows:
            self._conn.execute(f"INSERT INTO bench_raw {RAW_COLUMNS} VALUES (?, ?, ?, ?, ?, ?)",
                               row)
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class PostgresRaw:
    """psycopg on one connection, a scratch table in the benchmark's private schema."""

    def __init__(self, conninfo: str, schema: str) -> None:
        import psycopg

        self._schema = schema
        self._conn = psycopg.connect(conninfo)
        for statement in POSTGRES_RAW_DDL:
            self._conn.execute(statement.format(schema=f'"{schema}"'))
        self._conn.commit()

    def insert(self, rows: list[Row]) -> None:
        """Insert ``rows`` with ``RETURNING seq`` (as the ORM does) and commit."""
        sql = (f'INSERT INTO "{self._schema}".bench_raw {RAW_COLUMNS}'
               " VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq")
        for row in rows:
            self._conn.execute(sql, row).fetchone()
        self._conn.commit()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def raw_rates(raw: RawTable, settings: Settings) -> dict[str, float]:
    """Time one row per transaction and ``batch_size`` rows per transaction (rows/s)."""
    count, batch = settings.events, settings.batch_size

    def single() -> None:
        for index in range(count):
            raw.insert([raw_row(index)])

    def batched() -> None:
        for start in range(0, count, batch):
            raw.insert([raw_row(i) for i in range(start, min(start + batch, count))])

    _, single_s = measure(single)
    _, batched_s = measure(batched)
    return {"raw_insert_per_s": per_second(count, single_s),
            "raw_insert_batched_rows_per_s": per_second(count, batched_s)}


# -- metadata: loopline --------------------------------------------------------------------


def append_audit(store: MetadataStore, count: int) -> None:
    """Append ``count`` audit entries, one per write transaction."""
    for index in range(count):
        with store.write("bench") as uow:
            uow.audit("bench.append", f"s{index}", None, {"i": index})


def append_events(store: MetadataStore, count: int) -> None:
    """Append ``count`` events, one per write transaction."""
    for index in range(count):
        with store.write("bench") as uow:
            uow.emit("custom.bench", f"s{index}", {"i": index})


def append_batched(store: MetadataStore, count: int, batch: int) -> None:
    """Append ``count`` events, ``batch`` per write transaction."""
    for start in range(0, count, batch):
        with store.write("bench") as uow:
            for index in range(start, min(start + batch, count)):
                uow.emit("custom.batched", f"b{index}", {"i": index})


def append_rates(store: MetadataStore, settings: Settings) -> dict[str, float]:
    """Time audit appends, single events and batched events (per second)."""
    _, audit_s = measure(lambda: append_audit(store, settings.audit))
    _, events_s = measure(lambda: append_events(store, settings.events))
    _, batched_s = measure(lambda: append_batched(store, settings.events, settings.batch_size))
    return {"audit_appends_per_s": per_second(settings.audit, audit_s),
            "events_per_s": per_second(settings.events, events_s),
            "batched_events_per_s": per_second(settings.events, batched_s),
            "batch_size": settings.batch_size}


def dispatch_rate(store: MetadataStore) -> dict[str, float]:
    """Deliver every event in the log to one fresh subscriber with ``run_once``; events/s."""
    expected = store.events.count()
    dispatcher = Dispatcher(store.event_source(), batch_size=DISPATCH_BATCH)
    dispatcher.subscribe("bench", lambda _event: None)

    def deliver_all() -> int:
        handled = 0
        while handled < expected:
            report = dispatcher.run_once()
            if report.handled == 0 or report.failed:
                break
            handled += report.handled
        return handled

    try:
        handled, seconds = measure(deliver_all)
    finally:
        dispatcher.close()
    check(handled == expected, f"dispatched {handled} of {expected} events")
    return {"dispatch_events_per_s": per_second(handled, seconds), "dispatched": handled,
            "dispatch_batch_size": DISPATCH_BATCH}


def emit_spaced(store: MetadataStore, count: int, seed: int) -> dict[str, float]:
    """Emit ``count`` events one per transaction, 2-8 ms apart; return commit times."""
    rng = random.Random(seed)
    committed: dict[str, float] = {}
    for index in range(count):
        subject = f"live{index}"
        with store.write("bench") as uow:
            uow.emit("custom.live", subject, {"i": index})
        committed[subject] = time.perf_counter()
        time.sleep(rng.uniform(0.002, 0.008))
    return committed


def lag_summary(committed: dict[str, float], delivered: dict[str, float]) -> dict[str, Any]:
    """Summarise delivery minus commit times in milliseconds (median, p95, max)."""
    lags = sorted(max(0.0, delivered[s] - committed[s]) * 1000 for s in delivered)
    summary: dict[str, Any] = {"samples": len(lags), "missing": len(committed) - len(lags)}
    if lags:
        p95 = statistics.quantiles(lags, n=20, method="inclusive")[18] if len(lags) > 1 \
            else lags[0]
        summary.update(median_ms=round(statistics.median(lags), 2), p95_ms=round(p95, 2),
                       max_ms=round(lags[-1], 2))
    return summary


def delivery_lag(store: MetadataStore, settings: Settings) -> dict[str, Any]:
    """Run a live dispatcher in a thread and measure commit-to-handler lag per event."""
    count = settings.latency_events
    delivered: dict[str, float] = {}
    done = threading.Event()

    def handler(event: Event) -> None:
        if event.type == "custom.live":
            delivered.setdefault(event.subject, time.perf_counter())
            if len(delivered) >= count:
                done.set()

    source = store.event_source(poll_interval=POLL_INTERVAL)
    source.wait_for_events(0.01)  # opens the LISTEN connection now, not after the first emit
    dispatcher = Dispatcher(source, batch_size=DISPATCH_BATCH)
    dispatcher.subscribe("live", handler)
    dispatcher.run_once()  # catch up on the events appended earlier
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop, IDLE_WAIT), daemon=True)
    thread.start()
    try:
        committed = emit_spaced(store, count, settings.seed)
        done.wait(DELIVERY_TIMEOUT)
    finally:
        stop.set()
        thread.join()
        dispatcher.close()
    mechanism = ("LISTEN/NOTIFY" if store.backend == "postgresql"
                 else f"polling every {POLL_INTERVAL * 1000:.0f} ms")
    return {"mechanism": mechanism, "idle_wait_s": IDLE_WAIT,
            **lag_summary(committed, dict(delivered))}


def verify_rate(store: MetadataStore) -> dict[str, Any]:
    """Time ``audit.verify()`` over the whole chain built so far."""
    report, seconds = measure(store.audit.verify)
    check(report.ok, "the audit chain does not verify")
    return {"audit_verify_entries_per_s": per_second(report.entries, seconds),
            "audit_verify_entries": report.entries, "audit_chain_ok": report.ok}


def metadata_figures(store: MetadataStore, raw: RawTable, settings: Settings) -> dict[str, Any]:
    """Measure one backend: raw baseline, appends, dispatch, delivery lag, verification."""
    name = store.backend
    progress(f"metadata/{name}: raw DB-API inserts")
    baseline = raw_rates(raw, settings)
    progress(f"metadata/{name}: audit and event appends")
    appends = append_rates(store, settings)
    progress(f"metadata/{name}: dispatch")
    dispatch = dispatch_rate(store)
    progress(f"metadata/{name}: delivery lag of a live dispatcher")
    lag = delivery_lag(store, settings)
    progress(f"metadata/{name}: audit chain verification")
    verify = verify_rate(store)
    ratios = {
        "note": RATIO_NOTE,
        "audit_vs_raw_insert": ratio(appends["audit_appends_per_s"],
                                     baseline["raw_insert_per_s"]),
        "events_vs_raw_insert": ratio(appends["events_per_s"], baseline["raw_insert_per_s"]),
        "batched_events_vs_raw_batched": ratio(appends["batched_events_per_s"],
                                               baseline["raw_insert_batched_rows_per_s"]),
    }
    return {**appends, **dispatch, "delivery_lag": lag, **verify, "baseline": baseline,
            "ratios": ratios}


def bench_store(url: str, raw: RawTable, settings: Settings) -> dict[str, Any]:
    """Open and migrate the store at ``url``, measure it, close both connections."""
    try:
        store = MetadataStore.open(url, check_schema=False)
        try:
            store.upgrade()
            return {"url": store.display_url, **metadata_figures(store, raw, settings)}
        finally:
            store.close()
    finally:
        raw.close()


def bench_sqlite(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure the store on a temporary SQLite file, the baseline on another file beside it."""
    with scratch(work, "sqlite") as folder:
        raw = SqliteRaw(folder / "raw.db")
        figures = bench_store(f"sqlite:///{folder / 'meta.db'}", raw, settings)
    return {"sqlite_version": sqlite3.sqlite_version, **figures}


@contextmanager
def postgres_schema(url: str) -> Iterator[tuple[str, str, str]]:
    """Create a private schema; yield (store URL, libpq conninfo, schema); drop it after."""
    import psycopg

    schema = f"lb_{uuid.uuid4().hex[:16]}"
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options={quote(f'-csearch_path={schema}')}", conninfo, schema
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def server_version(conninfo: str) -> str:
    """Return the PostgreSQL server version string (for example ``15.4``)."""
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def bench_postgres(settings: Settings) -> dict[str, Any]:
    """Measure the store on PostgreSQL in a private schema, or say why it was not measured."""
    url = settings.postgres_url
    if not url:
        return {"skipped": f"no PostgreSQL URL (pass --postgres-url or set {POSTGRES_ENV})"}
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg is not installed (pip install 'loopline[postgres]')"}
    try:
        with postgres_schema(url) as (store_url, conninfo, schema):
            raw = PostgresRaw(conninfo, schema)
            figures = bench_store(store_url, raw, settings)
            return {"server_version": server_version(conninfo), "schema": schema, **figures}
    except (psycopg.Error, LooplineError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def bench_metadata(settings: Settings, work: Path) -> dict[str, Any]:
    """Measure the metadata store on SQLite and, when configured, on PostgreSQL."""
    return {"sqlite": bench_sqlite(settings, work), "postgresql": bench_postgres(settings)}


# -- command line --------------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` changes the defaults of the size flags only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, help="artifact size in MiB (default 256)")
    parser.add_argument("--repeat", type=int, help="artifact rounds, best reported (3)")
    parser.add_argument("--events", type=int, help="events appended per figure (2000)")
    parser.add_argument("--audit", type=int, help="audit entries appended (2000)")
    parser.add_argument("--batch-size", type=int, help="events per batched transaction (100)")
    parser.add_argument("--latency-events", type=int, help="events for the delivery lag (50)")
    add_common_arguments(parser, "folder for temporary files (default: system temp)")
    parser.add_argument("--no-prime", action="store_true",
                        help="do not warm page cache before each timed write")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in base.items()}
    if any(value < 1 for value in sizes.values()):
        parser.error("sizes and counts must be at least 1")
    return Settings(**sizes, seed=args.seed, quick=args.quick, tmpdir=args.tmpdir,
                    prime=not args.no_prime,
                    postgres_url=None if args.no_postgres else args.postgres_url)



def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the JSON report; exit 1 when a backend errored."""
    settings = parse_settings(argv)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        work = Path(tmp)
        artifacts = bench_artifacts(settings, work)
        metadata = bench_metadata(settings, work)
    report = {"benchmark": "loopline foundation stores", "machine": machine(),
              "settings": public_settings(settings), "artifacts": artifacts,
              "metadata": metadata, "elapsed_s": elapsed()}
    print(json.dumps(report, indent=2))
    progress("done")
    return 1 if any("error" in figures for figures in metadata.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
