"""Exporting a model version as one bundle file (``bundle_format``), written atomically.

Every member is read through the verifying content store, so a bundle is only ever made of
bytes that match their digests; blobs are streamed into the zip, never held whole. The file
is written under a temporary name beside the target, sealed, fsynced and linked into place
(an existing file is never replaced), then the folder is fsynced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from loopline.core.errors import AlreadyExistsError, IntegrityError, NotFoundError
from loopline.core.models import ModelVersion
from loopline.core.ports import BlobStore
from loopline.registry.bundle_format import (
    ARTIFACT,
    ENVIRONMENT,
    ENVIRONMENT_ROLE,
    INPUTS,
    INPUTS_ROLE,
    MANIFEST,
    METADATA,
    METADATA_ROLE,
    OUTPUTS,
    OUTPUTS_ROLE,
    REFERENCE,
    REFERENCE_ROLE,
    BundleLimits,
    ManifestEntry,
    artifact_name,
    manifest_bytes,
)
from loopline.registry.bundle_metadata import metadata_of
from loopline.registry.bundle_seal import seal
from loopline.registry.holdout import HoldoutRecord

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ExportedBundle:
    """A bundle written: where, of which version, its SHA-256 and size, and its members."""

    path: str
    source: str
    sha256: str
    size: int
    members: tuple[ManifestEntry, ...]


def _info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the mode below reads as a regular file everywhere
    info.external_attr = (0o100644 << 16)
    info.file_size = size
    return info


def _blob_members(version: ModelVersion) -> list[tuple[str, str, str]]:
    """Return (name, role, digest) of every stored member of the version's bundle."""
    found = [(artifact_name(version.flavor), ARTIFACT, version.artifact_digest)]
    environment = (version.environment or {}).get("artifact")
    if isinstance(environment, str):
        found.append((ENVIRONMENT, ENVIRONMENT_ROLE, environment))
    if version.extra.get("holdout") is not None:
        record = HoldoutRecord.of(version)
        found += [(INPUTS, INPUTS_ROLE, record.inputs), (OUTPUTS, OUTPUTS_ROLE, record.outputs)]
    reference = version.extra.get("reference_profile")
    if isinstance(reference, dict) and isinstance(reference.get("digest"), str):
        found.append((REFERENCE, REFERENCE_ROLE, reference["digest"]))
    return found


def _write_blob(archive: zipfile.ZipFile, blobs: BlobStore, member: tuple[str, str, str],
                uri: str) -> ManifestEntry:
    name, role, digest = member
    try:
        size = blobs.info(digest).size
        with blobs.open(digest) as source, archive.open(_info(name, size), "w") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)
    except (IntegrityError, NotFoundError) as exc:
        raise IntegrityError(f"{uri} cannot be exported: its {role} (sha256 {digest}) cannot "
                             f"be read: {exc.message}") from exc
    return ManifestEntry(name, role, digest, size)


def _write_bytes(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    archive.writestr(_info(name, len(data)), data)


def _publish(temp: Path, target: Path) -> None:
    """Link ``temp`` to ``target`` without replacing a file there; fsync the folder."""
    try:
        os.link(temp, target)
    except FileExistsError as exc:
        raise AlreadyExistsError("file", str(target)) from exc
    except OSError:  # a filesystem without hard links: check, then rename (a small race)
        if target.exists() or target.is_symlink():
            raise AlreadyExistsError("file", str(target)) from None
        os.replace(temp, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_bundle(blobs: BlobStore, version: ModelVersion, trusted: bool, path: Path,
                 limits: BundleLimits | None = None) -> ExportedBundle:
    """Write ``version`` as a bundle at ``path`` (a new file); return what was written.

    Raises:
        AlreadyExistsError: when something exists at ``path``.
        NotFoundError: when the folder of ``path`` does not exist.
        IntegrityError: naming the version when a stored member is missing or altered, or
            the bundle would be larger than ``limits`` allow an import to read.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise AlreadyExistsError("file", str(target))
    if not target.parent.is_dir():
        raise NotFoundError("folder", str(target.parent), "create it first")
    bound = (limits or BundleLimits()).max_total_bytes
    handle, name = tempfile.mkstemp(prefix=".loopline-bundle-", suffix=".tmp", dir=target.parent)
    temp = Path(name)
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            entries = [_write_blob(archive, blobs, member, version.uri)
                       for member in _blob_members(version)]
            metadata = metadata_of(version, trusted)
            entries.append(ManifestEntry(METADATA, METADATA_ROLE,
                                         hashlib.sha256(metadata).hexdigest(), len(metadata)))
            _write_bytes(archive, METADATA, metadata)
            _write_bytes(archive, MANIFEST, manifest_bytes(version.uri, entries))
        if sum(entry.size for entry in entries) > bound:
            raise IntegrityError(f"{version.uri} is too large to bundle: its members exceed "
                                 f"{bound} bytes")
        seal(temp)
        _publish(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    with target.open("rb") as done:
        digest = hashlib.file_digest(done, "sha256").hexdigest()
    return ExportedBundle(str(target), version.uri, digest, target.stat().st_size,
                          tuple(entries))
