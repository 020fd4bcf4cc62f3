"""Per-version request counts and latency sketches, kept in memory and flushed to the store.

``record`` is O(1) under a lock: it adds to the cell of (deployment, model version, time
bucket) and keeps the latency for the next flush. A background thread flushes every
``flush_seconds``: it folds new latencies into the cell's ``QuantileSketch`` and hands the
sink each changed cell's **cumulative** state (``store.serving_stats.add_stats`` replaces a
row with it), so a flush retried after a failure never counts anything twice. A failed
flush keeps its cells changed for the next one; cells of closed buckets are forgotten once
written. Memory is bounded: beyond ``max_buckets`` cells the oldest are dropped and counted.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from loopline.core.clock import Clock
from loopline.core.errors import InvalidArgumentError
from loopline.data.quantile_sketch import QuantileSketch
from loopline.store import MetadataStore
from loopline.store.serving_stats import MAX_ROWS_PER_WRITE, StatsRow, add_stats

__all__ = ["StatsRecorder", "StatsSink", "default_instance"]

log = logging.getLogger(__name__)

StatsSink = Callable[[Sequence[StatsRow]], None]
MAX_PENDING_LATENCIES = 200_000  # per cell between flushes; beyond it only counts are kept
_Key = tuple[str, str, datetime]


def default_instance() -> str:
    """Return a name unique to this server process: host, pid and a random suffix."""
    return f"{socket.gethostname()[:96]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class _Cell:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    sketch: QuantileSketch = field(default_factory=QuantileSketch)
    dirty: bool = True


class StatsRecorder:
    """Counts requests, errors and latencies per deployment, version and time bucket.

    ``sink`` receives rows to write (``StatsRecorder.for_store`` uses ``add_stats``);
    ``instance`` names this server process (``default_instance()``); ``flush_seconds=None``
    starts no thread (call ``flush`` yourself). Call ``close`` to stop and flush.

    Raises:
        InvalidArgumentError: for a non-positive ``bucket_seconds`` or ``flush_seconds``.
    """

    def __init__(self, sink: StatsSink, instance: str, clock: Clock, bucket_seconds: float = 10,
                 flush_seconds: float | None = 5, max_buckets: int = MAX_ROWS_PER_WRITE) -> None:
        if not bucket_seconds > 0:
            raise InvalidArgumentError("bucket_seconds", f"{bucket_seconds!r} must be > 0")
        if flush_seconds is not None and not flush_seconds > 0:
            raise InvalidArgumentError("flush_seconds", f"{flush_seconds!r} must be > 0")
        if max_buckets < 1:
            raise InvalidArgumentError("max_buckets", f"{max_buckets!r} must be >= 1")
        self._sink = sink
        self.instance = instance
        self._clock = clock
        self._bucket = float(bucket_seconds)
        self._max_cells = max_buckets
        self._cells: dict[_Key, _Cell] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._span = (math.inf, -math.inf, datetime.min.replace(tzinfo=UTC))
        self.dropped_buckets = 0
        self.dropped_latencies = 0
        self.flush_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if flush_seconds is not None:
            self._thread = threading.Thread(target=self._loop, args=(flush_seconds,),
                                            name="loopline-stats", daemon=True)
            self._thread.start()

    @classmethod
    def for_store(cls, store: MetadataStore, instance: str, clock: Clock | None = None,
                  ) -> StatsRecorder:
        """Return a recorder writing to ``store``'s ``serving_stats`` (clock: the store's)."""
        return cls(lambda rows: add_stats(store, rows), instance, clock or store.clock)

    def _bucket_start(self) -> datetime:
        """Return the start of the bucket holding now (aware UTC), cached within a bucket."""
        now = self._clock.now().timestamp()
        low, high, start = self._span
        if low <= now < high:
            return start
        low = math.floor(now / self._bucket) * self._bucket
        start = datetime.fromtimestamp(low, UTC)
        self._span = (low, low + self._bucket, start)
        return start

    def record(self, deployment: str, model_version: str, error: bool,
               latency_ms: float) -> None:
        """Count one request to ``model_version`` of ``deployment`` in the current bucket."""
        key = (deployment, model_version, self._bucket_start())
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                cell = self._cells[key] = _Cell()
            cell.requests += 1
            cell.errors += bool(error)
            if len(cell.latencies) < MAX_PENDING_LATENCIES:
                cell.latencies.append(latency_ms)
            else:
                self.dropped_latencies += 1
            cell.dirty = True

    def pending(self) -> int:
        """Return how many cells have changes not yet written."""
        with self._lock:
            return sum(cell.dirty for cell in self._cells.values())

    def flush(self) -> bool:
        """Hand every changed cell's cumulative state to the sink; True when it accepted them.

        A sink failure is logged and counted; the cells are retried at the next flush.
        """
        with self._flush_lock:
            rows, keys = self._snapshot()
            ok = True
            for start in range(0, len(rows), MAX_ROWS_PER_WRITE):
                try:
                    self._sink(rows[start:start + MAX_ROWS_PER_WRITE])
                except Exception:  # keep serving: the store may be down for a while
                    log.exception("could not write serving stats; retrying at the next flush")
                    self.flush_failures += 1
                    self._mark_dirty(keys[start:])
                    ok = False
                    break
            self._forget_closed()
            return ok

    def _snapshot(self) -> tuple[list[StatsRow], list[_Key]]:
        """Take the changed cells' counts and new latencies; fold those into their sketches."""
        taken: list[tuple[_Key, _Cell, int, int, list[float]]] = []
        with self._lock:
            for key, cell in self._cells.items():
                if cell.dirty:
                    taken.append((key, cell, cell.requests, cell.errors, cell.latencies))
                    cell.latencies = []
                    cell.dirty = False
        rows = []
        for key, cell, requests, errors, latencies in taken:
            if latencies:  # only this thread (under _flush_lock) replaces a sketch
                cell.sketch = cell.sketch.merge(QuantileSketch.of(latencies))
            rows.append(StatsRow(deployment=key[0], model_version=key[1], instance=self.instance,
                                 bucket_start=key[2], requests=requests, errors=errors,
                                 latency_sketch=cell.sketch.to_dict()))
        return rows, [key for key, *_ in taken]

    def _mark_dirty(self, keys: Sequence[_Key]) -> None:
        with self._lock:
            for key in keys:
                cell = self._cells.get(key)
                if cell is not None:
                    cell.dirty = True

    def _forget_closed(self) -> None:
        """Drop written cells of buckets closed for a whole bucket; cap the rest by age."""
        horizon = self._clock.now() - timedelta(seconds=2 * self._bucket)
        with self._lock:
            for key in [k for k, cell in self._cells.items() if not cell.dirty
                        and k[2] <= horizon]:
                del self._cells[key]
            excess = len(self._cells) - self._max_cells
            if excess > 0:
                for key in sorted(self._cells, key=lambda k: k[2])[:excess]:
                    self.dropped_buckets += 1
                    del self._cells[key]
                log.warning("serving stats: dropped %d unwritten buckets (cap %d)", excess,
                            self._max_cells)

    def _loop(self, flush_seconds: float) -> None:
        while not self._stop.wait(flush_seconds):
            self.flush()

    def close(self) -> None:
        """Stop the flush thread and flush once more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
