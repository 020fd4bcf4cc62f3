"""Opening a bundle for import: every check passes before anything is written to a workspace.

``open_bundle`` checks, in order, and stops at the first problem with an ``IntegrityError``
naming the member (or part of the file) at fault:

1. the seal: every region of the file hashes as sealed (``bundle_seal``), so a changed byte
   anywhere is found;
2. the zip directory: member count, names, types, declared sizes and ratios
   (``bundle_members``), before a byte is decompressed;
3. the manifest: well-formed, listing exactly the other members;
4. each member, extracted in bounded chunks to a private temporary folder under a name of
   loopline's choosing, against the manifest's SHA-256 and size;
5. the metadata: well-formed, and naming the same digests as the artifact, environment and
   holdout members.

Only then may the caller store the members (``payloads``, each checked by digest again as
it is stored) and register the version (``version_from``); the temporary folder is removed
when the context ends.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.errors import IntegrityError
from loopline.core.models import ModelVersion, NewModelVersion
from loopline.registry.bundle_format import (
    ARTIFACT,
    ENVIRONMENT_ROLE,
    INPUTS_ROLE,
    MANIFEST,
    METADATA_ROLE,
    OUTPUTS_ROLE,
    REFERENCE_ROLE,
    BundleLimits,
    ManifestEntry,
    parse_manifest,
)
from loopline.registry.bundle_members import check_members, extract
from loopline.registry.bundle_metadata import (
    environment_digest,
    holdout_digests,
    parse_metadata,
    reference_digest,
    version_from,
)
from loopline.registry.bundle_seal import check_seal
from loopline.registry.registration import Payload

TRUST_NOTE = "trust decisions are not carried over: this workspace makes its own"


@dataclass(frozen=True, slots=True)
class ImportedVersion:
    """A version registered from a bundle, where it came from, and what to do next."""

    version: ModelVersion
    source: str
    bundle_sha256: str
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OpenedBundle:
    """A bundle whose every check passed, its members extracted to a temporary folder."""

    path: Path
    sha256: str
    source: str
    metadata: dict[str, Any]
    members: dict[str, tuple[ManifestEntry, Path]]  # by role

    def new_version(self, name: str | None = None) -> NewModelVersion:
        """Return the version to register, named ``name`` or as in the source.

        Raises:
            InvalidArgumentError: naming ``name`` when it is not a valid model name.
            IntegrityError: naming ``metadata.json`` when a recorded field is invalid.
        """
        return version_from(self.metadata, name, {"bundle_sha256": self.sha256})

    def payloads(self) -> tuple[Payload, ...]:
        """Return the members to store in the artifact store (all but the metadata)."""
        return tuple(Payload(entry.sha256, f"bundle member {entry.name!r}", path=path)
                     for role, (entry, path) in self.members.items() if role != METADATA_ROLE)

    def imported(self, version: ModelVersion) -> ImportedVersion:
        """Return the outcome of registering ``version`` from this bundle, with notes."""
        notes = [TRUST_NOTE]
        if version.flavor == "python" or self.metadata.get("trusted_in_source"):
            notes.append(f"{version.uri} needs a new trust decision before it loads or "
                         f"verifies here: loopline models trust {version.uri} --reason ...")
        if INPUTS_ROLE not in self.members:
            notes.append(f"the bundle holds no holdout sample, so {version.uri} cannot be "
                         "verified; register it with input_example= where it was trained")
        return ImportedVersion(version, self.source, self.sha256, tuple(notes))


def _read_manifest(archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo],
                   folder: Path, limits: BundleLimits) -> tuple[str, list[ManifestEntry]]:
    if MANIFEST not in infos:
        raise IntegrityError(f"the bundle has no {MANIFEST!r}")
    path = folder / "manifest"
    extract(archive, infos[MANIFEST], path, limits.max_json_bytes)
    source, entries = parse_manifest(path.read_bytes(), limits)
    listed = {entry.name for entry in entries} | {MANIFEST}
    for name in sorted(set(infos) ^ listed):
        where = "is not listed in" if name in infos else "is listed in but missing from"
        raise IntegrityError(f"member {name!r} {where} the manifest")
    return source, entries


def _extract_all(archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo],
                 entries: list[ManifestEntry], folder: Path, limits: BundleLimits
                 ) -> dict[str, tuple[ManifestEntry, Path]]:
    found: dict[str, tuple[ManifestEntry, Path]] = {}
    for index, entry in enumerate(entries):
        limit = limits.max_json_bytes if entry.role == METADATA_ROLE else limits.max_member_bytes
        dest = folder / f"member-{index}"  # never the member's own name
        digest, size = extract(archive, infos[entry.name], dest, limit)
        if (digest, size) != (entry.sha256, entry.size):
            raise IntegrityError(f"member {entry.name!r} does not match the manifest: sha256 "
                                 f"{digest} and {size} bytes, listed as {entry.sha256} and "
                                 f"{entry.size}")
        found[entry.role] = (entry, dest)
    return found


def _cross_check(metadata: dict[str, Any], members: dict[str, tuple[ManifestEntry, Path]]
                 ) -> None:
    """Refuse metadata naming other bytes than the bundle holds."""
    holdout = holdout_digests(metadata)
    expected = {ARTIFACT: metadata["artifact_digest"],
                ENVIRONMENT_ROLE: environment_digest(metadata),
                INPUTS_ROLE: holdout[0] if holdout else None,
                OUTPUTS_ROLE: holdout[1] if holdout else None,
                REFERENCE_ROLE: reference_digest(metadata)}
    for role, digest in expected.items():
        held = members.get(role)
        if held is None and digest is None:
            continue
        if held is None or held[0].sha256 != digest:
            name = held[0].name if held is not None else f"the {role} member"
            raise IntegrityError(f"member 'metadata.json' names {role} sha256 {digest}, but "
                                 f"{name} is {held[0].sha256 if held else 'missing'}")


@contextmanager
def open_bundle(path: Path, limits: BundleLimits | None = None) -> Iterator[OpenedBundle]:
    """Check the bundle at ``path`` (see the module doc) and yield it, extracted.

    Raises:
        IntegrityError: naming the member or part of the file at fault; nothing is written
            anywhere but a private temporary folder, removed on exit.
        ConfigurationError: when the bundle is a newer format than this loopline reads.
    """
    bounds = limits or BundleLimits()
    sha256 = check_seal(path, bounds.max_total_bytes)
    with tempfile.TemporaryDirectory(prefix="loopline-import-") as temp:
        folder = Path(temp)
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise IntegrityError(f"{path.name} is not a readable zip: {exc}") from exc
        with archive:
            infos = check_members(archive.infolist(), bounds)
            source, entries = _read_manifest(archive, infos, folder, bounds)
            members = _extract_all(archive, infos, entries, folder, bounds)
        metadata = parse_metadata(members[METADATA_ROLE][1].read_bytes())
        _cross_check(metadata, members)
        yield OpenedBundle(path, sha256, source, metadata, members)
