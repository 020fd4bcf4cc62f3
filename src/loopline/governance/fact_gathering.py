"""Gather the ``Facts`` of one gate request from the store, the blob store and the approvals.

Read-only: gathering writes nothing, so ``loopline policy check`` can show a decision before
anyone acts. An existing version (``version > 0``) is read from the registry's tables, never
from what the caller put in the request; a registration (``version == 0``) has no row yet,
so its facts come from the request's details, and its encryption from whether the blob
store will encrypt what it stores (it has an active keyring).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from loopline.core.artifacts import ObjectInfo
from loopline.core.errors import NotFoundError
from loopline.core.gates import GateRequest
from loopline.core.governance import ApprovalRequest
from loopline.core.models import ModelVersion
from loopline.governance.facts import DatasetFact, Facts
from loopline.store import MetadataStore
from loopline.store.governance_queries import GovernanceQueries
from loopline.store.model_queries import ModelQueries

NOW = "now"


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


class FactGatherer:
    """Reads everything a policy may check about the model version a gate request names."""

    def __init__(self, store: MetadataStore, blobs: ArtifactKeys,
                 approvals: ApprovalReader | None = None) -> None:
        self._blobs = blobs
        self._approvals = approvals
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

    def _base(self, request: GateRequest, now: datetime) -> dict[str, Any]:
        approvals = () if self._approvals is None else tuple(self._approvals.for_action(
            request.model, request.version, str(request.action), request.target))
        return {"model": request.model, "version": request.version,
                "gate": str(request.action), "target": request.target, "actor": request.actor,
                "approvals": approvals, "details": {NOW: now.isoformat()}}

    def _datasets(self, refs: Sequence[str]) -> tuple[DatasetFact, ...]:
        if not refs:
            return ()
        return tuple(DatasetFact(s.ref, s.exists, s.validated, s.suites)
                     for s in self._snapshots.snapshot_states(refs))

    def _of_version(self, request: GateRequest, now: datetime) -> Facts:
        version = self._models.version(request.model, request.version)
        return Facts(
            **self._base(request, now), status=str(version.status),
            metrics=dict(version.metrics), tags=dict(version.tags),
            description=version.description, datasets=self._datasets(version.datasets),
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
            **self._base(request, now), metrics=_mapping(details.get("metrics")),
            tags=_mapping(details.get("tags")), description=_text(details.get("description")),
            datasets=self._datasets(_refs(details.get("datasets"))),
            code_version=dict(code_version) if isinstance(code_version, Mapping) else None,
            run_id=_text(details.get("run_id")),
            environment_recorded=bool(details.get("environment_recorded")),
            signature_recorded=bool(details.get("signature_recorded")),
            artifact_encrypted=self._blobs.keyring is not None)
