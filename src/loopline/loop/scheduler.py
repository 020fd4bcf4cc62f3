"""The scheduler: starts pipeline runs from cron schedules and from events, once each.

Every start has a trigger key (``schedule:PIPELINE/NAME:SLOT`` or
``event:PIPELINE/TRIGGER:EVENT_ID``) that the store lets start one run only, so a slot or an
event fires once however many schedulers run and however often one restarts. A run is
recorded first (pending, durably), then executed on a bounded thread pool; a run recorded
but never executed (the scheduler stopped in between) is executed by the next ``start``.
``execute`` queues other runs on the same pool (a playbook's, an API caller's through the
caller's own runner, so they execute as that caller).

Events are read after one durable cursor, moved by compare-and-set after the runs of a batch
are recorded; a crash before the move replays the batch, and the keys make that harmless.
On its first start (no cursor yet) the scheduler begins at the end of the event log: past
events never fire triggers. A schedule that never fired counts its slots from the time the
``Scheduler`` was made; see ``loopline.pipelines.schedules`` for the catch-up policies.
Each ``Duty`` (judging canaries with the ``RolloutController``, evaluating monitoring rules,
advancing playbook actions) is ticked when its period has passed on the store's clock since
its last success; a duty that raises anything is logged (with its traceback when it is not a
loopline error) and tried again on the next tick, the other duties and the loop going on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.core.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    LooplineError,
    UserCodeError,
)
from loopline.core.events import Event
from loopline.core.names import validate_name
from loopline.core.runs import PipelineRun, RunState, RunTrigger
from loopline.pipelines import PipelineDefinition, Runner
from loopline.pipelines.schedules import Schedule, Trigger
from loopline.store import MetadataStore
from loopline.store.runs import create_run, pending_triggered_runs, set_run_state

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0  # how often run_forever looks for triggered runs left pending

MAX_CONCURRENT_RUNS = 256
MAX_DUTY_BACKOFF = timedelta(seconds=30)  # the longest wait after a failure of an every-tick duty


@dataclass(frozen=True, slots=True)
class Duty:
    """Periodic work the scheduler does besides runs: ``tick()`` every ``every`` at most.

    Raises:
        InvalidArgumentError: for a bad name or a negative period.
    """

    name: str
    tick: Callable[[], object]
    every: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        validate_name(self.name, "duty")
        if self.every < timedelta(0):
            raise InvalidArgumentError(f"duties.{self.name}.every", "must be 0 or more")


@dataclass(frozen=True, slots=True)
class _Start:
    """A run to execute through ``runner`` (None: the scheduler's own), if pending or ``resume``."""

    pipeline: PipelineDefinition
    run: PipelineRun
    runner: Runner | None = None
    resume: bool = False


def _slot_text(slot: datetime) -> str:
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _index(pipelines: Sequence[PipelineDefinition]) -> dict[str, PipelineDefinition]:
    found: dict[str, PipelineDefinition] = {}
    for pipeline in pipelines:
        if not isinstance(pipeline, PipelineDefinition):
            raise InvalidArgumentError("pipelines", f"{pipeline!r} is not a @pipeline")
        if found.get(pipeline.name, pipeline) is not pipeline:
            raise InvalidArgumentError("pipelines", f"two pipelines are named "
                                       f"{pipeline.name!r}; schedule one of them")
        found[pipeline.name] = pipeline
    return found


class Scheduler:
    """Fires the schedules and triggers of ``pipelines`` and executes the runs they start.

    Raises:
        InvalidArgumentError: for a bad subscriber name, pool size, or two pipelines with
            one name.
    """

    def __init__(self, store: MetadataStore, runner: Runner,
                 pipelines: Sequence[PipelineDefinition], *, max_concurrent_runs: int = 4,
                 subscriber: str = "scheduler", duties: Sequence[Duty] = ()) -> None:
        if isinstance(max_concurrent_runs, bool) or not isinstance(max_concurrent_runs, int) \
                or not 1 <= max_concurrent_runs <= MAX_CONCURRENT_RUNS:
            raise InvalidArgumentError("max_concurrent_runs",
                                       f"must be an integer from 1 to {MAX_CONCURRENT_RUNS}")
        self._subscriber = validate_name(subscriber, "subscriber")
        self._pipelines = _index(pipelines)
        self._store = store
        self._runner = runner
        self._max_runs = max_concurrent_runs
        self._first_seen = store.clock.now()
        self._triggers = [(p, t) for p in self._pipelines.values() for t in p.triggers]
        self._types = sorted({trigger.on for _, trigger in self._triggers})
        self._pool = ThreadPoolExecutor(max_concurrent_runs, "loopline-scheduled-run")
        self._in_flight: set[Future[None]] = set()
        self._queued: set[str] = set()  # ids of runs queued here and not yet done
        self._lock = threading.Lock()
        self._started = False
        names = [duty.name for duty in duties]
        if len(set(names)) != len(names):
            raise InvalidArgumentError("duties", f"names repeat: {names}")
        self._duties = tuple(duties)
        self._duty_last: dict[str, datetime] = {}  # when each duty last succeeded
        self._duty_retry: dict[str, datetime] = {}  # not before then after a failure
        self._duty_failures: dict[str, int] = {}  # failures in a row, per duty

    @property
    def first_seen(self) -> datetime:
        """When this scheduler was made: a never-fired schedule counts slots from here."""
        return self._first_seen

    @property
    def in_flight(self) -> int:
        """How many runs this scheduler has queued or is executing."""
        with self._lock:
            return len(self._in_flight)

    def schedules(self) -> list[tuple[PipelineDefinition, Schedule]]:
        """List the schedules this scheduler fires, with their pipelines."""
        return [(p, s) for p in self._pipelines.values() for s in p.schedules]

    def triggers(self) -> list[tuple[PipelineDefinition, Trigger]]:
        """List the event triggers this scheduler fires, with their pipelines."""
        return list(self._triggers)

    def start(self) -> list[str]:
        """Take up duty once: place the event cursor, execute runs left pending.

        On the very first start of this subscriber the cursor is placed at the end of the
        log. Returns the ids of the pending runs it executes again; later calls do nothing.

        Raises:
            BackendError: when the metadata store fails (call again later).
        """
        if self._started:
            return []
        if self._types:
            self._place_cursor()
        left = pending_triggered_runs(self._store.engine, list(self._pipelines))
        self._started = True
        for pipeline, trigger in self._triggers:
            if not trigger.known_type and not trigger.on.startswith("custom."):
                log.warning("trigger %s/%s waits for %r, which loopline does not emit; it fires"
                            " only when other code emits that type", pipeline.name,
                            trigger.label, trigger.on)
        return self._submit([_Start(self._pipelines[run.pipeline], run) for run in left],
                            recovered=True)

    def _place_cursor(self) -> None:
        events = self._store.events
        if any(c.subscriber == self._subscriber for c in events.cursors()):
            return
        head = events.last_seq()
        if events.advance(self._subscriber, 0, head):
            log.info("scheduler %s: first start, reading events after %d", self._subscriber,
                     head)

    def tick(self) -> list[str]:
        """Start a run for every due schedule slot, then tick the duties that are due.

        Returns the ids of the runs recorded: pending ones are executed, and a slot whose
        parameters the pipeline refuses is recorded as a failed run. A store failure is
        logged and the slot is tried again on the next tick.
        """
        self.start()
        now = self._store.clock.now()
        started: list[_Start] = []
        for pipeline, schedule in self.schedules():
            try:
                self._fire_schedule(pipeline, schedule, now, started)
            except LooplineError as exc:  # the store failed: the slot is due again next tick
                log.warning("schedule %s/%s: %s", pipeline.name, schedule.name, exc.message)
        self._tick_duties()
        return self._submit(started)

    def add_duty(self, duty: Duty) -> None:
        """Tick ``duty`` from the next tick on, after the duties given before it.

        Raises:
            InvalidArgumentError: when a duty of that name is there already.
        """
        if any(existing.name == duty.name for existing in self._duties):
            raise InvalidArgumentError("duties", f"{duty.name!r} is there already")
        self._duties += (duty,)

    def execute(self, pipeline: PipelineDefinition, run: PipelineRun,
                runner: Runner | None = None, *, resume: bool = False) -> None:
        """Execute ``run`` on this scheduler's pool through ``runner`` (default: its own).

        Only a pending run is executed (recorded by a playbook, or by an API caller), unless
        ``resume``: then whatever its state (a failed or interrupted run a caller resumes;
        ``Runner.resume`` refuses, logged, what cannot be resumed). A ``runner`` given acts,
        authorises and audits as its own actor (the API passes the caller's view's, so the
        run executes as the caller) and is closed when the run ends. A run queued here
        already is not queued again.

        Raises:
            RuntimeError: when the pool was shut down (``close``); nothing is queued then.
        """
        self._submit([_Start(pipeline, run, runner, resume)])

    def _tick_duties(self) -> None:
        """Tick each duty whose period has passed; a failed one is tried again next tick.

        Any exception a duty raises is caught here (a loopline error as a warning, anything
        else with its traceback, the first of a run of failures in full): a duty's failure
        never stops the other duties or the loop. Its period counts from its last success;
        after a failure it is tried again after a backoff doubling from 1 s up to its period
        (30 s for a duty of every tick), so a duty that keeps failing neither waits a whole
        period for its next try nor hammers a store that is away.
        """
        now = self._store.clock.now()
        for duty in self._duties:
            last = self._duty_last.get(duty.name)
            if last is not None and now - last < duty.every:
                continue
            retry = self._duty_retry.get(duty.name)
            if retry is not None and now < retry:
                continue
            if self._tick_duty(duty):
                self._duty_last[duty.name] = now
                self._duty_retry.pop(duty.name, None)
            else:
                cap = duty.every if duty.every > timedelta(0) else MAX_DUTY_BACKOFF
                failures = self._duty_failures.get(duty.name, 1)
                self._duty_retry[duty.name] = now + min(
                    cap, timedelta(seconds=2 ** min(failures - 1, 16)))

    def _tick_duty(self, duty: Duty) -> bool:
        """Tick ``duty``; return whether it succeeded (its failure is logged, not raised)."""
        try:
            duty.tick()
        except LooplineError as exc:
            failures = self._duty_failed(duty.name)
            log.warning("%s: %s; tried again next tick (%d failures in a row)", duty.name,
                        exc.message, failures)
            return False
        except Exception as exc:  # a duty's own bug must not stop the loop (logged)
            failures = self._duty_failed(duty.name)
            if failures == 1:
                log.exception("%s failed; tried again next tick", duty.name)
            else:
                log.error("%s failed again (%d in a row): %s: %s", duty.name, failures,
                          type(exc).__name__, exc)
            return False
        self._duty_failures.pop(duty.name, None)
        return True

    def _duty_failed(self, name: str) -> int:
        self._duty_failures[name] = self._duty_failures.get(name, 0) + 1
        return self._duty_failures[name]

    def _fire_schedule(self, pipeline: PipelineDefinition, schedule: Schedule, now: datetime,
                       started: list[_Start]) -> None:
        """Record the due slots' runs into ``started`` (kept there if a later slot fails)."""
        name = f"{pipeline.name}/{schedule.name}"
        last = self._runner.runs.last_scheduled(name)
        for slot in schedule.due_slots(last, now, self._first_seen):
            trigger = RunTrigger(f"schedule:{name}:{_slot_text(slot)}", name, "schedule", slot,
                                 {"cron": schedule.cron, "timezone": schedule.timezone})
            run = self._create(pipeline, dict(schedule.parameters), trigger)
            if run is not None:
                started.append(_Start(pipeline, run))

    def poll_events(self, limit: int = 500) -> list[str]:
        """Start a run for each new event and each trigger it matches; move the cursor.

        Returns the ids of the runs recorded: pending ones are executed, and an event whose
        parameters cannot be read (or that the pipeline refuses) is recorded as a failed run
        of that trigger. A store failure stops the batch there (logged); the rest is read
        again on the next poll.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..10000.
        """
        self.start()
        return self._poll(limit)[0]

    def _poll(self, limit: int) -> tuple[list[str], bool]:
        """Handle one batch; return the runs started and whether the batch was full."""
        if not self._types:
            return [], False
        events = self._store.events
        position = events.cursor(self._subscriber)
        head = events.last_seq()  # every wanted event up to here is in a batch that is not full
        batch = events.read_after(position, limit, self._types)
        started: list[_Start] = []
        reached = position
        try:
            for event in batch:
                self._fire_event(event, started)
                reached = event.seq
        except LooplineError as exc:
            log.warning("scheduler: event handling stopped, retried next poll: %s", exc.message)
        else:
            if len(batch) < limit:
                reached = max(reached, head)
        self._advance(position, reached)
        return self._submit(started), len(batch) == limit

    def _advance(self, position: int, reached: int) -> None:
        if reached <= position:
            return
        try:
            if not self._store.events.advance(self._subscriber, position, reached):
                log.info("scheduler %s: another scheduler moved the cursor", self._subscriber)
        except LooplineError as exc:  # the runs are recorded; the keys stop a second start
            log.warning("scheduler %s: could not move the cursor: %s", self._subscriber,
                        exc.message)

    def _fire_event(self, event: Event, started: list[_Start]) -> None:
        """Record the runs ``event`` starts into ``started`` (kept there if a later one fails).

        A run recorded before a store failure must still execute: when the event is read
        again its key is taken, so nothing else would start it.
        """
        for pipeline, trigger in self._triggers:
            if not trigger.matches(event):
                continue
            name = f"{pipeline.name}/{trigger.label}"
            run_trigger = RunTrigger(f"event:{name}:{event.id}", name, "event", None, {
                "event_id": event.id, "event_seq": event.seq, "event_type": event.type,
                "subject": event.subject})
            try:
                parameters = trigger.parameters_for(event)
            except InvalidArgumentError as exc:
                run = self._record_failure(pipeline, run_trigger, {}, exc)
            else:
                run = self._create(pipeline, parameters, run_trigger)
            if run is not None:
                started.append(_Start(pipeline, run))

    def _create(self, pipeline: PipelineDefinition, parameters: Mapping[str, Any],
                trigger: RunTrigger) -> PipelineRun | None:
        """Record a pending run for ``trigger`` (a failed one when it cannot start).

        Returns None when the key already started a run, here or in another scheduler.
        """
        try:
            return self._runner.create(pipeline, parameters, trigger)
        except AlreadyExistsError:
            return None
        except ConflictError:  # the unique key settled a race with another scheduler
            if self._runner.runs.by_trigger(trigger.key) is not None:
                return None
            raise
        except (InvalidArgumentError, UserCodeError) as exc:
            return self._record_failure(pipeline, trigger, parameters, exc)

    def _record_failure(self, pipeline: PipelineDefinition, trigger: RunTrigger,
                        parameters: Mapping[str, Any],
                        error: LooplineError) -> PipelineRun | None:
        """Record a failed run (no tasks) under ``trigger.key``: it fired, and why it failed."""
        message = f"{trigger.name} could not start a run: {error.message}"
        try:
            with self._store.write(self._runner.options.actor) as uow:
                run = create_run(uow, pipeline.name, parameters, (), uow.now(), trigger)
                set_run_state(uow, run.id, RunState.FAILED, uow.now(), message)
        except (AlreadyExistsError, ConflictError):
            return None
        log.warning("%s (%s)", message, trigger.key)
        return replace(run, state=RunState.FAILED, error=message)

    def sweep(self) -> list[str]:
        """Execute runs these pipelines' triggers recorded that are still pending.

        They are left pending when executing them failed to begin (a store blip) or a
        scheduler stopped with them queued; returns the ids it queued.

        Raises:
            BackendError: when the metadata store fails.
        """
        left = [run for run in pending_triggered_runs(self._store.engine, list(self._pipelines))
                if run.id not in self._queued]
        return self._submit([_Start(self._pipelines[run.pipeline], run) for run in left],
                            recovered=True)

    def _submit(self, starts: list[_Start], recovered: bool = False) -> list[str]:
        """Queue the pending runs of ``starts``; return the ids of all (failed ones too)."""
        for start in starts:
            if start.run.state is not RunState.PENDING and not start.resume:
                continue  # recorded failed: it could not start
            with self._lock:
                if start.run.id in self._queued:
                    continue  # queued here already (a sweep and a playbook both saw it)
                self._queued.add(start.run.id)
            runner = start.runner or self._runner
            log.info("run %s of %s queued (%s, as %s)", start.run.id, start.pipeline.name,
                     start.run.trigger.key if start.run.trigger else "started by hand",
                     runner.options.actor)
            try:
                future = self._pool.submit(self._execute, start.pipeline, start.run.id,
                                           runner, recovered)
            except RuntimeError:  # the pool was shut down: the run stays as recorded
                with self._lock:
                    self._queued.discard(start.run.id)
                raise
            with self._lock:
                self._in_flight.add(future)
            future.add_done_callback(self._forget)
        return [start.run.id for start in starts]

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def _execute(self, pipeline: PipelineDefinition, run_id: str, runner: Runner,
                 recovered: bool) -> None:
        try:
            self._execute_once(pipeline, run_id, runner, recovered)
        finally:
            if runner is not self._runner:
                self._close(runner)
            with self._lock:
                self._queued.discard(run_id)

    @staticmethod
    def _close(runner: Runner) -> None:
        try:
            runner.close()
        except Exception:  # its workers end with the process anyway (logged in full)
            log.exception("could not stop the workers of %s's runner", runner.options.actor)

    def _execute_once(self, pipeline: PipelineDefinition, run_id: str, runner: Runner,
                      recovered: bool) -> None:
        try:
            if recovered and runner.runs.run(run_id).state is not RunState.PENDING:
                return  # another scheduler executed it meanwhile
            result = runner.resume(run_id, pipeline)
        except ConflictError as exc:  # another runner holds it, or the pipeline changed
            log.warning("run %s of %s not executed: %s", run_id, pipeline.name, exc.message)
            return
        except Exception:  # one run's failure never stops the scheduler (logged)
            log.exception("run %s of %s could not be executed", run_id, pipeline.name)
            return
        if not result.succeeded:
            log.warning("run %s of %s failed: %s", run_id, pipeline.name, result.run.error)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the runs queued so far finish; False when ``timeout`` passed first."""
        with self._lock:
            pending = list(self._in_flight)
        return not wait_for(pending, timeout).not_done

    def run_forever(self, stop: threading.Event, interval: float = 1.0,
                    report: Callable[[list[str]], None] | None = None) -> None:
        """Tick and poll every ``interval`` seconds until ``stop`` is set.

        Events are read only while a run slot is free, so a burst waits in the event log
        rather than in memory; a store outage is logged and retried, and so is any other
        error of a round (with its traceback): only ``stop`` ends the loop. ``report`` is called
        with the ids of the runs each round started.
        """
        swept = time.monotonic()
        while not stop.is_set():
            started: list[str] = []
            more = False
            try:
                started = self.start() + self.tick()
                if time.monotonic() - swept >= SWEEP_SECONDS:
                    swept = time.monotonic()
                    started += self.sweep()
                if self.in_flight < self._max_runs:
                    polled, more = self._poll(500)
                    started += polled
            except LooplineError as exc:
                log.warning("scheduler: %s; retrying in %.1fs", exc.message, interval)
            except Exception:  # a bug in one round must not end the loop (logged in full)
                log.exception("scheduler: the round failed; retrying in %.1fs", interval)
            if started and report is not None:
                try:
                    report(started)
                except Exception:  # reporting reads the store: a hiccup must not end the loop
                    log.exception("scheduler: could not report the runs started")
            if not more:
                stop.wait(interval)

    def close(self, wait: bool = True) -> None:
        """Stop executing; with ``wait``, let queued runs finish (others stay pending)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
