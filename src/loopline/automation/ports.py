"""What the automation is built from: the services it acts through, its sources and options.

``AutomationPorts`` are the workspace's own services (the deployments, the registry, the
approvals, the gate, the pipeline runner), so every effect of a playbook goes through the
same checks, audit and events as a person's. ``PlaybookSource`` and ``PipelineSource`` look
a playbook or a pipeline up by name (the applied ``MonitorConfig`` and the pipelines the
scheduler knows, in a workspace; anything in tests). ``RunExecutor`` executes a pipeline run
a ``retrain`` action recorded; without one the run waits for the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import Playbook
from loopline.core.ports import Gate
from loopline.core.runs import PipelineRun
from loopline.deploy.service import DeploymentService
from loopline.governance.approvals import ApprovalService
from loopline.outbound import OutboundClient, OutboundLimits
from loopline.pipelines import PipelineDefinition, Runner
from loopline.registry.service import ModelRegistry
from loopline.store import MetadataStore

__all__ = ["AutomationOptions", "AutomationPorts", "PipelineSource", "PlaybookSource",
           "RunExecutor", "Tools"]

PlaybookSource = Callable[[str], Playbook | None]
"""Return the playbook named so in the applied monitoring config, or None."""

PipelineSource = Callable[[str], PipelineDefinition | None]
"""Return the pipeline named so, or None."""

RunExecutor = Callable[[PipelineDefinition, PipelineRun], None]
"""Execute a pending run (``Runner.resume``, or hand it to a scheduler's pool)."""

MAX_ATTEMPTS = 100
MAX_ACTOR = 256


@dataclass(frozen=True, slots=True)
class AutomationPorts:
    """The services playbook actions act through, all of one workspace."""

    store: MetadataStore
    deployments: DeploymentService
    models: ModelRegistry
    approvals: ApprovalService
    gate: Gate
    runner: Runner


@dataclass(frozen=True, slots=True)
class AutomationOptions:
    """How the automation runs.

    ``actor`` is who the automation acts as: its own records, the approval requests it makes
    and every effect through the ports' services (build them with the same actor). A
    workspace (``Workspace.automation``, so ``loopline scheduler``) gives it the workspace's
    actor, the identity running the scheduler: authorisation is checked against that
    identity, the audit names it, and four-eyes keeps it from approving what the automation
    asked. ``loopline-automation`` is only the default for an automation built by hand.
    A worker holds an action's ``lease`` only while it takes one bounded step
    (a transaction, a webhook call); a dead worker's action is taken over once it expires.
    A step failing for a transient reason (``BackendError``: a webhook or the database
    unreachable) is retried after ``retry_delay`` doubling up to ``max_retry_delay``, at most
    ``max_attempts`` times in all. A ``retrain`` whose run has not finished within
    ``run_timeout`` fails. A playbook that has not begun (no earlier step acted) is not
    started for an alert resolved meanwhile, nor, unless a person approved the step, for one
    that fired more than ``max_alert_age`` ago: its actions are ``skipped`` saying so; the
    automation's event subscription also starts that far back on its first use.
    ``webhook_secret`` signs ``notify`` bodies (``LOOPLINE_WEBHOOK_SECRET`` in a workspace);
    ``transport`` replaces the network in tests.

    Raises:
        InvalidArgumentError: naming the option that is out of range.
    """

    actor: str = "loopline-automation"
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = 5
    retry_delay: timedelta = timedelta(seconds=10)
    max_retry_delay: timedelta = timedelta(minutes=10)
    run_timeout: timedelta = timedelta(hours=24)
    max_alert_age: timedelta = timedelta(hours=24)
    webhook_secret: str | None = field(default=None, repr=False)
    outbound: OutboundLimits = field(default_factory=OutboundLimits)
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.actor, str) or not 0 < len(self.actor) <= MAX_ACTOR:
            raise InvalidArgumentError("actor", f"must be 1-{MAX_ACTOR} characters")
        for name in ("lease", "retry_delay", "max_retry_delay", "run_timeout",
                     "max_alert_age"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise InvalidArgumentError(name, f"{value!r} must be a positive duration")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise InvalidArgumentError("max_attempts", f"{self.max_attempts!r} must be a whole "
                                                       f"number from 1 to {MAX_ATTEMPTS}")
        if self.webhook_secret is not None and len(self.webhook_secret) < 16:
            raise InvalidArgumentError("webhook_secret", "must be at least 16 characters")


@dataclass(frozen=True, slots=True)
class Tools:
    """What an action's effect may use: the ports, the options, pipelines, the web client."""

    ports: AutomationPorts
    options: AutomationOptions
    pipelines: PipelineSource
    execute: RunExecutor | None
    client: OutboundClient
    executed: set[str] = field(default_factory=set)  # runs this process handed to ``execute``
