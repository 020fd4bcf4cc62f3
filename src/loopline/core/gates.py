"""Gate requests and decisions: what a governed action asks, and what governance answered.

Pure: no I/O. Every alias move and status change of a model version (and registration and
trust, when a caller asks) is put to a ``Gate`` (the port in ``core.ports``) as a
``GateRequest``; the ``GateDecision`` it returns is recorded in the audit entry of the change,
so a decision can be re-evaluated later to the same answer. ``AllowAll`` is the gate used
until governance wires real policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loopline.core.errors import InvalidArgumentError, PolicyDeniedError


class GateAction(StrEnum):
    """The governed actions of the model registry (other areas may ask with their own)."""

    REGISTER = "register"
    ALIAS = "alias"
    DELETE_ALIAS = "delete_alias"
    STATUS = "status"
    TRUST = "trust"
    DEPLOY = "deploy"
    ROLLOUT_STEP = "rollout_step"
    PLAYBOOK_ACTION = "playbook_action"  # target: the action kind (retrain, rollback ...)


def parse_gate_action(value: str, field: str = "gate") -> GateAction:
    """Return ``value`` as a gate action; ``field`` names where it came from for the error.

    Raises:
        InvalidArgumentError: naming ``field`` and listing the gates when ``value`` is not one.
    """
    try:
        return GateAction(value)
    except ValueError:
        raise InvalidArgumentError(field, f"{value!r} is not a gate; use one of "
                                          f"{', '.join(GateAction)}") from None


@dataclass(frozen=True, slots=True)
class GateRequest:
    """A governed action about to happen: who wants to do what to which model version.

    ``target`` is what the action moves to (the alias name for ``alias``, the new status
    for ``status``); ``details`` is anything else a policy may look at (metrics, tags, the
    version an alias points at now).
    """

    action: str
    model: str
    version: int
    actor: str
    target: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A gate's answer: allowed or not, why, and the rules it evaluated (with what they saw).

    ``policy_set`` is the digest of the policy set that decided, and ``facts`` the record of
    what the rules read (``governance.facts``), so the decision can be re-evaluated later;
    both are None for a gate without policies (``AllowAll``).
    """

    allowed: bool
    reason: str
    rules: tuple[Mapping[str, Any], ...] = ()
    policy_set: str | None = None
    facts: Mapping[str, Any] | None = None

    def as_record(self) -> dict[str, Any]:
        """Return the decision as the JSON mapping kept in audit entries."""
        record: dict[str, Any] = {"allowed": self.allowed, "reason": self.reason,
                                  "rules": [dict(rule) for rule in self.rules]}
        if self.policy_set is not None:
            record["policy_set"] = self.policy_set
        if self.facts is not None:
            record["facts"] = dict(self.facts)
        return record

    def require(self, what: str) -> None:
        """Return when the decision allows the action; ``what`` names it for the error.

        Raises:
            PolicyDeniedError: naming ``what`` and the gate's reason when it is not allowed.
        """
        if not self.allowed:
            raise PolicyDeniedError(f"{what} was denied by policy: {self.reason}")


class AllowAll:
    """A gate that allows everything: the default until governance installs policies."""

    def check(self, request: GateRequest) -> GateDecision:
        """Allow ``request``, saying that no policy applied."""
        return GateDecision(True, f"no policy governs {request.action!r} (allow-all gate)")
