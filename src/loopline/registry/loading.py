"""Loading a model version: refuse quarantine, verify the artifact, pass the trust decision.

The artifact is read through the verifying content store (its SHA-256 is checked as it is
read), then handed to the version's flavor with a ``TrustContext`` built from the version's
audited trust decision only. Every refusal names the version, so an operator knows which
record to look at.
"""

from __future__ import annotations

from loopline.core.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    UntrustedModelError,
)
from loopline.core.models import ModelStatus, ModelVersion
from loopline.core.ports import BlobStore
from loopline.registry.flavors import LoadedModel, TrustContext, flavor_named


def read_artifact(blobs: BlobStore, version: ModelVersion) -> bytes:
    """Return the verified bytes of the version's artifact.

    Raises:
        IntegrityError: naming the version when its artifact is missing or altered.
    """
    try:
        return blobs.get_bytes(version.artifact_digest)
    except (IntegrityError, NotFoundError) as exc:
        raise IntegrityError(f"the artifact of {version.uri} (sha256 "
                             f"{version.artifact_digest}) cannot be loaded: {exc.message}"
                             ) from exc


def load_version(blobs: BlobStore, version: ModelVersion, trust: TrustContext,
                 allow_quarantined: bool = False) -> LoadedModel:
    """Return the model of ``version``, ready to predict.

    Raises:
        ConflictError: when the version is quarantined and ``allow_quarantined`` is not set.
        IntegrityError: naming the version when its artifact is missing, altered or not
            loadable by its flavor.
        UntrustedModelError: naming the version when its flavor needs a trust decision it
            does not have (nothing from the artifact ran).
        ConfigurationError: when the flavor's libraries are not installed.
    """
    if version.status is ModelStatus.QUARANTINED and not allow_quarantined:
        raise ConflictError(f"{version.uri} is quarantined; release it (status candidate) "
                            "or load it with allow_quarantined=True to inspect it")
    data = read_artifact(blobs, version)
    try:
        return flavor_named(version.flavor).load(data, trust)
    except UntrustedModelError as exc:
        raise UntrustedModelError(
            exc.flavor, f"{version.uri}: {exc.reason} (`loopline models trust {version.uri} "
                        "--reason ...`)", exc.untrusted) from exc
    except IntegrityError as exc:
        raise IntegrityError(f"{version.uri}: {exc.message}") from exc
