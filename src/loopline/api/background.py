"""The loop's background work inside ``loopline server``: schedules, triggers and duties.

``BackgroundWork`` owns a ``Scheduler`` (its pool also executes the runs callers start
through the API), the playbook automation and the event dispatcher, and runs
``Scheduler.run_forever`` on a thread of its own.

Several server processes may share one metadata store. Schedules and triggers need nothing
more: every start has a unique trigger key (``schedule:PIPELINE/NAME:SLOT``,
``event:PIPELINE/TRIGGER:EVENT_ID``) that the store lets start one run only, so each slot and
each event starts one run however many processes fire it. The duties (judging canaries,
evaluating monitoring rules, handing alerts to the automation, advancing playbook actions)
have no such key and must not run in two processes at once: each ticks only in the process
holding the lease ``duty:<name>``. A process takes the lease before each tick (a process that
is refused skips the duty that round), and renews the leases it holds every round on a thread
of its own, so a long tick keeps its lease; the lease lasts three rounds and at least
``MIN_LEASE`` (15 s: long enough to outlive a renewal held up by a slow store, so two
processes never tick one duty at once), so a process that dies hands its duties on within
that time plus the duty's period; one that stops gracefully releases them at once. Lease
times are read from the store's clock: hosts sharing a store keep their clocks in sync.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from loopline.app import Workspace
from loopline.app.loop_duties import add_loop_duties
from loopline.core.errors import InvalidArgumentError, LooplineError
from loopline.core.runs import PipelineRun
from loopline.loop.rollout import RolloutController
from loopline.loop.scheduler import Duty, Scheduler
from loopline.pipelines import PipelineDefinition, Runner
from loopline.store import MetadataStore
from loopline.store.lease_records import release, try_acquire

__all__ = ["BACKLOG_PER_RUN", "MIN_LEASE", "BackgroundOptions", "BackgroundWork", "DutyLeases",
           "LeasedScheduler", "default_holder"]

log = logging.getLogger(__name__)
# Renewals happen every round; the lease must outlive a renewal blocked for a while (a slow
# store, a paused process) or a second process would take it while the first still ticks.
MIN_LEASE = timedelta(seconds=15)
BACKLOG_PER_RUN = 4  # runs queued or executing per run slot, unless max_backlog says otherwise
MAX_BACKLOG = 100_000
LEASE_PREFIX = "duty:"


def default_holder() -> str:
    """Return this process's lease holder id: ``hostname:pid:random``."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class BackgroundOptions:
    """How often the loop goes round, how many runs execute at once, how many may wait.

    ``max_backlog`` bounds the runs queued or executing on the pool when the API starts
    another (``BACKLOG_PER_RUN * max_runs`` unless given): past it ``POST /runs`` and
    ``POST /runs/{id}/resume`` are refused 503 before anything is recorded.
    """

    interval: float = 1.0
    max_runs: int = 4
    max_backlog: int | None = None

    def checked(self) -> BackgroundOptions:
        """Return the options when usable.

        Raises:
            InvalidArgumentError: naming the option out of range.
        """
        if not 0.05 <= self.interval <= 3600:
            raise InvalidArgumentError("interval", f"{self.interval} must be 0.05-3600 seconds")
        if self.max_backlog is not None and not self.max_runs <= self.max_backlog <= MAX_BACKLOG:
            raise InvalidArgumentError("max_backlog", f"{self.max_backlog} must be "
                                       f"{self.max_runs} (max_runs) to {MAX_BACKLOG}")
        return self

    @property
    def backlog_limit(self) -> int:
        """How many runs may be queued or executing before the API refuses one more."""
        if self.max_backlog is not None:
            return self.max_backlog
        return BACKLOG_PER_RUN * self.max_runs

    @property
    def lease_ttl(self) -> timedelta:
        """How long a duty lease lasts: three rounds, ``MIN_LEASE`` at least."""
        return max(timedelta(seconds=3 * self.interval), MIN_LEASE)


class DutyLeases:
    """The duty leases of one holder: taken before each tick, renewed between ticks.

    Thread-safe: the loop takes leases, the renewal thread renews them.
    """

    def __init__(self, store: MetadataStore, holder: str, ttl: timedelta) -> None:
        self._store = store
        self.holder = holder
        self._ttl = ttl
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def held(self) -> list[str]:
        """Return the names of the leases this holder took and has not lost, sorted."""
        with self._lock:
            return sorted(self._held)

    def hold(self, duty: str) -> bool:
        """Take or renew the lease of ``duty``; tell whether this holder has it now.

        A store failure counts as a refusal (logged): a duty is skipped rather than risk
        running twice.
        """
        name = LEASE_PREFIX + duty
        try:
            won = try_acquire(self._store, name, self.holder, self._ttl)
        except LooplineError as exc:
            log.warning("lease %s: %s; the duty waits for the next round", name, exc.message)
            won = False
        self._note(name, won)
        return won

    def renew(self) -> None:
        """Renew every lease held; forget the ones another holder took meanwhile.

        A store failure keeps the lease on the list (it may still be ours): the next duty
        tick asks again before running.
        """
        for name in self.held():
            try:
                kept = try_acquire(self._store, name, self.holder, self._ttl)
            except LooplineError as exc:
                log.warning("lease %s: renewal failed: %s", name, exc.message)
                continue
            self._note(name, kept)

    def release_all(self) -> None:
        """Give up every lease held, so another process takes the duties over at once."""
        for name in self.held():
            try:
                release(self._store, name, self.holder)
            except LooplineError as exc:  # it expires by itself
                log.warning("lease %s: could not release it: %s", name, exc.message)
            with self._lock:
                self._held.discard(name)

    def guard(self, duty: Duty) -> Duty:
        """Return ``duty`` ticking only while this holder has its lease."""
        def tick() -> object:
            if not self.hold(duty.name):
                return None
            return duty.tick()
        return Duty(duty.name, tick, duty.every)

    def _note(self, name: str, held: bool) -> None:
        with self._lock:
            had = name in self._held
            if held:
                self._held.add(name)
            else:
                self._held.discard(name)
        if held and not had:
            log.info("took the lease %s (%s)", name, self.holder)
        elif had and not held:
            log.warning("lost the lease %s to another process", name)


