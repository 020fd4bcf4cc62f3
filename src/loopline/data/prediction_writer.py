"""The model server's prediction writer: bounded, batched, asynchronous appends to the log.

``submit`` validates and encodes a record in the caller's thread (so a bad record fails
there, not in a batch later) and queues it without waiting for I/O. One background thread
writes a segment per deployment whenever ``batch_rows`` records wait, the oldest has waited
``max_age`` (by the injected clock), or ``flush``/``close`` asks. A segment that fails to
write is retried with capped exponential backoff and jitter; when every attempt fails its
rows are counted in ``failed_rows`` and the next ``flush`` raises. Records still queued when
the process dies are lost: a record is durable once a ``flush`` that followed it returned.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from loopline.core.errors import (
    BackendError,
    ConflictError,
    InvalidArgumentError,
    LooplineError,
)
from loopline.data.prediction_log import PredictionLog
from loopline.data.prediction_rows import (
    PredictionRow,
    prediction_row,
    predictions_from_rows,
    prefixed,
)

logger = logging.getLogger(__name__)

WhenFull = Literal["drop", "raise"]


@dataclass(frozen=True, slots=True)
class WriterOptions:
    """How a ``PredictionWriter`` batches, bounds and retries.

    ``max_queue`` bounds the records waiting (the batch being written comes on top, so at
    most ``max_queue + batch_rows`` are held). ``when_full``: ``"drop"`` makes ``submit``
    return False and count the record in ``dropped`` (the hot path never waits);
    ``"raise"`` makes it raise ``BackendError`` (shed load with a 503).
    """

    batch_rows: int = 10_000
    max_age: timedelta = timedelta(seconds=1)
    max_queue: int = 100_000
    when_full: WhenFull = "drop"
    attempts: int = 4
    backoff: float = 0.2
    backoff_cap: float = 5.0
    poll_interval: float = 0.05

    def checked(self) -> WriterOptions:
        """Return the options when usable.

        Raises:
            InvalidArgumentError: naming the option that is out of range.
        """
        for field, value in (("batch_rows", self.batch_rows), ("max_queue", self.max_queue),
                             ("attempts", self.attempts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(field, f"{value!r} must be a whole number >= 1")
        if self.when_full not in ("drop", "raise"):
            raise InvalidArgumentError("when_full", f"{self.when_full!r} is not drop or raise")
        if self.max_age <= timedelta(0):
            raise InvalidArgumentError("max_age", "must be positive")
        for field, seconds in (("backoff", self.backoff), ("backoff_cap", self.backoff_cap),
                               ("poll_interval", self.poll_interval)):
            if not 0 < seconds <= 3600:
                raise InvalidArgumentError(field, f"{seconds!r} must be in (0, 3600] seconds")
        return self


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of a writer since it started (for metrics)."""

    submitted: int
    written: int
    dropped: int
    pending: int
    segments: int
    retries: int
    failed_segments: int
    failed_rows: int


