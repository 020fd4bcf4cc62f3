"""Gather the ``Facts`` of one gate request from the store, the blob store and the approvals.

Read-only: gathering writes nothing, so ``loopline policy check`` can show a decision before
anyone acts. An existing version (``version > 0``) is read from the registry's tables, never
from what the caller put in the request; a registration (``version == 0``) has no row yet,
so its facts come from the request's details, and its encryption from whether the blob
store will encrypt what it stores (it has an active keyring).

Facts are as of the decision, not of the vote: an approval counts only while its approver
still holds ``approve`` on the model (an identity disabled or a role revoked since the vote
takes the vote away), and the discounted approvers are kept in ``details`` so the decision
re-evaluates the same. The suites a training snapshot fails are kept there too, by ref.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from loopline.core.artifacts import ObjectInfo
from loopline.core.errors import AccessDeniedError, NotFoundError
from loopline.core.gates import GateRequest
from loopline.core.governance import ApprovalRequest, Permission
from loopline.core.models import ModelVersion
from loopline.core.ports import Authorizer
from loopline.governance.facts import FAILING_SUITES_KEY, NOW_KEY, DatasetFact, Facts
from loopline.store import MetadataStore
from loopline.store.governance_queries import GovernanceQueries
from loopline.store.model_queries import ModelQueries

DISCOUNTED = "discounted_approvers"
"""``details`` key: approvers whose votes were dropped, as they no longer may approve."""
"""``details`` key: ``{snapshot ref: [suites whose newest run failed]}``."""


class ApprovalReader(Protocol):
    """The approval requests made for one action (``ApprovalService`` is one)."""

    def for_action(self, model: str, version: int, gate: str,
                   target: str | None) -> builtins.list[ApprovalRequest]:
        """List every request for ``gate`` (to ``target``) on the version, any status."""
        ...


class ArtifactKeys(Protocol):
    """What the gatherer needs of the blob store: object headers, and whether it encrypts."""

    @property
    def keyring(self) -> object | None:
        """The active keyring, or None when new objects are stored plain."""
        ...

    def info(self, digest: str) -> ObjectInfo:
        """Describe a stored object (its ``key_id`` is None when it is stored plain)."""
        ...


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _refs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return ()
    return tuple(str(item) for item in value)


def _may_approve(authorizer: Authorizer, subject: str, model: str) -> bool:
    try:
        authorizer.authorize(subject, Permission.APPROVE, model)
    except AccessDeniedError:
        return False
    return True


class FactGatherer:
    """Reads everything a policy may check about the model version a gate request names.

    With an ``authorizer``, votes of approvers who no longer hold ``approve`` on the model
    are dropped; without one every vote counts (a workspace without access control).
    """

    def __init__(self, store: MetadataStore, blobs: ArtifactKeys,
                 approvals: ApprovalReader | None = None,
                 authorizer: Authorizer | None = None) -> None:
        self._blobs = blobs
        self._approvals = approvals
        self._authorizer = authorizer
        self._models = ModelQueries(store.engine)
        self._snapshots = GovernanceQueries(store.engine)

    def gather(self, request: GateRequest, now: datetime) -> Facts:
        """Return the facts of ``request`` as of ``now`` (kept as ISO text in ``details``).

        Raises:
            NotFoundError: naming ``models:/NAME/VERSION`` when ``version > 0`` names no
                version.
            IntegrityError: when the version's artifact header is damaged.
        """
        if request.version > 0:
            return self._of_version(request, now)
        return self._of_registration(request, now)

    def _base(self, request: GateRequest, now: datetime,
              refs: Sequence[str]) -> dict[str, Any]:
        details: dict[str, Any] = {NOW_KEY: now.isoformat()}
        approvals: tuple[ApprovalRequest, ...] = ()
        if self._approvals is not None:
            approvals, discounted = self._counting(request.model, self._approvals.for_action(
                request.model, request.version, str(request.action), request.target))
            if discounted:
                details[DISCOUNTED] = discounted
        datasets, failing = self._datasets(refs)
        if failing:
            details[FAILING_SUITES_KEY] = failing
        return {"model": request.model, "version": request.version,
                "gate": str(request.action), "target": request.target, "actor": request.actor,
                "approvals": approvals, "datasets": datasets, "details": details}

    def _counting(self, model: str, found: Sequence[ApprovalRequest],
                  ) -> tuple[tuple[ApprovalRequest, ...], builtins.list[str]]:
        """Drop the votes of approvers who may no longer approve on ``model``; name them."""
        if self._authorizer is None:
            return tuple(found), []
        voters = {vote.approver for request in found for vote in request.votes}
        gone = sorted(name for name in voters
                      if not _may_approve(self._authorizer, name, model))
        if not gone:
            return tuple(found), []
        kept = tuple(replace(request, votes=tuple(
            vote for vote in request.votes if vote.approver not in gone)) for request in found)
        return kept, gone

    def _datasets(self, refs: Sequence[str],
                  ) -> tuple[tuple[DatasetFact, ...], dict[str, builtins.list[str]]]:
        if not refs:
            return (), {}
        states = self._snapshots.snapshot_states(refs)
        return (tuple(DatasetFact(s.ref, s.exists, s.validated, s.suites) for s in states),
                {s.ref: list(s.failing) for s in states if s.failing})

    def _of_version(self, request: GateRequest, now: datetime) -> Facts:
        version = self._models.version(request.model, request.version)
        return Facts(
            **self._base(request, now, version.datasets), status=str(version.status),
            metrics=dict(version.metrics), tags=dict(version.tags),
            description=version.description,
            code_version=None if version.code_version is None else dict(version.code_version),
            run_id=version.run_id, environment_recorded=bool(version.environment),
            signature_recorded=version.signature is not None,
            artifact_encrypted=self._encrypted(version))

    def _encrypted(self, version: ModelVersion) -> bool:
        try:
            return self._blobs.info(version.artifact_digest).key_id is not None
        except NotFoundError:
            return False  # no artifact at all: certainly not encrypted at rest

    def _of_registration(self, request: GateRequest, now: datetime) -> Facts:
        details = request.details
        code_version = details.get("code_version")
        return Facts(
            **self._base(request, now, _refs(details.get("datasets"))),
            metrics=_mapping(details.get("metrics")),
            tags=_mapping(details.get("tags")), description=_text(details.get("description")),
            code_version=dict(code_version) if isinstance(code_version, Mapping) else None,
            run_id=_text(details.get("run_id")),
            environment_recorded=bool(details.get("environment_recorded")),
            signature_recorded=bool(details.get("signature_recorded")),
            artifact_encrypted=self._blobs.keyring is not None)