class LeasedScheduler(Scheduler):
    """A scheduler whose every duty ticks only in the process holding its lease."""

    def __init__(self, workspace: Workspace, pipelines: Sequence[PipelineDefinition],
                 leases: DutyLeases, max_runs: int) -> None:
        super().__init__(workspace.store, workspace.pipelines, pipelines,
                         max_concurrent_runs=max_runs)
        self._leases = leases

    def add_duty(self, duty: Duty) -> None:
        """Tick ``duty`` from the next tick on, under its lease."""
        super().add_duty(self._leases.guard(duty))


class BackgroundWork:
    """Schedules, triggers, rollouts and the loop's duties of one server process.

    Made, it already executes runs handed to ``execute`` (it is the ``RunPool`` the API's
    started and resumed runs go to: ``create_api(..., execute=work)``); ``start``
    begins the loop on a thread, ``stop`` ends it and waits for the runs. ``loop_duties``
    adds the duties besides judging canaries (``app.loop_duties``: monitoring, alert
    hand-over, playbooks). Every
    duty ticks under its lease; schedules and triggers take none, as their trigger keys
    already let one process only start each slot's and event's run (see the module).

    Raises:
        InvalidArgumentError: for bad options, or two pipelines with one name.
    """

    def __init__(self, workspace: Workspace, pipelines: Sequence[PipelineDefinition],
                 holder: str | None = None, options: BackgroundOptions | None = None,
                 loop_duties: bool = True) -> None:
        self.options = (options or BackgroundOptions()).checked()
        self._workspace = workspace
        self._pipelines = list(pipelines)
        self._loop_duties = loop_duties
        self.leases = DutyLeases(workspace.store, holder or default_holder(),
                                 self.options.lease_ttl)
        self.scheduler: Scheduler = LeasedScheduler(workspace, self._pipelines, self.leases,
                                                     self.options.max_runs)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closing: list[Callable[[], None]] = []
        self._stopped = False

    @property
    def holder(self) -> str:
        """The lease holder id of this process."""
        return self.leases.holder

    @property
    def in_flight(self) -> int:
        """How many runs are queued or executing on this process's pool."""
        return self.scheduler.in_flight

    @property
    def backlog_limit(self) -> int:
        """How many runs may be queued or executing before the API refuses one more."""
        return self.options.backlog_limit

    def execute(self, pipeline: PipelineDefinition, run: PipelineRun,
                runner: Runner | None = None, *, resume: bool = False) -> None:
        """Execute ``run`` on this process's pool through ``runner`` (``Scheduler.execute``).

        ``create_api(..., execute=work)`` passes the caller's runner, so the run executes as
        the caller; without one it executes as this workspace's actor.

        Raises:
            RuntimeError: when the pool was shut down (``stop``).
        """
        self.scheduler.execute(pipeline, run, runner, resume=resume)

    def start(self) -> None:
        """Add the duties and start the loop and the lease renewals on threads of their own.

        Raises:
            InvalidArgumentError: when started twice or after ``stop``.
            BackendError: when the store fails while the alert subscription is placed.
        """
        if self._threads or self._stopped:
            raise InvalidArgumentError("background work", "starts once, before stop")
        self.scheduler.add_duty(Duty("rollouts", RolloutController(
            self._workspace.store, self._workspace.deployments).tick))
        if self._loop_duties:
            automation = self._workspace.automation(self._pipelines, self.scheduler.execute)
            self._closing.append(automation.close)
            dispatcher = self._workspace.dispatcher()
            self._closing.append(dispatcher.close)
            add_loop_duties(self._workspace, self.scheduler, automation, dispatcher)
        self._threads = [
            threading.Thread(target=self.scheduler.run_forever,
                             args=(self._stop, self.options.interval),
                             name="loopline-background", daemon=True),
            threading.Thread(target=self._renew_leases, name="loopline-leases", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _renew_leases(self) -> None:
        while not self._stop.wait(self.options.interval):
            try:
                self.leases.renew()
            except Exception:  # a renewal bug must not end renewals (logged in full)
                log.exception("lease renewal failed; tried again next round")

    def stop(self, timeout: float | None = None) -> bool:
        """End the loop, give the leases up, wait for the runs; tell whether all finished.

        The round in progress finishes first; leases are released only when it did (else
        they expire by themselves). Runs still executing after ``timeout`` seconds keep
        going (the pool's threads end with them) and False is returned. Calling it again
        does nothing more.
        """
        if self._stopped:
            return self.scheduler.in_flight == 0
        self._stopped = True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop.set()
        for thread in self._threads:
            thread.join(_left(deadline))
        if not any(thread.is_alive() for thread in self._threads):
            self.leases.release_all()
        finished = self.scheduler.wait(_left(deadline))
        self.scheduler.close(wait=finished)
        for close in reversed(self._closing):
            close()
        return finished


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
