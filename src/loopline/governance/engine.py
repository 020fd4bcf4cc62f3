"""Which policies govern a gated action, and the decision their rules give.

Pure and deterministic: no I/O and no clock (the time approvals are judged at comes in the
facts). Every rule of every applicable policy is evaluated and recorded, failing or not, so
a decision shows all that is wrong at once and can be re-evaluated to the same answer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from loopline.core.gates import GateDecision
from loopline.governance.facts import Facts
from loopline.governance.policy_files import PolicySet
from loopline.governance.policy_model import ApprovalsRule, GatePolicy
from loopline.governance.rules import check_rule


def applicable(policy_set: PolicySet, model: str, gate: str,
               target: str | None) -> list[GatePolicy]:
    """Return the policies of the set that govern ``gate`` of ``model`` moving to ``target``.

    A policy applies when a model glob matches, the gate is listed, and its targets are
    empty (any target) or list ``target``; the set's order is kept.
    """
    return [policy for policy in policy_set.gate_policies
            if policy.governs(model, gate, target)]


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


def _reason(policy_set: PolicySet, policies: list[GatePolicy],
            records: list[dict[str, Any]]) -> str:
    failed = [record for record in records if not record["passed"]]
    if not failed:
        return (f"{_count(len(records), 'rule')} of {_count(len(policies), 'policy', 'policies')}"
                " passed "
                f"(policy set {policy_set.digest[:12]})")
    first = failed[0]
    more = f" (and {len(failed) - 1} more failing rules)" if len(failed) > 1 else ""
    return f"policy {first['policy']!r} rule {first['rule']!r} failed: {first['message']}{more}"


def evaluate(policy_set: PolicySet, facts: Facts) -> GateDecision:
    """Return the decision of the set's policies on ``facts`` (its model, gate and target).

    Allowed when no policy applies or every rule of every applicable policy passes; the
    reason names the first failing policy and rule.
    """
    policies = applicable(policy_set, facts.model, facts.gate, facts.target)
    if not policies:
        return GateDecision(True, f"no policy governs {facts.gate!r} of model {facts.model!r}")
    records = [check_rule(rule, facts).as_record(policy.name, rule)
               for policy in policies for rule in policy.rules]
    allowed = all(record["passed"] for record in records)
    return GateDecision(allowed, _reason(policy_set, policies, records), tuple(records))


def approval_requirement(policy_set: PolicySet, model: str, gate: str,
                         target: str | None) -> tuple[int, timedelta | None]:
    """Return how many approvals the applicable policies ask for, and the shortest expiry.

    The count is the largest of the applicable ``approvals`` rules (0 when there are none);
    the expiry is the shortest ``expires_after`` they give (None when none gives one).
    """
    rules = [rule for policy in applicable(policy_set, model, gate, target)
             for rule in policy.rules if isinstance(rule, ApprovalsRule)]
    count = max((rule.count for rule in rules), default=0)
    expiry = min((rule.expires_after for rule in rules if rule.expires_after is not None),
                 default=None)
    return count, expiry
