"""Executing the runs callers start over the API: on the server's pool, or on a thread here.

Every run a caller starts (``POST /runs``) or resumes (``POST /runs/{id}/resume``) executes
through the caller's own workspace view (its ``Runner``), so the runner acts, authorises
(with the token's role as a ceiling) and audits as the token's user, wherever it executes.

``create_api`` gets a ``RunPool`` from ``loopline server`` (its ``BackgroundWork``, whose
bounded pool also executes scheduled and triggered runs); a run goes there with the caller's
runner and the request answers at once. While the pool's backlog (runs queued or executing)
is at its ``backlog_limit``, one more is refused 503 with ``Retry-After`` before anything is
recorded. Without a pool, the run executes on a daemon thread of this server process, at most
``MAX_LOCAL_RUNS`` at a time, refused 503 the same way past that. A run a thread here was
executing when the process died keeps its lease until it expires and can then be resumed, as
can a run recorded but never executed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from starlette.datastructures import State

from loopline.api.errors import ApiError
from loopline.app import Workspace
from loopline.core.errors import BackendError, LooplineError
from loopline.core.runs import PipelineRun
from loopline.pipelines import PipelineDefinition, Runner

__all__ = ["MAX_LOCAL_RUNS", "RunPool", "RunStarter", "starter_of"]

log = logging.getLogger(__name__)
MAX_LOCAL_RUNS = 8
RETRY_AFTER_SECONDS = 5


class RunPool(Protocol):
    """The server's bounded pool that executes runs (``BackgroundWork`` of ``loopline server``)."""

    @property
    def in_flight(self) -> int:
        """How many runs are queued or executing on the pool now."""

    @property
    def backlog_limit(self) -> int:
        """How many runs may be queued or executing before the API refuses one more."""

    def execute(self, pipeline: PipelineDefinition, run: PipelineRun, runner: Runner, *,
                resume: bool) -> None:
        """Queue ``run`` to execute through ``runner`` (closed when the run ends).

        Without ``resume`` only a pending run executes; with it, a run in any state.

        Raises:
            RuntimeError: when the pool was shut down.
        """


def _overloaded(message: str) -> ApiError:
    return ApiError(503, "overloaded", message, None,
                    {"Retry-After": str(RETRY_AFTER_SECONDS)})


class RunStarter:
    """Hands runs to the server's pool, or executes them on threads here, as the caller."""

    def __init__(self, pool: RunPool | None, limit: int = MAX_LOCAL_RUNS) -> None:
        self._pool = pool
        self._limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._threads: set[threading.Thread] = set()
        self._admitting = 0  # runs admitted to the pool and not yet queued on it
        self._lock = threading.Lock()

    def start(self, ws: Workspace, pipeline: PipelineDefinition,
              record: Callable[[], PipelineRun], *, resumed: bool = False) -> PipelineRun:
        """Call ``record`` (which records or checks the run) and have the run executed.

        Returns the run at once; it executes in the background through ``ws.pipelines`` (the
        caller's runner): on the server's pool, or on a thread here when there is none.
        ``resumed`` says the run is one a caller resumes (it may be failed or interrupted,
        not only pending).

        Raises:
            ApiError: 503 with ``Retry-After`` when the pool's backlog is at its limit, or
                without a pool when ``limit`` runs execute here already (nothing is recorded
                then).
            BackendError: when the server's pool refuses the run (the server is stopping;
                the run stays as recorded and can be resumed).
            LooplineError: whatever ``record`` raises.
        """
        if self._pool is not None:
            return self._hand_over(self._pool, ws, pipeline, record, resumed)
        if not self._slots.acquire(blocking=False):
            raise _overloaded(f"this server executes {self._limit} runs at once without a "
                              "run pool, and that many run now; start this one when one of "
                              "them finished")
        try:
            run = record()
            self._spawn(ws, pipeline, run)
        except BaseException:
            self._slots.release()
            raise
        return run

    def _spawn(self, ws: Workspace, pipeline: PipelineDefinition, run: PipelineRun) -> None:
        """Start the thread executing ``run``; one that fails to start is not counted."""
        thread = threading.Thread(target=self._run_here, args=(ws, pipeline, run.id),
                                  name=f"loopline-api-run-{run.id}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(thread)
            raise

    def _hand_over(self, pool: RunPool, ws: Workspace, pipeline: PipelineDefinition,
                   record: Callable[[], PipelineRun], resume: bool) -> PipelineRun:
        self._admit(pool)
        try:
            run = record()
            try:
                pool.execute(pipeline, run, ws.pipelines, resume=resume)
            except RuntimeError as exc:  # a pool that was shut down: the server is stopping
                raise BackendError(f"the server's run pool did not take run {run.id} ({exc}); "
                                   f"it is recorded {run.state}: resume it later") from exc
        finally:
            with self._lock:
                self._admitting -= 1
        return run

    def _admit(self, pool: RunPool) -> None:
        """Count one more run towards the pool's backlog, or refuse it 503 when full.

        Runs admitted but not yet queued count too, so concurrent requests cannot all pass
        the check and overfill the pool together.
        """
        limit = pool.backlog_limit
        with self._lock:
            backlog = pool.in_flight + self._admitting
            if backlog >= limit:
                raise _overloaded(f"this server has {backlog} runs queued or executing, its "
                                  f"limit ({limit}); start this one when some have finished")
            self._admitting += 1

    def _run_here(self, ws: Workspace, pipeline: PipelineDefinition, run_id: str) -> None:
        try:
            result = ws.pipelines.resume(run_id, pipeline)
            log.info("run %s of %s ended %s", run_id, pipeline.name, result.run.state)
        except LooplineError as exc:  # held by another runner, the store failed ...
            log.warning("run %s of %s was not executed here: %s", run_id, pipeline.name,
                        exc.message)
        except Exception:
            log.exception("run %s of %s: the runner broke", run_id, pipeline.name)
        finally:
            ws.pipelines.close()
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def running(self) -> int:
        """Return how many runs execute on threads of this process now."""
        with self._lock:
            return len(self._threads)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the runs executing here; tell whether all ended."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)


def starter_of(state: State) -> RunStarter:
    """Return the app's ``RunStarter`` (``create_api`` sets ``state.run_starter``)."""
    found = getattr(state, "run_starter", None)
    if not isinstance(found, RunStarter):  # pragma: no cover - create_api always sets it
        raise RuntimeError("the API app has no run starter; build it with create_api")
    return found
