"""Adaptive micro-batching: concurrent requests to one model scored in one ``predict`` call.

One background task per batcher takes frames from a queue, joins those that arrived together
(up to ``max_rows`` rows, same columns and dtypes, so concatenation never changes a value's
type), runs ``predict`` once in the batcher's single worker thread (a model is not assumed to
be thread-safe) and hands each caller its own slice of the result. It is adaptive: a lone
request is never held back; the batcher waits up to ``max_wait_ms`` for company only while
traffic is concurrent (the previous batch joined several requests), and requests that arrive
while a batch is being scored form the next batch. An exception in ``predict`` fails exactly
the callers in that batch. A caller may give a ``check`` for its own frame: it runs in the
worker thread before the frames are joined, and a frame whose check raises fails alone (the
others are scored). ``max_queue_rows`` bounds the rows waiting: a frame that would
pass it is refused at once with ``QueueFull`` (503) instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.errors import ConflictError, InvalidArgumentError, UserCodeError
from loopline.serving.answers import RequestRefused

Predict = Callable[[pd.DataFrame], Any]
Check = Callable[[pd.DataFrame], None]


class QueueFull(RequestRefused):
    """503: the rows waiting to be scored are at their limit (``max_queue_rows``)."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(503, "max_queue_rows", f"{waiting} rows are already waiting to be "
                                                f"scored, the server's limit of {limit}; "
                                                "retry shortly")


@dataclass(slots=True)
class _Job:
    frame: pd.DataFrame
    future: asyncio.Future[Any]
    shape: tuple[Any, ...] = field(default=())
    check: Check | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)


_STOP = object()


def _shape(frame: pd.DataFrame) -> tuple[Any, ...]:
    """Return what frames must share to be concatenated without a change of type."""
    return (tuple(frame.columns), tuple(frame.dtypes))


def _split(result: Any, counts: list[int]) -> list[Any]:
    """Cut ``result`` (one prediction per row) into consecutive pieces of ``counts`` rows.

    Raises:
        UserCodeError: when the result does not hold one prediction per row.
    """
    total = sum(counts)
    if isinstance(result, pd.DataFrame | pd.Series):
        sliceable: Any = result
        length = len(result)
    elif isinstance(result, np.ndarray | list | tuple):
        sliceable, length = result, len(result)
    else:
        sliceable = np.asarray(result)
        length = len(sliceable) if sliceable.ndim else -1
    if length != total:
        raise UserCodeError(f"predict returned {length} predictions for a batch of {total} "
                            "rows; a model must return one prediction per row")
    pieces, start = [], 0
    for count in counts:
        if isinstance(sliceable, pd.DataFrame | pd.Series):
            pieces.append(sliceable.iloc[start:start + count].reset_index(drop=True))
        else:
            pieces.append(sliceable[start:start + count])
        start += count
    return pieces


