"""A model version as a bundle's ``metadata.json``, and back as a version to register here.

Exporting writes everything the version records. Importing registers a new version with the
same artifact digest, flavor, signature, metrics, params, tags, description, code version,
environment summary and holdout; what only means something in the source workspace (its
dataset snapshot refs, its run id, who registered it and when, its status, whether it was
trusted) moves into ``extra["imported_from"]`` with the source URI and the bundle's SHA-256,
so lineage here never gains an edge to a snapshot or run that does not exist. Trust
decisions are never carried over: they are this workspace's to make.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loopline._version import __version__
from loopline.core.canonical import json_safe
from loopline.core.errors import IntegrityError, InvalidArgumentError, NotFoundError
from loopline.core.models import ModelVersion, NewModelVersion
from loopline.core.names import validate_name
from loopline.registry.flavors import flavor_named
from loopline.registry.holdout import HoldoutRecord
from loopline.registry.metrics import normalise_metrics
from loopline.registry.signatures import Signature

KIND = "loopline.model-version"
FORMAT_VERSION = 1
_PROVENANCE = ("created_at", "created_by", "status", "datasets", "run_id", "trusted_in_source",
               "loopline_version")


def metadata_of(version: ModelVersion, trusted: bool) -> bytes:
    """Return ``metadata.json`` for ``version`` (``trusted``: it has a trust decision here)."""
    record = {
        "format": KIND, "format_version": FORMAT_VERSION, "loopline_version": __version__,
        "uri": version.uri, "name": version.name, "version": version.version,
        "flavor": version.flavor, "artifact_digest": version.artifact_digest,
        "status": str(version.status), "created_at": version.created_at.isoformat(),
        "created_by": version.created_by, "description": version.description,
        "signature": version.signature, "metrics": version.metrics, "params": version.params,
        "tags": version.tags, "datasets": list(version.datasets), "run_id": version.run_id,
        "code_version": version.code_version, "environment": version.environment,
        "extra": version.extra, "trusted_in_source": trusted}
    plain = json.loads(json.dumps(json_safe(_plain(record))))
    return json.dumps(plain, indent=2, sort_keys=True).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def parse_metadata(data: bytes) -> dict[str, Any]:
    """Return the metadata in ``data`` once its format and field types are right.

    Raises:
        IntegrityError: naming ``metadata.json`` when it is malformed.
    """
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != KIND \
                or raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"it is not {KIND} version {FORMAT_VERSION}")
        texts = ("uri", "name", "flavor", "artifact_digest", "status", "created_at",
                 "created_by")
        if not all(isinstance(raw[key], str) for key in texts):
            raise TypeError(f"{', '.join(texts)} must be text")
        if not isinstance(raw["extra"], dict) or not isinstance(raw["datasets"], list):
            raise TypeError("extra must be a mapping and datasets a list")
        holdout = raw["extra"].get("holdout")
        if holdout is not None:
            HoldoutRecord.parse(holdout, raw["flavor"])
    except (ValueError, KeyError, TypeError, InvalidArgumentError) as exc:
        raise IntegrityError(f"member 'metadata.json' is malformed: {exc}") from exc
    return raw


def environment_digest(metadata: Mapping[str, Any]) -> str | None:
    """Return the digest of the environment record the metadata names, if any."""
    environment = metadata.get("environment")
    found = environment.get("artifact") if isinstance(environment, dict) else None
    return found if isinstance(found, str) else None


def reference_digest(metadata: Mapping[str, Any]) -> str | None:
    """Return the digest of the reference profile the metadata names, if any."""
    reference = metadata["extra"].get("reference_profile")
    found = reference.get("digest") if isinstance(reference, dict) else None
    return found if isinstance(found, str) else None


def holdout_digests(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return the digests of the holdout inputs and outputs the metadata names, if any."""
    holdout = metadata["extra"].get("holdout")
    return None if holdout is None else (holdout["inputs"], holdout["outputs"])


def version_from(metadata: Mapping[str, Any], name: str | None,
                 imported_from: Mapping[str, Any]) -> NewModelVersion:
    """Return the version to register from bundle ``metadata``, under ``name`` if given.

    Raises:
        InvalidArgumentError: naming ``name`` when it is not a valid model name.
        IntegrityError: naming ``metadata.json`` when a recorded field is invalid.
    """
    target = validate_name(name, "name") if name is not None else metadata["name"]
    provenance = {key: metadata.get(key) for key in _PROVENANCE}
    extra = {**metadata["extra"],
             "imported_from": {**imported_from, **provenance, "uri": metadata["uri"]}}
    signature = metadata.get("signature")
    try:  # the same checks as a registration's, so an import cannot store what one could not
        flavor_named(metadata["flavor"])
        return NewModelVersion(
            name=target, artifact_digest=metadata["artifact_digest"], flavor=metadata["flavor"],
            signature=None if signature is None else Signature.from_dict(signature).to_dict(),
            metrics=normalise_metrics(metadata.get("metrics")),
            params=metadata.get("params") or {}, tags=metadata.get("tags") or {},
            code_version=metadata.get("code_version"), environment=metadata.get("environment"),
            description=metadata.get("description"), extra=extra)
    except (InvalidArgumentError, NotFoundError) as exc:
        raise IntegrityError(f"member 'metadata.json' holds an invalid record: {exc.message}"
                             ) from exc
