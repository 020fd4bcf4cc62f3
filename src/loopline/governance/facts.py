"""What a policy can see about one gated action: the facts, gathered once per decision.

Pure records: ``governance.fact_gathering`` fills them from the store; the rules in
``governance.rules`` read only these, so a decision can be re-evaluated from the recorded
facts to the same answer. Every field a rule reads is recorded (``Facts.as_record``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loopline.core.governance import ApprovalRequest

FAILING_SUITES_KEY = "failing_suites"
"""The key of ``Facts.details`` naming, per snapshot ref, the suites whose newest run failed."""

NOW_KEY = "now"
"""The key of ``Facts.details`` holding the decision time (ISO text) approvals are judged at.

Gates always set it; without it the approvals rule judges requests by their stored status.
"""


@dataclass(frozen=True, slots=True)
class DatasetFact:
    """One training dataset snapshot of the version, and whether it passed validation.

    ``validated`` is True when the newest validation run of the snapshot passed, False when
    it failed, and None when it was never validated; ``exists`` is False when the ref names
    no recorded snapshot (or a purged one).
    """

    ref: str
    exists: bool
    validated: bool | None
    suites: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Facts:
    """The model version a gate decides about, with everything rules may check.

    ``version`` is 0 for a registration (its number is not given yet). ``metrics`` keeps the
    registry's form: overall values plus ``{"slices": {"region=EU": {"recall": 0.8}}}``.
    ``artifact_encrypted`` is whether the artifact is (or, at registration, will be) stored
    encrypted at rest. ``approvals`` are the approval requests for this model version, gate
    and target (any status; rules decide which count).
    """

    model: str
    version: int
    gate: str
    target: str | None
    actor: str
    status: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    datasets: tuple[DatasetFact, ...] = ()
    code_version: Mapping[str, Any] | None = None
    run_id: str | None = None
    environment_recorded: bool = False
    signature_recorded: bool = False
    artifact_encrypted: bool = False
    approvals: tuple[ApprovalRequest, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """Return the facts as JSON-ready data (approvals as ids, statuses and approvers)."""
        return {
            "model": self.model, "version": self.version, "gate": self.gate,
            "target": self.target, "actor": self.actor, "status": self.status,
            "metrics": dict(self.metrics), "tags": dict(self.tags),
            "description": self.description,
            "datasets": [{"ref": d.ref, "exists": d.exists, "validated": d.validated,
                          "suites": list(d.suites)} for d in self.datasets],
            "code_version": None if self.code_version is None else dict(self.code_version),
            "run_id": self.run_id, "environment_recorded": self.environment_recorded,
            "signature_recorded": self.signature_recorded,
            "artifact_encrypted": self.artifact_encrypted,
            "approvals": [{"id": a.id, "status": str(a.status), "requester": a.requester,
                           "approvers": list(a.approvers()),
                           "expires_at": a.expires_at.isoformat()} for a in self.approvals],
        }
