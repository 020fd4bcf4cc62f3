"""The loop's duties in a scheduler's round: monitoring, alert hand-over, playbook actions.

One definition for every process that closes the loop (``loopline scheduler``, ``loopline
server``'s background work, ``loopline demo``), so they all do the same work in the same
order.
"""

from __future__ import annotations

from datetime import timedelta

from loopline.app.workspace import Workspace
from loopline.automation.service import SUBSCRIBER, Automation
from loopline.core.events import EventType
from loopline.loop import Dispatcher
from loopline.loop.scheduler import Duty, Scheduler
from loopline.monitoring.evaluator import evaluate_in_force

__all__ = ["MONITOR_EVERY", "add_loop_duties"]

MONITOR_EVERY = timedelta(minutes=1)


def add_loop_duties(workspace: Workspace, scheduler: Scheduler, automation: Automation,
                    dispatcher: Dispatcher) -> None:
    """Add monitoring, alert hand-over and playbook actions to the scheduler's round.

    The alert subscription starts, on its first use, at the automation's horizon
    (``Automation.place_cursor``: alerts older than ``max_alert_age`` are never replayed).
    """
    automation.place_cursor(SUBSCRIBER)
    dispatcher.subscribe(SUBSCRIBER, automation.handle, {EventType.ALERT_FIRED})
    scheduler.add_duty(Duty("monitoring", lambda: evaluate_in_force(
        workspace.evaluator, workspace.monitor_configs), MONITOR_EVERY))
    scheduler.add_duty(Duty("alerts", dispatcher.run_once))
    scheduler.add_duty(Duty("playbooks", automation.tick))
