"""The model bundle format: one zip file, its members, its manifest and the limits on reading.

A bundle (``loopline models export``) holds one model version::

    manifest.json             format, source URI, and each other member's role, SHA-256, size
    metadata.json             the version: name, number, flavor, signature, metrics, params,
                              tags, dataset refs, run, code version, environment summary, extra
    artifact.skops|onnx|pkl   the model artifact, byte for byte
    environment.json          the full environment record (interpreter, every package)
    holdout/inputs.parquet    the holdout sample    (when the version recorded one)
    holdout/outputs.parquet   the recorded outputs  (idem)
    reference/profile.json    the training data's reference profile (when one was recorded)

Members are deflated, dated 1980-01-01 and written in this order, so a version exports to
the same bytes on the same zlib. The zip comment is the seal (``bundle_seal``), which finds
and names any changed byte. Every refusal of a bundle is an ``IntegrityError`` naming the
member (or the part of the file) at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loopline.core.canonical import is_digest
from loopline.core.errors import ConfigurationError, IntegrityError

FORMAT = "loopline.model-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "metadata.json"
ENVIRONMENT = "environment.json"
INPUTS = "holdout/inputs.parquet"
OUTPUTS = "holdout/outputs.parquet"
ARTIFACT, METADATA_ROLE, ENVIRONMENT_ROLE = "artifact", "metadata", "environment"
REFERENCE = "reference/profile.json"
INPUTS_ROLE, OUTPUTS_ROLE = "holdout-inputs", "holdout-outputs"
REFERENCE_ROLE = "reference-profile"
ROLES = (ARTIFACT, METADATA_ROLE, ENVIRONMENT_ROLE, INPUTS_ROLE, OUTPUTS_ROLE, REFERENCE_ROLE)
REQUIRED_ROLES = frozenset({ARTIFACT, METADATA_ROLE})
EXTENSIONS = {"sklearn": "skops", "onnx": "onnx", "python": "pkl"}


def artifact_name(flavor: str) -> str:
    """Return the artifact member's name for ``flavor`` (``artifact.skops``, say)."""
    return f"artifact.{EXTENSIONS.get(flavor, 'bin')}"


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """Bounds on reading a bundle, checked before anything is decompressed or allocated.

    ``max_ratio`` bounds a member's size over its compressed size (a zip bomb's is in the
    hundreds or thousands); members under ``ratio_allowance`` bytes are exempt.
    """

    max_members: int = 16
    max_member_bytes: int = 1 << 30
    max_total_bytes: int = 2 << 30
    max_json_bytes: int = 16 << 20
    max_ratio: int = 200
    ratio_allowance: int = 1 << 20


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One member as the manifest lists it."""

    name: str
    role: str
    sha256: str
    size: int


def manifest_bytes(source: str, entries: list[ManifestEntry]) -> bytes:
    """Return the manifest of a bundle of version ``source`` holding ``entries``."""
    listed = [{"name": e.name, "role": e.role, "sha256": e.sha256, "size": e.size}
              for e in entries]
    return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "source": source,
                       "members": listed}, indent=2, sort_keys=True).encode("utf-8")


def _entry(raw: Any, limits: BundleLimits) -> ManifestEntry:
    if not isinstance(raw, dict) or set(raw) != {"name", "role", "sha256", "size"}:
        raise ValueError("an entry must have exactly name, role, sha256 and size")
    name, role, digest, size = raw["name"], raw["role"], raw["sha256"], raw["size"]
    if not isinstance(name, str) or role not in ROLES:
        raise ValueError(f"entry {name!r} has an unknown role {role!r}")
    if not isinstance(digest, str) or not is_digest(digest):
        raise ValueError(f"entry {name!r} has no SHA-256")
    if isinstance(size, bool) or not isinstance(size, int) \
            or not 0 <= size <= limits.max_member_bytes:
        raise ValueError(f"entry {name!r} has a size outside 0..{limits.max_member_bytes}")
    return ManifestEntry(name, role, digest, size)


def parse_manifest(data: bytes, limits: BundleLimits) -> tuple[str, list[ManifestEntry]]:
    """Return the source URI and the entries of a manifest, each role at most once.

    Raises:
        IntegrityError: naming ``manifest.json`` when it is malformed or lacks a role.
        ConfigurationError: when it is a newer format version than this loopline reads.
    """
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"it is not a {FORMAT} manifest")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ConfigurationError(f"the bundle is format version {raw.get('format_version')!r}"
                                     f"; this loopline reads version {FORMAT_VERSION}: upgrade "
                                     "loopline to import it")
        members = raw["members"]
        if not isinstance(members, list) or len(members) > limits.max_members \
                or not isinstance(raw["source"], str):
            raise ValueError("members must be a list within the member limit, source a text")
        entries = [_entry(member, limits) for member in members]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"member {MANIFEST!r} is malformed: {exc}") from exc
    roles = [e.role for e in entries]
    names = [e.name for e in entries]
    missing = sorted(REQUIRED_ROLES - set(roles))
    if missing or len(set(roles)) != len(roles) or len(set(names)) != len(names) \
            or MANIFEST in names:
        raise IntegrityError(f"member {MANIFEST!r} lists roles {roles}: each role at most once, "
                             f"an artifact and metadata always, and names once")
    return raw["source"], entries
