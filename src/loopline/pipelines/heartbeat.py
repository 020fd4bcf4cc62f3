"""The runner's heartbeat: renews its leases and notices a cancel request, every beat."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from loopline.core.errors import LooplineError
from loopline.pipelines.attempts import WorkerContext
from loopline.pipelines.execution import RunSignals
from loopline.store.run_control import RunControl
from loopline.store.runs import renew_leases, renew_run

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the run's and its tasks' leases every heartbeat until stopped.

    It raises ``signals.lost`` when the run's lease was taken by another runner (this one
    lapsed), and ``signals.cancelled`` when someone asked the run to stop.
    """

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._stop = threading.Event()
        self.signals = RunSignals()
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
                    held = renew_run(uow, ctx.run_id, ctx.lease_owner, until)
                    if held:
                        renew_leases(uow, ctx.run_id, ctx.lease_owner, until)
                if not held:
                    log.error("run %s: another runner took the run over", ctx.run_id)
                    self.signals.lost.set()
                    ctx.stop.set()
                    return
                if self._control.cancel_requested(ctx.run_id):
                    self.signals.cancelled.set()
                    ctx.stop.set()
            except LooplineError as exc:  # a missed beat is survivable; three are not
                log.warning("run %s: lease heartbeat failed: %s", ctx.run_id, exc)
