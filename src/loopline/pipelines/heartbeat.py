"""The runner's heartbeat: renews its leases and notices a cancel request, every beat."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from loopline.core.errors import LooplineError
from loopline.pipelines.attempts import WorkerContext
from loopline.store.run_control import RunControl
from loopline.store.runs import renew_leases, renew_run

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the run's and its tasks' leases every heartbeat until stopped."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._stop = threading.Event()
        self.cancelled = threading.Event()
        self._control = RunControl(ctx.store.engine)
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{ctx.run_id}",
                                        daemon=True)

    def start(self) -> None:
        """Start beating in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        ctx = self._ctx
        while not self._stop.wait(ctx.options.heartbeat_seconds):
            until = ctx.store.clock.now() + timedelta(seconds=ctx.options.lease_seconds)
            try:
                with ctx.store.write(ctx.options.actor) as uow:
                    renew_run(uow, ctx.run_id, ctx.lease_owner, until)
                    renew_leases(uow, ctx.run_id, ctx.lease_owner, until)
                if self._control.cancel_requested(ctx.run_id):
                    self.cancelled.set()
            except LooplineError as exc:  # a missed beat is survivable; three are not
                log.warning("run %s: lease heartbeat failed: %s", ctx.run_id, exc)
