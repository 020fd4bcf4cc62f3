"""Playbooks: what runs when an alert fires (retrain, rollback, quarantine, notify).

Actions run durably off the event log, each exactly once per alert, within policy.

    alerts.py      AlertContext: the alert an action acts on (from ``alert_fired``)
    ports.py       AutomationPorts, AutomationOptions, the playbook/pipeline sources
    held.py        Held: an action under this worker's lease, and its fenced writes
    governing.py   the gate (``playbook_action``), the step's approval, approval requests
    retrain.py     start one run per action (trigger key), wait for it, optional canary
    rollback.py    roll the deployment back in the transaction that marks the action done
    quarantine.py  quarantine the version once, evacuate it from every deployment
    notify.py      log line always; signed webhook POST, at least once, idempotency key
    signing.py     HMAC-SHA256 webhook signatures and their check
    log.py         ActionLog: reading actions (the CLI needs only the store)
    service.py     Automation: handle(event), tick(), actions(), get()
"""

from loopline.automation.alerts import AlertContext
from loopline.automation.log import ActionLog, parse_action_state
from loopline.automation.ports import (
    AutomationOptions,
    AutomationPorts,
    PipelineSource,
    PlaybookSource,
    RunExecutor,
)
from loopline.automation.service import (
    Automation,
    TickReport,
    inline_executor,
    pipelines_by_name,
)

__all__ = [
    "ActionLog",
    "AlertContext",
    "Automation",
    "AutomationOptions",
    "AutomationPorts",
    "PipelineSource",
    "PlaybookSource",
    "RunExecutor",
    "TickReport",
    "inline_executor",
    "parse_action_state",
    "pipelines_by_name",
]
