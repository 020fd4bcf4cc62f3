"""One evaluation function per rule kind: a rule and the ``Facts`` give a ``RuleResult``.

Pure and deterministic: rules read only the facts (never a clock or the store), so a
decision re-evaluated from its recorded facts gives the same answer. A rule never passes for
want of data: a missing metric or slice, or a matching slice without the metric, fails,
saying what is missing. The one exception is time: without a decision time
(``facts.details[NOW_KEY]``) approvals are judged by their stored status, which is how the
governance report judges what justified a past move.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loopline.core.canonical import json_safe
from loopline.core.governance import ApprovalRequest, ApprovalStatus
from loopline.governance.facts import FAILING_SUITES_KEY, NOW_KEY, DatasetFact, Facts
from loopline.governance.policy_model import (
    ApprovalsRule,
    EncryptionRule,
    LineageCompleteRule,
    MetricCondition,
    MetricRule,
    RequiredMetadataRule,
    Rule,
    SliceGapRule,
)

_COMPARE: Mapping[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
}
_NOT_COUNTED = frozenset({ApprovalStatus.EXPIRED, ApprovalStatus.REJECTED,
                          ApprovalStatus.WITHDRAWN})
# max - min of recorded floats carries binary noise (0.9 - 0.85 = 0.05000000000000004); a
# gap equal to the bound as people read it must pass.
_GAP_DIGITS = 12


@dataclass(frozen=True, slots=True)
class RuleResult:
    """What one rule found: pass or fail, the value seen, what was needed, and a sentence."""

    passed: bool
    observed: Any
    expected: Any
    message: str

    def as_record(self, policy: str, rule: Rule) -> dict[str, Any]:
        """Return the JSON-safe record kept in a gate decision for ``rule`` of ``policy``."""
        return {"policy": policy, "rule": rule.id, "kind": rule.kind, "passed": self.passed,
                "observed": json_safe(self.observed), "expected": json_safe(self.expected),
                "message": self.message}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _text(value: float) -> str:
    return repr(value) if not value.is_integer() else repr(value).removesuffix(".0")


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | list | tuple | set):
        return bool(value)
    return True


def check_required_metadata(rule: RequiredMetadataRule, facts: Facts) -> RuleResult:
    """Pass when every field of the rule is a non-empty tag (``description``: the version's)."""
    def value(name: str) -> Any:
        return facts.description if name == "description" else facts.tags.get(name)

    present = sorted(name for name in set(rule.fields) if _present(value(name)))
    missing = [name for name in rule.fields if name not in present]
    message = (f"missing {', '.join(missing)}" if missing
               else f"has {', '.join(rule.fields)}")
    return RuleResult(not missing, present, list(rule.fields), message)


def _dataset_gaps(datasets: tuple[DatasetFact, ...], failing: Mapping[str, Any]) -> list[str]:
    if not datasets:
        return ["no training dataset snapshot is recorded"]
    gaps = []
    for dataset in datasets:
        if not dataset.exists:
            gaps.append(f"snapshot {dataset.ref} does not exist")
        elif dataset.validated is None:
            gaps.append(f"snapshot {dataset.ref} was never validated")
        elif not dataset.validated:
            suites = failing.get(dataset.ref) or []
            which = f" (failing suite {', '.join(map(str, suites))})" if suites else ""
            gaps.append(f"snapshot {dataset.ref} failed its newest validation{which}")
    return gaps


def _lineage_gaps(rule: LineageCompleteRule, facts: Facts) -> list[str]:
    code = facts.code_version or {}
    found = facts.details.get(FAILING_SUITES_KEY)
    gaps = (_dataset_gaps(facts.datasets, found if isinstance(found, Mapping) else {})
            if rule.validated_datasets else [])
    if rule.code_version and not _present(code.get("commit")):
        gaps.append("no code commit is recorded")
    if rule.clean_code and code.get("dirty") is not False:
        gaps.append("the code had uncommitted changes" if code.get("dirty")
                    else "no record says the code was clean (committed)")
    if rule.environment and not facts.environment_recorded:
        gaps.append("no environment is recorded")
    return gaps


def check_lineage_complete(rule: LineageCompleteRule, facts: Facts) -> RuleResult:
    """Pass when each switched-on part of the lineage is recorded; name the first gap."""
    code = facts.code_version or {}
    gaps = _lineage_gaps(rule, facts)
    observed = {
        "datasets": [{"ref": d.ref, "exists": d.exists, "validated": d.validated}
                     for d in facts.datasets],
        "code_commit": code.get("commit"), "dirty": code.get("dirty"),
        "environment_recorded": facts.environment_recorded, "missing": gaps,
    }
    expected = {"validated_datasets": rule.validated_datasets, "code_version": rule.code_version,
                "clean_code": rule.clean_code, "environment": rule.environment}
    if not gaps:
        return RuleResult(True, observed, expected, "lineage is complete")
    more = f" (and {len(gaps) - 1} more gaps)" if len(gaps) > 1 else ""
    return RuleResult(False, observed, expected, gaps[0] + more)


def _metric_value(metrics: Mapping[str, Any], condition: MetricCondition) -> tuple[Any, str]:
    """Return the value the condition reads, or (None, why it is missing)."""
    if condition.slice is None:
        if condition.metric not in metrics:
            return None, f"metric {condition.metric} is missing"
        return metrics[condition.metric], ""
    slices = metrics.get("slices")
    entry = slices.get(condition.slice) if isinstance(slices, Mapping) else None
    if not isinstance(entry, Mapping):
        return None, f"slice {condition.slice} is missing (no metrics recorded for it)"
    if condition.metric not in entry:
        return None, f"metric {condition.metric} is missing on slice {condition.slice}"
    return entry[condition.metric], ""


def check_metric(rule: MetricRule, facts: Facts) -> RuleResult:
    """Pass when the metric (overall or on the slice) satisfies the condition.

    A missing metric or slice, or a value that is not a finite number, fails.
    """
    condition = rule.condition
    expected = f"{condition.op} {_text(condition.value)}"
    value, missing = _metric_value(facts.metrics, condition)
    if missing:
        return RuleResult(False, None, expected, f"{missing}, needs {expected}")
    label = condition.metric + (f" on slice {condition.slice}" if condition.slice else "")
    number = _number(value)
    if number is None:
        return RuleResult(False, value, expected,
                          f"{label} is {value!r}, not a finite number, needs {expected}")
    passed = _COMPARE[condition.op](number, condition.value)
    return RuleResult(passed, number, expected, f"{label} is {_text(number)}, needs {expected}")


def _slice_values(rule: SliceGapRule, facts: Facts) -> tuple[dict[str, float], str]:
    """Return the metric on each slice matching the glob, or the first reason it cannot.

    A matching slice without the metric fails rather than being skipped: skipping it would
    let a gap pass that the missing slice may well widen.
    """
    found = facts.metrics.get("slices")
    slices: Mapping[Any, Any] = found if isinstance(found, Mapping) else {}
    values: dict[str, float] = {}
    for key in sorted(slices, key=str):
        entry = slices[key]
        if not fnmatch.fnmatchcase(str(key), rule.slices):
            continue
        if not isinstance(entry, Mapping) or rule.metric not in entry:
            return values, (f"metric {rule.metric} is missing on slice {key}, which matches "
                            f"{rule.slices!r}")
        number = _number(entry[rule.metric])
        if number is None:
            return values, (f"{rule.metric} on slice {key} is {entry[rule.metric]!r}, "
                            "not a finite number")
        values[str(key)] = number
    return values, ""


def check_slice_gap(rule: SliceGapRule, facts: Facts) -> RuleResult:
    """Pass when max - min of the metric over the matching slices is at most ``max_gap``.

    Fewer than two matching slices fail (there is no gap to bound), and so does a matching
    slice without the metric or with a value that is not a finite number.
    """
    expected = f"gap <= {_text(rule.max_gap)}"
    values, problem = _slice_values(rule, facts)
    if problem:
        return RuleResult(False, {"slices": values, "gap": None}, expected, problem)
    if len(values) < 2:
        found = f" ({', '.join(values)})" if values else ""
        return RuleResult(False, {"slices": values, "gap": None}, expected,
                          f"needs at least 2 slices matching {rule.slices!r} with "
                          f"{rule.metric}, found {len(values)}{found}")
    low = min(values, key=values.__getitem__)
    high = max(values, key=values.__getitem__)
    gap = round(values[high] - values[low], _GAP_DIGITS)
    message = (f"{rule.metric} gap over slices {rule.slices!r} is {_text(gap)} "
               f"({low} {_text(values[low])}, {high} {_text(values[high])}), needs {expected}")
    return RuleResult(gap <= rule.max_gap, {"slices": values, "gap": gap}, expected, message)


def check_encryption(rule: EncryptionRule, facts: Facts) -> RuleResult:
    """Pass when the artifact is encrypted at rest."""
    encrypted = facts.artifact_encrypted is True
    message = ("the artifact is encrypted at rest" if encrypted
               else "the artifact is not encrypted at rest")
    return RuleResult(encrypted, facts.artifact_encrypted, True, message)


def _now(details: Mapping[str, Any]) -> tuple[datetime | None, str]:
    raw = details.get(NOW_KEY)
    if raw is None:
        return None, ""
    try:
        now = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        now = None
    if now is None:
        return None, f"the decision time {raw!r} is not an ISO time"
    # Stored times are aware; a naive time is read as UTC rather than failing to compare.
    return (now if now.tzinfo is not None else now.replace(tzinfo=UTC)), ""


def _counted(request: ApprovalRequest, now: datetime | None) -> bool:
    status = request.status_at(now) if now is not None else request.status
    return status not in _NOT_COUNTED


def check_approvals(rule: ApprovalsRule, facts: Facts) -> RuleResult:
    """Pass when ``count`` distinct people approved, other than the requester and the actor.

    Rejected and withdrawn requests never count. Expiry is judged at the decision time
    ``facts.details[NOW_KEY]`` when it is given (gates always give it); without it, each
    request counts by its stored status, so an approval granted and since expired still
    justifies the move it was given for (the governance report relies on this). A decision
    time that is not an ISO time fails.
    """
    now, problem = _now(facts.details)
    if problem:
        return RuleResult(False, [], rule.count, f"{problem}; cannot tell which approvals "
                                                 "are still valid")
    valid = [request for request in facts.approvals if _counted(request, now)]
    approvers = sorted({name for request in valid
                        for name in request.approvers(excluding=[facts.actor])})
    ignored = len(facts.approvals) - len(valid)
    names = f" ({', '.join(approvers)})" if approvers else ""
    message = (f"{len(approvers)} of {rule.count} approvals from people other than the "
               f"requester and {facts.actor!r}{names}")
    if ignored:
        message += f"; {ignored} request{'s' if ignored > 1 else ''} expired, rejected or " \
                   "withdrawn"
    return RuleResult(len(approvers) >= rule.count, approvers, rule.count, message)


def check_rule(rule: Rule, facts: Facts) -> RuleResult:
    """Return what ``rule`` finds in ``facts``."""
    match rule:
        case RequiredMetadataRule():
            return check_required_metadata(rule, facts)
        case LineageCompleteRule():
            return check_lineage_complete(rule, facts)
        case MetricRule():
            return check_metric(rule, facts)
        case SliceGapRule():
            return check_slice_gap(rule, facts)
        case EncryptionRule():
            return check_encryption(rule, facts)
        case ApprovalsRule():
            return check_approvals(rule, facts)
