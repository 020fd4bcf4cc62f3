"""Artifacts as the workspace offers them: the blob store, with audit entries and events.

Storing new bytes records ``artifact.put`` in the audit log and an ``artifact.stored`` event;
storing bytes the catalogue already holds changes nothing and records nothing. The blob is
committed before the metadata, so a crash between the two leaves at worst an object not yet
in the catalogue (content-addressed, harmless), never a record pointing at missing bytes;
the next put of the same bytes records it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from loopline.core.artifacts import ObjectInfo, RotationReport, VerifyReport
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ports import Authorizer, BlobStore, authorize_if_wired
from loopline.store import MetadataStore
from loopline.store.artifact_catalog import record_if_new


class ArtifactService:
    """Content-addressed artifacts of one workspace, audited."""

    def __init__(self, blobs: BlobStore, store: MetadataStore, actor: str,
                 authorizer: Authorizer | None = None) -> None:
        self.blobs = blobs
        self._authorizer = authorizer
        self._store = store
        self._actor = actor

    def _allowed(self, permission: Permission = Permission.WRITE,
                 model: str | None = None) -> None:
        authorize_if_wired(self._authorizer, self._actor, permission, model)

    def _record(self, info: ObjectInfo, source: str) -> ObjectInfo:
        # "New" is decided by the catalogue, in the audit's own transaction, not by the blob
        # store: bytes stored by a put whose metadata write failed are recorded on the retry.
        with self._store.write(self._actor) as uow:
            uow.serialise()
            if not record_if_new(uow.session, info.digest, info.size, self._actor,
                                 self._store.clock.now()):
                return replace(info, created=False)
            details = {"size": info.size, "encrypted": info.key_id is not None,
                       "source": source}
            uow.emit(EventType.ARTIFACT_STORED, info.digest, details)
            uow.audit("artifact.put", f"artifact:{info.digest}", None, details)
        return replace(info, created=True)

    def put_bytes(self, data: bytes) -> ObjectInfo:
        """Store ``data`` and return its digest; idempotent."""
        self._allowed()
        return self._record(self.blobs.put_bytes(data), "bytes")

    def put_stream(self, chunks: BinaryIO | Iterable[bytes],
                   model: str | None = None) -> ObjectInfo:
        """Store a stream in bounded memory; idempotent.

        ``model`` names the model the bytes are stored for (a payload of one of its
        versions): the actor then needs ``write`` on that model only, not on every model.

        Raises:
            AccessDeniedError: when roles are enforced and the actor may not write (to
                ``model``, when named).
        """
        self._allowed(model=model)
        return self._record(self.blobs.put_stream(chunks), "stream")

    def put_file(self, path: str | Path) -> ObjectInfo:
        """Store the file at ``path``; idempotent."""
        self._allowed()
        return self._record(self.blobs.put_file(path), Path(path).name)

    def open(self, digest: str) -> AbstractContextManager[BinaryIO]:
        """Open a verifying reader for ``digest``."""
        return self.blobs.open(digest)

    def get_bytes(self, digest: str) -> bytes:
        """Return the verified bytes of ``digest``."""
        return self.blobs.get_bytes(digest)

    def get_to_file(self, digest: str, dest: str | Path) -> ObjectInfo:
        """Write the verified bytes of ``digest`` to ``dest`` atomically."""
        return self.blobs.get_to_file(digest, dest)

    def exists(self, digest: str) -> bool:
        """Tell whether ``digest`` is stored."""
        return self.blobs.exists(digest)

    def info(self, digest: str) -> ObjectInfo:
        """Describe a stored object."""
        return self.blobs.info(digest)

    def list(self) -> Iterator[ObjectInfo]:
        """List every stored object."""
        return self.blobs.iter_objects()

    def verify(self, digests: Iterable[str] | None = None) -> VerifyReport:
        """Recheck objects against their digests (read-only, not audited)."""
        return self.blobs.verify(digests)

    def rotate_key(self) -> RotationReport:
        """Re-encrypt every object under the active key, and audit the rotation.

        Raises:
            AccessDeniedError: when roles are enforced and the actor is not an admin.
        """
        self._allowed(Permission.ADMIN)
        report = self.blobs.rotate_key()
        self._record_rotation(report)
        return report

    def _record_rotation(self, report: RotationReport) -> None:
        with self._store.write(self._actor) as uow:
            details = {"rewritten": report.rewritten, "already_current": report.already_current,
                       "active_key_id": report.active_key_id,
                       "failed": [f"{p.digest}: {p.reason}" for p in report.failed][:20]}
            uow.emit(EventType.ARTIFACT_KEY_ROTATED, "artifacts", details)
            uow.audit("artifact.rotate_key", "artifacts", None, details)
