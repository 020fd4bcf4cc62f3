"""The governance report: record completeness and policy violations per model version.

For each version (all of them, or a seeded sample) it checks the record a reviewer needs:
owner, intended use, description, training data recorded and validated, code version,
environment, signature, producing run; and it evaluates the applied policy set for the gates
the version has passed: ``register`` always, ``status`` to its current status when it left
``candidate``, and ``alias`` for each alias that points at it. Approvals are judged by their
stored status (an approval that was granted and has since expired still justified the move it
was given for), so the report is stable between runs over the same records. An alias gate
is judged with the subject who last moved the alias as the actor (the approvals rule never
counts the actor's own approval), the others with the version's registrant. Failing items
are named.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loopline.core.clock import Clock
from loopline.core.errors import InvalidArgumentError
from loopline.core.gates import GateAction, GateRequest
from loopline.core.governance import ApprovalRequest, ApprovalStatus
from loopline.core.models import ModelAlias, ModelStatus, ModelVersion, version_uri
from loopline.governance.engine import applicable, evaluate
from loopline.governance.facts import NOW_KEY, Facts
from loopline.governance.gate import FactSource
from loopline.governance.policy_files import PolicySet
from loopline.store import MetadataStore
from loopline.store.model_queries import ModelQueries

MAX_SAMPLE = 1_000_000

_Gate = tuple[str, str | None, str]
"""A gate a version passed: ``(action, target, actor)``."""


COMPLETENESS_CHECKS: Mapping[str, Callable[[Facts], bool]] = {
    "owner": lambda f: bool(f.tags.get("owner")),
    "intended_use": lambda f: bool(f.tags.get("intended_use")),
    "description": lambda f: bool(f.description or f.tags.get("purpose")),
    "training_data": lambda f: bool(f.datasets) and all(d.exists for d in f.datasets),
    "data_validated": lambda f: bool(f.datasets) and all(d.validated for d in f.datasets),
    "code_version": lambda f: bool(f.code_version and f.code_version.get("commit")),
    "environment": lambda f: f.environment_recorded,
    "signature": lambda f: f.signature_recorded,
    "run": lambda f: f.run_id is not None,
}


@dataclass(frozen=True, slots=True)
class Violation:
    """One failing policy rule for one gate a version passed."""

    gate: str
    target: str | None
    policy: str
    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class ReportItem:
    """One model version: its state, the completeness checks it misses, its violations."""

    uri: str
    status: str
    aliases: tuple[str, ...]
    missing: tuple[str, ...]
    violations: tuple[Violation, ...]

    @property
    def in_use(self) -> bool:
        """Whether the version serves (production status, or an alias points at it)."""
        return self.status == ModelStatus.PRODUCTION or bool(self.aliases)

    def as_record(self) -> dict[str, Any]:
        """Return the item as JSON-ready data."""
        return {"uri": self.uri, "status": self.status, "aliases": list(self.aliases),
                "in_use": self.in_use, "missing": list(self.missing),
                "violations": [dataclasses.asdict(v) for v in self.violations]}


@dataclass(frozen=True, slots=True)
class GovernanceReport:
    """Completeness and policy-violation rates over the versions examined."""

    generated_at: datetime
    policy_set: str
    population: int
    items: tuple[ReportItem, ...]
    missing_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def examined(self) -> int:
        """How many versions the report looked at."""
        return len(self.items)

    @property
    def completeness(self) -> float:
        """The share of completeness checks that passed, over every version examined."""
        total = len(self.items) * len(COMPLETENESS_CHECKS)
        failed = sum(len(item.missing) for item in self.items)
        return 1.0 if total == 0 else (total - failed) / total

    @property
    def complete_share(self) -> float:
        """The share of versions that pass every completeness check."""
        return _share(sum(not item.missing for item in self.items), len(self.items))

    @property
    def violation_rate(self) -> float:
        """The share of versions with at least one failing policy rule."""
        return _share(sum(bool(item.violations) for item in self.items), len(self.items))

    def as_record(self) -> dict[str, Any]:
        """Return the report as JSON-ready data; failing items first."""
        in_use = [item for item in self.items if item.in_use]
        failing = [item for item in self.items if item.missing or item.violations]
        return {
            "generated_at": self.generated_at.isoformat(), "policy_set": self.policy_set,
            "population": self.population, "examined": self.examined,
            "in_use": len(in_use), "completeness": round(self.completeness, 4),
            "complete_share": round(self.complete_share, 4),
            "violation_rate": round(self.violation_rate, 4),
            "in_use_violation_rate": round(
                _share(sum(bool(i.violations) for i in in_use), len(in_use)), 4),
            "missing_counts": dict(self.missing_counts),
            "failing": [item.as_record() for item in failing],
        }


def _share(part: int, whole: int) -> float:
    return 0.0 if whole == 0 else part / whole


class ReportBuilder:
    """Builds the governance report from the registry's records and the applied policies."""

    def __init__(self, store: MetadataStore, facts: FactSource,
                 policies: Callable[[], PolicySet], clock: Clock) -> None:
        self._queries = ModelQueries(store.engine)
        self._facts = facts
        self._policies = policies
        self._clock = clock

    def build(self, sample: int | None = None, seed: int = 0) -> GovernanceReport:
        """Examine every version, or ``sample`` of them chosen with ``seed``.

        Raises:
            InvalidArgumentError: naming ``sample`` when it is not a positive count.
        """
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)
                                   or not 0 < sample <= MAX_SAMPLE):
            raise InvalidArgumentError("sample", f"{sample} must be between 1 and {MAX_SAMPLE}")
        versions = self._all_versions()
        chosen = versions if sample is None or sample >= len(versions) else \
            sorted(random.Random(seed).sample(versions, sample),
                   key=lambda v: (v.name, v.version))
        policy_set, now = self._policies(), self._clock.now()
        aliases = self._aliases({v.name for v in chosen})
        items = tuple(self._item(v, aliases.get((v.name, v.version), ()), policy_set, now)
                      for v in chosen)
        counts = Counter(name for item in items for name in item.missing)
        return GovernanceReport(now, policy_set.digest, len(versions), items,
                                {name: counts.get(name, 0) for name in COMPLETENESS_CHECKS})

    def _all_versions(self) -> list[ModelVersion]:
        return [version for model in self._queries.models()
                for version in self._queries.versions(model.name)]

    def _aliases(self, names: Iterable[str]) -> dict[tuple[str, int], tuple[ModelAlias, ...]]:
        found: dict[tuple[str, int], list[ModelAlias]] = {}
        for name in sorted(names):
            for alias in self._queries.aliases(name):
                found.setdefault((name, alias.version), []).append(alias)
        return {key: tuple(value) for key, value in found.items()}

    def _judge(self, version: ModelVersion, gate: _Gate, policy_set: PolicySet,
               now: datetime) -> tuple[Facts, list[Violation]]:
        """Return the facts of ``gate`` as recorded, and the rules they fail."""
        action, target, actor = gate
        facts = _as_recorded(self._facts.gather(GateRequest(
            action, version.name, version.version, actor, target), now))
        return facts, [Violation(action, target, str(rule.get("policy")),
                                 str(rule.get("rule")), str(rule.get("message")))
                       for rule in evaluate(policy_set, facts).rules if not rule.get("passed")]

    def _item(self, version: ModelVersion, aliases: Sequence[ModelAlias], policy_set: PolicySet,
              now: datetime) -> ReportItem:
        # The register gate's facts are the version as recorded: completeness reads them.
        base, violations = self._judge(
            version, (GateAction.REGISTER, None, version.created_by), policy_set, now)
        for gate in _later_gates(version, aliases):
            # Gathering reads the version, its datasets and its artifact: skip it (as the
            # gate does) when no policy governs the gate.
            if applicable(policy_set, version.name, gate[0], gate[1]):
                violations += self._judge(version, gate, policy_set, now)[1]
        missing = tuple(name for name, check in COMPLETENESS_CHECKS.items() if not check(base))
        return ReportItem(version_uri(version.name, version.version), str(version.status),
                          tuple(alias.alias for alias in aliases), missing, tuple(violations))


