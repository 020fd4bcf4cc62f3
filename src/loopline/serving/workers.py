"""The models' workers: predictions off the event loop, and work queued off the request path.

``ModelRunner`` is one routed version's way to predict off the event loop: its
``MicroBatcher`` when batching is on, else a worker thread of its own (a model is not
assumed to be thread-safe, so one thread per model). ``RunnerPool`` keeps one runner per
routed version and closes those whose version left the routing table once their requests
drain. ``OffLoopQueue`` is a bounded queue drained by a thread of its own (the shadow routes'
work), which drops and counts what does not fit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue as queues
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.errors import ConflictError, UserCodeError
from loopline.core.ports import ServableModel
from loopline.serving.batching import Check, MicroBatcher

logger = logging.getLogger(__name__)

_STOP = object()


def datatype_of(values: Any) -> str:
    """Return the V2 datatype of a model's predictions."""
    kind = values.dtype.kind if isinstance(values, np.ndarray) else np.asarray(values).dtype.kind
    return {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}.get(kind, "BYTES")


def as_predictions(result: Any, rows: int) -> list[Any]:
    """Return one JSON-ready prediction per row.

    Raises:
        UserCodeError: when the model did not return one prediction per row.
    """
    if isinstance(result, pd.DataFrame):
        values: list[Any] = result.to_dict("records")
    elif hasattr(result, "tolist"):
        values = result.tolist()
    else:
        values = list(result)
    if len(values) != rows:
        raise UserCodeError(f"the model returned {len(values)} predictions for {rows} rows")
    return values


class ModelRunner:
    """One model's predictions off the event loop, batched or in a worker thread of its own.

    Through its micro-batcher when batching is on (``batch_rows >= 1``), else in one worker
    thread (a model is not assumed to be thread-safe).

    ``active`` counts the requests using the runner; a ``retired`` runner (its version left
    the routing table) is closed by whoever releases it last.
    """

    def __init__(self, model: ServableModel, batch_rows: int, batch_wait_ms: float,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.model = model
        self.batcher = MicroBatcher(model.predict, batch_rows if model.batchable else 1,
                                    batch_wait_ms, on_batch=on_batch) if batch_rows > 0 else None
        self._executor = None if self.batcher is not None else ThreadPoolExecutor(
            1, thread_name_prefix="loopline-predict")
        self._on_batch = on_batch
        self.active = 0
        self.retired = False
        self.closed = False

    async def predict(self, frame: pd.DataFrame, check: Check | None = None) -> Any:
        """Return ``model.predict(frame)``, computed in a worker thread.

        ``check(frame)``, when given, runs first in the worker thread; what it raises fails
        this request alone (``predict`` is then not called for it).

        Raises:
            ConflictError: after ``close``.
            Exception: whatever ``check`` or ``predict`` raised.
        """
        if self.batcher is not None:
            return await self.batcher.submit(frame, check)
        if self.closed or self._executor is None:
            raise ConflictError("the model's worker is closed; its version was replaced")
        result = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._checked_predict, frame, check)
        if self._on_batch is not None:
            self._on_batch(len(frame))
        return result

    def _checked_predict(self, frame: pd.DataFrame, check: Check | None) -> Any:
        """Run ``check`` then ``predict`` on ``frame`` (in the worker thread)."""
        if check is not None:
            check(frame)
        return self.model.predict(frame)

    async def close(self) -> None:
        """Finish what is queued and release the worker thread (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.batcher is not None:
            await self.batcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)


class RunnerPool:
    """One ``ModelRunner`` per routed version, closed when the version leaves the table.

    Used on the event loop only. ``on_batch(uri)`` returns the per-call row counter of a
    version.
    """

    def __init__(self, batching: tuple[int, float],
                 on_batch: Callable[[str], Callable[[int], None]]) -> None:
        self._batch_rows, self._batch_wait = batching
        self._on_batch = on_batch
        self._runners: dict[str, ModelRunner] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def uris(self) -> tuple[str, ...]:
        """The versions that hold a runner now."""
        return tuple(self._runners)

    def acquire(self, model: ServableModel, live: Mapping[str, ServableModel]) -> ModelRunner:
        """Return ``model``'s runner, counted as used until ``release``.

        ``live`` is the current table's models: a model no longer among them (its request
        was routed by a table replaced meanwhile) gets a runner used once, then closed.
        """
        found = self._runners.get(model.uri)
        if found is None or found.model is not model:
            runner = ModelRunner(model, self._batch_rows, self._batch_wait,
                                 self._on_batch(model.uri))
            if live.get(model.uri) is not model:  # routed by a table replaced meanwhile
                runner.retired = True
            else:
                if found is not None:  # a reloaded version: the old runner finishes, stops
                    self._retire(found)
                self._runners[model.uri] = runner
            found = runner
        found.active += 1
        return found

    def release(self, runner: ModelRunner) -> None:
        """Stop counting one use of ``runner``; close it if retired and unused."""
        runner.active -= 1
        if runner.retired and runner.active <= 0:
            self._close_later(runner)

    def retain(self, live: Mapping[str, ServableModel]) -> None:
        """Retire the runners of versions not in ``live`` (closed once their requests end)."""
        for uri, runner in list(self._runners.items()):
            if live.get(uri) is not runner.model:
                self._retire(runner)

    def _retire(self, runner: ModelRunner) -> None:
        runner.retired = True
        if self._runners.get(runner.model.uri) is runner:
            del self._runners[runner.model.uri]
        if runner.active <= 0:
            self._close_later(runner)

    def _close_later(self, runner: ModelRunner) -> None:
        if runner.closed:
            return
        task = asyncio.get_running_loop().create_task(runner.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Finish what every runner has queued and close them all."""
        runners = list(self._runners.values())
        self._runners.clear()
        for runner in runners:
            await runner.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class OffLoopQueue:
    """A bounded queue of work items handled one at a time by a daemon thread of its own.

    ``offer`` never blocks: when the queue is full (or closed) the item is dropped and
    ``on_drop`` is called. A failing item is logged and the thread goes on.
    """

    def __init__(self, handle: Callable[[Any], None], max_items: int, name: str,
                 on_drop: Callable[[], None] | None = None) -> None:
        self._handle = handle
        self._on_drop = on_drop
        self._queue: queues.Queue[Any] = queues.Queue(max(int(max_items), 1))
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def offer(self, item: Any) -> bool:
        """Queue ``item``; False (and ``on_drop``) when it was dropped."""
        if not self._closed:
            try:
                self._queue.put_nowait(item)
                return True
            except queues.Full:
                pass
        if self._on_drop is not None:
            self._on_drop()
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._handle(item)
            except Exception:  # one item's failure never stops the others
                logger.exception("off-loop work item failed")

    def close(self, timeout: float = 10.0) -> None:
        """Handle what is queued (within ``timeout`` seconds) and stop the thread."""
        self._closed = True
        with contextlib.suppress(queues.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