class MicroBatcher:
    """Coalesces concurrent ``submit`` calls into fewer ``predict`` calls.

    ``max_rows <= 1`` turns batching off: each frame is scored alone (still in the worker
    thread). ``executor`` defaults to a private single-thread pool, shut down by ``close``.
    ``on_batch(rows)`` is called after each ``predict`` call (for a batch-size histogram).

    Raises:
        InvalidArgumentError: for a negative ``max_wait_ms``.
    """

    def __init__(self, predict: Predict, max_rows: int = 32, max_wait_ms: float = 2.0,
                 executor: Executor | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 max_queue_rows: int | None = None) -> None:
        if max_wait_ms < 0:
            raise InvalidArgumentError("max_wait_ms", f"{max_wait_ms!r} must be >= 0")
        self._predict = predict
        self._max_rows = max(int(max_rows), 1)
        self._max_wait = max_wait_ms / 1000.0
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="loopline-batch")
        self._on_batch = on_batch
        self._max_queue_rows = max_queue_rows
        self._queued_rows = 0
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._concurrent = False
        self._carry: _Job | None = None
        self.batches = 0
        self.rows = 0

    @property
    def enabled(self) -> bool:
        """Whether frames of several requests may share a ``predict`` call."""
        return self._max_rows > 1

    @property
    def queue_depth(self) -> int:
        """Frames waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def queued_rows(self) -> int:
        """Rows submitted and not yet answered (waiting, or in the batch being scored)."""
        return self._queued_rows

    async def submit(self, frame: pd.DataFrame, check: Check | None = None) -> Any:
        """Score ``frame`` (possibly with other callers' rows) and return its predictions.

        ``check(frame)``, when given, runs in the worker thread before ``frame`` joins a
        batch; what it raises fails this caller alone.

        Raises:
            ConflictError: after ``close``.
            QueueFull: when ``max_queue_rows`` rows already wait (a lone frame always fits).
            UserCodeError: when the result does not hold one prediction per row.
            Exception: whatever ``check`` raised for this frame, or ``predict`` for its batch.
        """
        if self._closed:
            raise ConflictError("the micro-batcher is closed; the server is shutting down")
        limit, rows = self._max_queue_rows, len(frame)
        if limit is not None and self._queued_rows and self._queued_rows + rows > limit:
            raise QueueFull(self._queued_rows, limit)
        loop = asyncio.get_running_loop()
        queue = self._queue
        if queue is None:
            queue = self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(queue), name="loopline-batcher")
        future: asyncio.Future[Any] = loop.create_future()
        queue.put_nowait(_Job(frame, future, _shape(frame) if self.enabled else (), check))
        self._queued_rows += rows
        try:
            return await future
        finally:
            self._queued_rows -= rows

    async def close(self) -> None:
        """Score what is queued, stop the background task and release the worker thread."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and self._queue is not None:
            self._queue.put_nowait(_STOP)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def _run(self, queue: asyncio.Queue[Any]) -> None:
        try:
            while True:
                first = self._carry if self._carry is not None else await queue.get()
                self._carry = None
                if first is _STOP:
                    return
                batch, stop = await self._collect(queue, first)
                await self._execute(batch)
                if stop:
                    return
        finally:  # never leave a caller waiting on a batcher that stopped
            self._closed = True
            while not queue.empty():
                item = queue.get_nowait()
                if item is not _STOP and not item.future.done():
                    item.future.set_exception(ConflictError("the micro-batcher stopped"))

    async def _collect(self, queue: asyncio.Queue[Any], first: _Job) -> tuple[list[_Job], bool]:
        """Return the batch ``first`` leads and whether the stop marker was reached."""
        batch, rows = [first], first.rows
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._max_wait if self._concurrent else 0.0)
        while rows < self._max_rows:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if item is _STOP:
                return batch, True
            if item.future.done():  # its caller went away
                continue
            if rows + item.rows > self._max_rows or item.shape != first.shape:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch, False

    def _score(self, batch: list[_Job]) -> tuple[list[Any], int]:
        """Check each frame, score those that pass in one call (in the worker thread).

        Returns one outcome per job (its predictions, or the exception that fails it) and the
        rows given to ``predict`` (0 when it was not called).
        """
        outcomes: list[Any] = [None] * len(batch)
        joined = self._checked_together(batch)
        if joined is not None:
            return self._predict_split(batch, list(range(len(batch))), outcomes, joined)
        passed: list[int] = []
        for index, job in enumerate(batch):
            try:
                if job.check is not None:
                    job.check(job.frame)
                passed.append(index)
            except Exception as exc:  # noqa: BLE001  # fails this caller alone
                outcomes[index] = exc
        if not passed:
            return outcomes, 0
        return self._predict_split(batch, passed, outcomes, None)

    @staticmethod
    def _checked_together(batch: list[_Job]) -> pd.DataFrame | None:
        """Return the batch's frames joined when one check of them all passed, else None.

        Only for several frames sharing one (equal) check: each passing alone is then the
        same as all passing together, and the check's cost is paid once. When the joined
        check raises, the caller checks each frame on its own to fail only the culprits.
        """
        check = batch[0].check
        if len(batch) < 2 or check is None or any(job.check != check for job in batch):
            return None
        frame = pd.concat([job.frame for job in batch], ignore_index=True)
        try:
            check(frame)
        except Exception:  # noqa: BLE001  # some frame fails: each is checked on its own
            return None
        return frame

    def _predict_split(self, batch: list[_Job], passed: list[int], outcomes: list[Any],
                       joined: pd.DataFrame | None) -> tuple[list[Any], int]:
        """Predict the passed frames in one call and put each one's piece in ``outcomes``."""
        frames = [batch[i].frame for i in passed]
        frame = joined if joined is not None else frames[0] if len(frames) == 1 else \
            pd.concat(frames, ignore_index=True)
        try:
            result = self._predict(frame)
            pieces = [result] if len(frames) == 1 else _split(result, [len(f) for f in frames])
        except Exception as exc:  # noqa: BLE001  # handed to exactly this batch's callers
            pieces = [exc] * len(frames)
        for index, piece in zip(passed, pieces, strict=True):
            outcomes[index] = piece
        return outcomes, len(frame)

    async def _execute(self, batch: list[_Job]) -> None:
        live = [job for job in batch if not job.future.done()]
        if not live:
            return
        try:
            outcomes, rows = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._score, live)
        except Exception as exc:  # noqa: BLE001  # the worker itself failed (shut down)
            outcomes, rows = [exc] * len(live), 0
        # traffic is concurrent when the batch joined several requests, or when more arrived
        # while it was scored (``queued_rows`` still counts this batch's rows)
        self._concurrent = len(live) > 1 or self._queued_rows > sum(j.rows for j in live)
        if rows:
            self.batches += 1
            self.rows += rows
            if self._on_batch is not None:
                self._on_batch(rows)
        for job, outcome in zip(live, outcomes, strict=True):
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