class PredictionWriter:
    """A bounded, thread-safe, batching writer in front of a ``PredictionLog``."""

    def __init__(self, log: PredictionLog, options: WriterOptions | None = None) -> None:
        self._log = log
        self._options = (options or WriterOptions()).checked()
        self._lock = threading.Condition(threading.Lock())  # not reentrant: cheaper
        self._pending: list[PredictionRow] = []
        self._oldest_at = log.clock.now()
        self._accepted = 0  # records queued so far; the n-th has sequence n - 1
        self._resolved = 0  # records written or given up on, in queue order
        self._flush_upto = 0
        self._closing = False
        self._counts = {"dropped": 0, "written": 0, "segments": 0, "retries": 0,
                        "failed_segments": 0, "failed_rows": 0}
        self._unreported: list[tuple[int, int, str]] = []  # (first seq, rows, error)
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def submit(self, record: object) -> bool:
        """Queue one ``PredictionRecord``; True when queued, False when dropped (queue full).

        Raises:
            InvalidArgumentError: naming ``record.<field>`` when the record is not valid.
            BackendError: when the queue is full and ``when_full`` is ``"raise"``.
            ConflictError: when the writer is closed.
        """
        try:
            row = prediction_row(record)
        except InvalidArgumentError as exc:
            raise prefixed(exc, "record") from exc
        with self._lock:
            if self._closing:
                raise ConflictError("the prediction writer is closed; open a new one")
            if len(self._pending) >= self._options.max_queue:
                return self._full()
            if not self._pending:
                self._oldest_at = self._log.clock.now()
            self._pending.append(row)
            self._accepted += 1
            if len(self._pending) >= self._options.batch_rows:
                self._lock.notify_all()
            return True

    def _full(self) -> bool:
        if self._options.when_full == "raise":
            raise BackendError(f"the prediction log queue is full ({self._options.max_queue} "
                               "records wait to be written); retry later or raise max_queue")
        self._counts["dropped"] += 1
        return False

    def flush(self, timeout: float | None = None) -> None:
        """Block until every record submitted before this call is written or given up on.

        Raises:
            BackendError: when records could not be written after every attempt (each
                failure is reported once), or the timeout passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            self._flush_upto = max(self._flush_upto, target)
            self._lock.notify_all()
            while self._resolved < target:
                if not self._thread.is_alive():
                    raise BackendError("the prediction writer thread has stopped")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise BackendError(f"flush timed out with {target - self._resolved} "
                                       "records not yet written")
                self._lock.wait(self._options.poll_interval if left is None
                                else min(left, self._options.poll_interval))
            failed = [item for item in self._unreported if item[0] < target]
            self._unreported = [item for item in self._unreported if item[0] >= target]
        if failed:
            rows = sum(item[1] for item in failed)
            raise BackendError(f"{rows} predictions could not be written after "
                               f"{self._options.attempts} attempts: {failed[-1][2]}")

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the background thread and wait for it; later submits are refused.

        Raises:
            BackendError: as ``flush`` does.
        """
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        try:
            self.flush(timeout)
        finally:
            self._thread.join(timeout)

    def stats(self) -> WriterStats:
        """Return a snapshot of the counters."""
        with self._lock:
            return WriterStats(submitted=self._accepted + self._counts["dropped"],
                               pending=len(self._pending), **self._counts)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ background thread

    def _due(self) -> bool:
        if not self._pending:
            return False
        if (len(self._pending) >= self._options.batch_rows or self._closing
                or self._flush_upto > self._resolved):
            return True
        return self._log.clock.now() - self._oldest_at >= self._options.max_age

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._due():
                    if self._closing and not self._pending:
                        return
                    self._lock.wait(self._options.poll_interval)
                first = self._resolved
                batch = self._pending[:self._options.batch_rows]
                del self._pending[:self._options.batch_rows]
            failed_rows, error = self._write(batch)
            with self._lock:
                self._resolved += len(batch)
                if failed_rows:
                    self._unreported.append((first, failed_rows, error))
                self._lock.notify_all()

    def _write(self, batch: list[PredictionRow]) -> tuple[int, str]:
        """Write one segment per deployment; return the rows given up on and the last error."""
        groups: dict[str, list[PredictionRow]] = {}
        for row in batch:
            groups.setdefault(row[2], []).append(row)
        failed, error = 0, ""
        for rows in groups.values():
            problem = self._write_group(rows)
            if problem is not None:
                failed, error = failed + len(rows), problem
        return failed, error

    def _write_group(self, rows: list[PredictionRow]) -> str | None:
        prepared = predictions_from_rows(rows)
        for attempt in range(1, self._options.attempts + 1):
            try:
                self._log.append(prepared)
            except InvalidArgumentError as exc:  # cannot pass on a retry: give up at once
                return self._given_up(rows, exc)
            # Any failure of the blob store or the database driver (whose exceptions this
            # layer cannot name) is worth another attempt; the last one is counted and reported.
            except Exception as exc:  # noqa: BLE001
                if attempt == self._options.attempts:
                    return self._given_up(rows, exc)
                with self._lock:
                    self._counts["retries"] += 1
                logger.warning("prediction segment attempt %d failed: %s", attempt, exc)
                time.sleep(self._delay(attempt))
            else:
                with self._lock:
                    self._counts["written"] += len(rows)
                    self._counts["segments"] += 1
                return None
        return None  # unreachable: the loop returns on the last attempt

    def _given_up(self, rows: list[PredictionRow], exc: BaseException) -> str:
        with self._lock:
            self._counts["failed_segments"] += 1
            self._counts["failed_rows"] += len(rows)
        logger.error("gave up writing %d predictions: %s", len(rows), exc,
                     exc_info=not isinstance(exc, LooplineError))
        return str(exc) or type(exc).__name__

    def _delay(self, attempt: int) -> float:
        ceiling = min(self._options.backoff_cap, self._options.backoff * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)  # jitter, not secrecy
