"""The governance gate: authorise the actor, gather the facts, evaluate the policies in force.

Implements the registry's ``Gate`` port (``core.ports``). Order kept: authorisation first (a
subject without the permission is refused whatever the policies say, with
``AccessDeniedError``); then the active policy set decides from facts gathered for this one
request. The decision carries the set's digest and the facts record, so the audit entry of
the change it allowed (or the error it raised) can be re-evaluated to the same answer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from loopline.core.clock import Clock
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.core.governance import Permission
from loopline.core.ports import Authorizer
from loopline.governance import engine
from loopline.governance.facts import NOW_KEY, Facts
from loopline.governance.policy_files import PolicySet


class PolicySource(Protocol):
    """Where the policies in force come from (``PolicySets`` is one)."""

    def active(self) -> PolicySet:
        """Return the set the gates evaluate now."""
        ...


class FactSource(Protocol):
    """Where the facts of a request come from (``FactGatherer`` is one)."""

    def gather(self, request: GateRequest, now: datetime) -> Facts:
        """Return the facts of ``request`` as of ``now``."""
        ...


def permission_for(action: str) -> Permission:
    """Return the permission a gated action needs: ``trust`` for trust, else ``write``."""
    return Permission.TRUST if action == GateAction.TRUST else Permission.WRITE


def decide(policy_set: PolicySet, facts: Facts) -> GateDecision:
    """Evaluate ``facts`` under ``policy_set``; the decision records the digest and facts.

    Pure: the same set and facts always give the same decision.
    """
    decision = engine.evaluate(policy_set, facts)
    return replace(decision, policy_set=policy_set.digest,
                   facts={**facts.as_record(), "details": dict(facts.details)})


class GovernanceGate:
    """Decides gate requests by role and by the active policy set."""

    def __init__(self, authorizer: Authorizer, policy_sets: PolicySource,
                 gatherer: FactSource, clock: Clock) -> None:
        self._authorizer = authorizer
        self._policy_sets = policy_sets
        self._gatherer = gatherer
        self._clock = clock

    def check(self, request: GateRequest) -> GateDecision:
        """Decide ``request``: allowed when the actor may act and every applicable rule passes.

        Raises:
            AccessDeniedError: when the actor holds no role permitting the action on the
                model.
            NotFoundError: when the request names a version that does not exist.
        """
        self._authorizer.authorize(request.actor, permission_for(str(request.action)),
                                   request.model)
        policy_set = self._policy_sets.active()
        now = self._clock.now()
        if not engine.applicable(policy_set, request.model, str(request.action),
                                 request.target):
            # Nothing to check: skip reading the version, its datasets and its artifact.
            facts = Facts(request.model, request.version, str(request.action), request.target,
                          request.actor, details={NOW_KEY: now.isoformat()})
        else:
            facts = self._gatherer.gather(request, now)
        return decide(policy_set, facts)
