"""Request bodies of the ``/models`` routes, and the registration record they carry.

Bounds here are generous outer limits (the body guard caps the whole body at 1 MiB); the
registry checks each value itself and names the field it refuses.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loopline.core.models import MAX_VERSION, ModelStatus, NewModelVersion
from loopline.registry.verify import DEFAULT_TIMEOUT

__all__ = ["AliasTarget", "NewVersion", "StatusChange", "TrustReason", "VerifyOptions"]

MAX_VERIFY_TIMEOUT = 3_600.0
MAX_REASON = 2_000  # the registry's own limit (store.model_registry.MAX_REASON)


class NewVersion(BaseModel):
    """A version to register: ``NewModelVersion``'s fields but ``name`` (the path names it).

    Every payload it names by digest (``artifact_digest``, ``environment.artifact``,
    ``extra.holdout.inputs``/``outputs``, ``extra.reference_profile.digest``) must have been
    uploaded first (``POST /models/{name}/payloads/upload``). ``loopline.client`` builds it
    with ``registry.registration.prepare``. Non-finite metric values travel as ``"nan"``,
    ``"inf"`` and ``"-inf"`` (strict JSON has no others).
    """

    model_config = ConfigDict(extra="forbid")

    artifact_digest: str = Field(max_length=64, description="SHA-256 (64 lowercase hex).")
    flavor: str = Field(max_length=64)
    signature: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(default=None, max_length=256)
    datasets: list[str] = Field(default_factory=list, max_length=1_000,
                                description="Dataset snapshot refs NAME@VERSION.")
    code_version: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=100_000)
    extra: dict[str, Any] = Field(default_factory=dict)

    def record(self, name: str, metrics: dict[str, Any]) -> NewModelVersion:
        """Return the registry's record of this version of ``name`` with ``metrics``.

        Raises:
            InvalidArgumentError: naming the field ``NewModelVersion`` refuses.
        """
        return NewModelVersion(
            name=name, artifact_digest=self.artifact_digest, flavor=self.flavor,
            signature=self.signature, metrics=metrics, params=self.params, tags=self.tags,
            run_id=self.run_id, datasets=tuple(self.datasets), code_version=self.code_version,
            environment=self.environment, description=self.description, extra=self.extra)


class AliasTarget(BaseModel):
    """The version an alias is to point at."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_VERSION)


class StatusChange(BaseModel):
    """The status a version is to move to."""

    model_config = ConfigDict(extra="forbid")

    status: ModelStatus


class TrustReason(BaseModel):
    """Why a version may run code when it loads (kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=MAX_REASON)


class VerifyOptions(BaseModel):
    """How long the fresh process may take to load the model and score its holdout."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_VERIFY_TIMEOUT,
                           description="Seconds.")
