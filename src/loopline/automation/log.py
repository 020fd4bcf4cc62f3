"""Reading playbook actions: what ``loopline playbooks`` and ``Automation.actions`` show.

Read-only; it needs only the store, so a command can list actions without wiring the
automation's services.
"""

from __future__ import annotations

from loopline.core.errors import InvalidArgumentError
from loopline.core.monitoring import ActionState, PlaybookAction
from loopline.store import MetadataStore
from loopline.store.playbook_records import MAX_LIST, ActionQueries

__all__ = ["MAX_LIST", "ActionLog", "parse_action_state"]


def parse_action_state(value: ActionState | str, field: str = "state") -> ActionState:
    """Return ``value`` as an action state.

    Raises:
        InvalidArgumentError: naming ``field`` and the states there are otherwise.
    """
    try:
        return ActionState(value)
    except ValueError:
        raise InvalidArgumentError(field, f"{value!r} is not an action state; use one of "
                                          f"{', '.join(ActionState)}") from None


class ActionLog:
    """The playbook actions of one workspace, newest first."""

    def __init__(self, store: MetadataStore) -> None:
        self._queries = ActionQueries(store.engine)

    def list(self, alert_id: str | None = None, state: ActionState | str | None = None,
             limit: int = 100) -> list[PlaybookAction]:
        """List at most ``limit`` actions newest first (an alert's in step order).

        Raises:
            InvalidArgumentError: naming ``state`` or ``limit`` (1 to ``MAX_LIST``).
        """
        wanted = None if state is None else parse_action_state(state)
        return self._queries.list(alert_id, wanted, limit)

    def get(self, action_id: str) -> PlaybookAction:
        """Return one action.

        Raises:
            NotFoundError: when there is no such action.
        """
        return self._queries.get(action_id)
