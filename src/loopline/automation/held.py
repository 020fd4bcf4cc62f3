"""An action one worker holds under its lease, and the writes that move it, fenced.

Every write here goes through ``store.playbook_records.transition``, which checks that the
row is still claimed by this worker under this claim's token: a worker whose lease ran out
and was taken over gets ``LeaseLostError`` and writes nothing. ``done_within`` and
``progress_within`` return hooks that another service runs inside its own write transaction
(``DeploymentService.rollback(..., within=...)``, ``ModelRegistry.set_status(...,
within=...)``), so an effect and the action's record of it commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from loopline.automation.alerts import AlertContext
from loopline.core.monitoring import ActionState, PlaybookAction
from loopline.store import MetadataStore, UnitOfWork
from loopline.store import playbook_records as records

__all__ = ["Held"]

T = TypeVar("T")
Result = Mapping[str, Any]


class Held:
    """An action claimed by this worker: read its parts, move it, hand out fenced hooks."""

    def __init__(self, store: MetadataStore, actor: str, action: PlaybookAction) -> None:
        """Hold ``action`` as claimed (``claimed_by`` and ``attempts`` are the claim)."""
        self.store = store
        self.actor = actor
        self.action = action
        self.claim = records.Claim(action.id, action.claimed_by or "", action.attempts)
        self.lease_until = action.lease_until
        self.alert = AlertContext.from_payload(action.result.get("alert") or {})

    @property
    def params(self) -> Mapping[str, Any]:
        """The step's parameters."""
        return self.action.params

    def move(self, state: ActionState, result: Result | None = None, *,
             keep_until: datetime | None = None, approval_id: str | None = None
             ) -> PlaybookAction:
        """Move the action to ``state`` in its own transaction; the claim ends unless kept.

        Raises:
            LeaseLostError: when another worker took the action over (nothing is written).
        """
        with self.store.write(self.actor) as uow:
            self.action = records.transition(uow, self.claim, state, result,
                                             keep_until=keep_until, approval_id=approval_id)
        return self.action

    def progress(self, result: Result) -> PlaybookAction:
        """Record ``result`` (a step done part-way) keeping the action running and claimed.

        Raises:
            LeaseLostError: as :meth:`move`.
        """
        return self.move(ActionState.RUNNING, result, keep_until=self.lease_until)

    def release(self, result: Result) -> PlaybookAction:
        """Record ``result`` and let go of the claim, the action still running (waiting).

        Raises:
            LeaseLostError: as :meth:`move`.
        """
        return self.move(ActionState.RUNNING, result)

    def done_within(self, result: Callable[[T], Result]) -> Callable[[UnitOfWork, T], None]:
        """Return a hook marking the action done with ``result(written)`` inside ``uow``."""
        def hook(uow: UnitOfWork, written: T) -> None:
            self.action = records.transition(uow, self.claim, ActionState.DONE,
                                             result(written))
        return hook

    def progress_within(self, result: Callable[[T], Result]
                        ) -> Callable[[UnitOfWork, T], None]:
        """Return a hook recording ``result(written)`` inside ``uow``, the claim kept."""
        def hook(uow: UnitOfWork, written: T) -> None:
            self.action = records.transition(uow, self.claim, ActionState.RUNNING,
                                             result(written), keep_until=self.lease_until)
        return hook
