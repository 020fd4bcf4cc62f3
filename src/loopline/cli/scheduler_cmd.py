"""``loopline scheduler [FILE.py ...]``: the loop's clock — runs, canaries, monitoring, playbooks.

Every ``@pipeline`` in the files that has a schedule or a trigger is scheduled
(``FILE.py:PIPELINE`` picks one); every pipeline named or found there is also one a playbook's
``retrain`` step may start. Without ``--once`` it runs until interrupted (Ctrl-C or SIGTERM
stop it; runs already started finish first). ``--once`` fires what is due now, reads the new
events once, waits for the runs it started and exits (10 when one failed).

Each round also does the scheduler's duties, in this order: judge the canaries of
rolling-out deployments (as ``loopline rollouts run``), evaluate the monitoring rules in
force (at most once a minute, as ``loopline monitor run``), hand new alerts to the playbook
automation (a dispatcher subscription, ``automation``, with a durable cursor that starts, the
first time, at the alerts of the last ``max_alert_age``), and advance playbook actions (their
retrain runs execute on this scheduler's pool).
"""

from __future__ import annotations

import signal
import threading
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from loopline.api.background import BackgroundOptions, DutyLeases, LeasedScheduler, default_holder
from loopline.app import Workspace
from loopline.app.loop_duties import add_loop_duties
from loopline.cli.context import open_workspace
from loopline.cli.output import console, success, table
from loopline.cli.runs_cmds import load_pipeline
from loopline.cli.user_code import import_user_file
from loopline.core.errors import UserCodeError
from loopline.core.runs import RunState
from loopline.loop.rollout import RolloutController
from loopline.loop.scheduler import Duty, Scheduler
from loopline.pipelines import PipelineDefinition

Files = Annotated[list[str] | None, typer.Argument(
    metavar="[FILE.py]...",
    help="FILE.py (its @pipelines) or FILE.py:PIPELINE; several may be given. Scheduled ones "
         "are scheduled; all may be started by a playbook's retrain step.")]


def _import_file(text: str) -> list[PipelineDefinition]:
    """Import ``FILE.py`` and return its ``@pipeline`` objects in definition order.

    Raises:
        InvalidArgumentError: naming the file when it is not an existing ``.py`` file.
        UserCodeError: when importing the file raises.
    """
    module = import_user_file(Path(text), "FILE")
    return [value for value in vars(module).values() if isinstance(value, PipelineDefinition)]


def load_scheduled(files: list[str]) -> list[PipelineDefinition]:
    """Return the pipelines named in ``files``, or all of each file's (each once).

    Raises:
        InvalidArgumentError: when a file or pipeline is missing.
        UserCodeError: when importing a file raises.
    """
    found: dict[int, PipelineDefinition] = {}
    for text in files:
        chosen = [load_pipeline(text)] if text.rpartition(":")[0].endswith(".py") \
            else _import_file(text)
        found.update((id(p), p) for p in chosen)
    return list(found.values())


def _show_duties(scheduler: Scheduler) -> None:
    now = scheduler.first_seen
    rows = [(f"{p.name}/{s.name}", f"cron {s.cron} ({s.timezone}), catch-up {s.catchup}",
             s.next_slot(now).isoformat(timespec="seconds")) for p, s in scheduler.schedules()]
    rows += [(f"{p.name}/{t.label}", f"on {t.on}" + (f" where {dict(t.where)}" if t.where
                                                      else ""), "on each event")
             for p, t in scheduler.triggers()]
    table("scheduled", ["name", "when", "next"], rows)


def _show_started(workspace: Workspace, run_ids: list[str]) -> None:
    for run_id in run_ids:
        run = workspace.pipelines.runs.run(run_id)
        by = run.trigger.key if run.trigger else "?"
        console.print(f"started run {run.id} of {run.pipeline} ({by})")


def _finish_once(workspace: Workspace, scheduler: Scheduler, run_ids: list[str]) -> None:
    scheduler.wait()
    if not run_ids:
        console.print("nothing was due")
        return
    runs = [workspace.pipelines.runs.run(run_id) for run_id in run_ids]
    table(f"{len(runs)} runs", ["id", "pipeline", "trigger", "state", "error"], [
        (r.id, r.pipeline, r.trigger.name if r.trigger else "", str(r.state),
         (r.error or "")[:120]) for r in runs])
    failed = [r for r in runs if r.state is not RunState.SUCCEEDED]
    if failed:
        raise UserCodeError(f"{len(failed)} of {len(runs)} scheduled runs did not succeed; "
                            f"see `loopline runs show {failed[0].id}`")
    success(f"{len(runs)} scheduled runs succeeded")


def _serve(workspace: Workspace, scheduler: Scheduler, interval: float) -> None:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"scheduler running (every {interval:g}s); Ctrl-C stops it")
    try:
        scheduler.run_forever(stop, interval, lambda ids: _show_started(workspace, ids))
    except KeyboardInterrupt:
        stop.set()
    console.print(f"stopping: waiting for {scheduler.in_flight} runs to finish")


def scheduler(
    ctx: typer.Context,
    files: Files = None,
    once: Annotated[bool, typer.Option(
        "--once", help="Fire what is due, read new events once, wait for the runs, exit.")
    ] = False,
    interval: Annotated[float, typer.Option(
        min=0.05, max=3600.0, help="Seconds between rounds.")] = 1.0,
    max_runs: Annotated[int, typer.Option(
        "--max-runs", min=1, max=256, help="Runs executing at once.")] = 4,
) -> None:
    """Run schedules and triggers, judge canaries, evaluate monitoring, run playbooks."""
    pipelines = load_scheduled(files or [])
    with open_workspace(ctx) as workspace:
        # Duties take the same leases as `loopline server`, so a scheduler and servers
        # sharing a store never judge, evaluate or act twice at once.
        leases = DutyLeases(workspace.store, default_holder(),
                            BackgroundOptions(interval=interval).lease_ttl)
        try:
            _schedule(workspace, pipelines, leases, once, interval, max_runs)
        finally:
            leases.release_all()


def _schedule(workspace: Workspace, pipelines: list[PipelineDefinition],
              leases: DutyLeases, once: bool, interval: float, max_runs: int) -> None:
    with LeasedScheduler(workspace, pipelines, leases, max_runs) as running, \
            closing(workspace.automation(pipelines, running.execute)) as automation, \
            workspace.dispatcher() as dispatcher:
        running.add_duty(Duty("rollouts", RolloutController(workspace.store,
                                                            workspace.deployments).tick))
        add_loop_duties(workspace, running, automation, dispatcher)
        _show_duties(running)
        if not once:
            _serve(workspace, running, interval)
            return
        started = running.start() + running.tick() + running.poll_events()
        _show_started(workspace, started)
        _finish_once(workspace, running, started)


def register(root: typer.Typer) -> None:
    """Add ``scheduler`` to the root command."""
    root.command("scheduler")(scheduler)