def _later_gates(version: ModelVersion, aliases: Sequence[ModelAlias]) -> list[_Gate]:
    """Return the gates the version passed after registering: its status, its aliases."""
    gates: list[_Gate] = []
    if version.status != ModelStatus.CANDIDATE:
        gates.append((GateAction.STATUS, str(version.status), version.created_by))
    gates += [(GateAction.ALIAS, alias.alias, alias.updated_by) for alias in aliases]
    return gates


def _as_stored(request: ApprovalRequest) -> ApprovalRequest:
    """Return the request with its stored status, undoing the reader's ``expired``.

    ``expired`` is never stored: an open request past its expiry reads as expired. An open
    request is ``approved`` exactly when its approvers reached the count it required (the
    approval service's rule), so the stored status follows from the votes.
    """
    if request.status != ApprovalStatus.EXPIRED:
        return request
    granted = len(request.approvers()) >= request.required
    return dataclasses.replace(
        request, status=ApprovalStatus.APPROVED if granted else ApprovalStatus.PENDING)


def _as_recorded(facts: Facts) -> Facts:
    """Drop the evaluation time and restore stored statuses: approvals count as recorded."""
    details = {key: value for key, value in facts.details.items() if key != NOW_KEY}
    return dataclasses.replace(facts, details=details,
                               approvals=tuple(_as_stored(a) for a in facts.approvals))
