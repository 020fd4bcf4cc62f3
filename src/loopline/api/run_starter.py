"""Executing the runs callers start over the API: the server's executor, or a thread here.

``create_api`` gets a ``RunExecutor`` from ``loopline server`` (its scheduler's bounded pool);
a run recorded by ``POST /runs`` goes there and the request answers at once. Without one,
the run executes on a daemon thread of this server process, through the caller's own
workspace view (``Runner.resume``), so the runner acts, authorises and audits as the token's
user; so does every resumed run (a ``RunExecutor`` executes pending runs only). At most
``MAX_LOCAL_RUNS`` run here at a time: one more is refused 503 with ``Retry-After`` before
anything is recorded. A run a thread here was executing when the process died keeps its
lease until it expires and can then be resumed (``POST /runs/{id}/resume``), as can a run
recorded but never executed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from starlette.datastructures import State

from loopline.api.errors import ApiError
from loopline.app import Workspace
from loopline.automation.ports import RunExecutor
from loopline.core.errors import BackendError, LooplineError
from loopline.core.runs import PipelineRun
from loopline.pipelines import PipelineDefinition

__all__ = ["MAX_LOCAL_RUNS", "RunStarter", "starter_of"]

log = logging.getLogger(__name__)
MAX_LOCAL_RUNS = 8
RETRY_AFTER_SECONDS = 5


class RunStarter:
    """Hands recorded runs to the server's executor, or executes them on threads here."""

    def __init__(self, execute: RunExecutor | None, limit: int = MAX_LOCAL_RUNS) -> None:
        self._execute = execute
        self._slots = threading.BoundedSemaphore(limit)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, ws: Workspace, pipeline: PipelineDefinition,
              record: Callable[[], PipelineRun], *, here: bool = False) -> PipelineRun:
        """Call ``record`` (which records or checks the run) and have the run executed.

        Returns the run at once; it executes in the background: on the server's executor,
        or on a thread here when there is none or ``here`` is true (a resumed run: an
        executor takes pending runs only).

        Raises:
            ApiError: 503 when this process already executes ``MAX_LOCAL_RUNS`` runs
                (nothing is recorded then).
            BackendError: when the server's executor refuses the run (it stays pending and
                can be resumed).
            LooplineError: whatever ``record`` raises.
        """
        if self._execute is not None and not here:
            return self._hand_over(self._execute, pipeline, record())
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, "overloaded", f"this server executes {MAX_LOCAL_RUNS} runs "
                           "already; start this one when one of them finished", None,
                           {"Retry-After": str(RETRY_AFTER_SECONDS)})
        try:
            run = record()
            thread = threading.Thread(target=self._run_here, args=(ws, pipeline, run.id),
                                      name=f"loopline-api-run-{run.id}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()
        except BaseException:
            self._slots.release()
            raise
        return run

    @staticmethod
    def _hand_over(execute: RunExecutor, pipeline: PipelineDefinition,
                   run: PipelineRun) -> PipelineRun:
        try:
            execute(pipeline, run)
        except RuntimeError as exc:  # a pool that was shut down: the server is stopping
            raise BackendError(f"the server's executor did not take run {run.id} ({exc}); "
                               f"it is recorded {run.state}: resume it later") from exc
        return run

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
