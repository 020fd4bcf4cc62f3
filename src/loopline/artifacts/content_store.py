"""The content-addressed artifact store: objects named by the SHA-256 of their plaintext.

Rule: a digest becomes visible only when its bytes are complete, synced and hashed by this
code (never a digest claimed by a caller); every read re-verifies the hash. Objects are
optionally encrypted at rest (``crypto.py``) under the keyring's active key.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from loopline.artifacts.crypto import (
    MAX_CHUNK_SIZE,
    decrypt_stream,
    encrypt_stream,
    plaintext_size,
    read_header,
)
from loopline.artifacts.fsspec_storage import FsspecStorage
from loopline.artifacts.keys import ENV_VAR, Keyring
from loopline.artifacts.layout import OBJECTS, ObjectKey, object_key, parse_object_key
from loopline.artifacts.local import LocalStorage, fsync_dir
from loopline.artifacts.storage import ByteStorage, TempFile, open_storage
from loopline.artifacts.streams import VerifyingReader, iter_source, rechunk, slices
from loopline.core.artifacts import ObjectInfo, ObjectProblem, RotationReport, VerifyReport
from loopline.core.canonical import is_digest
from loopline.core.errors import (
    BackendError,
    ConfigurationError,
    IntegrityError,
    InvalidArgumentError,
    LooplineError,
    NotFoundError,
)

DEFAULT_CHUNK_SIZE = 1 << 20


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not is_digest(digest):
        raise InvalidArgumentError("digest", f"{digest!r} is not a lowercase 64-hex SHA-256")
    return digest


def _fs_modified(storage: FsspecStorage, name: str) -> datetime | None:
    # The filesystem is the storage's own; only this package reaches it.
    fs = storage._fs
    try:
        value = fs.modified(storage._path(name))
    except (NotImplementedError, AttributeError):
        return None  # the filesystem keeps no modification times
    if not isinstance(value, datetime):
        return None
    return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)


class ContentAddressedStore:
    """Content-addressed, verified, optionally encrypted bytes on a :class:`ByteStorage`.

    Satisfies ``loopline.core.ports.BlobStore``.
    """

    def __init__(
        self,
        storage: ByteStorage,
        keyring: Keyring | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        sweep_on_open: bool = True,
    ) -> None:
        """Wrap ``storage``; encrypt new objects when ``keyring`` is given.

        ``sweep_on_open`` removes temporary debris of dead writers (see :meth:`sweep_debris`).

        Raises:
            InvalidArgumentError: ``chunk_size`` is not in 1 .. 64 MiB.
            BackendError: the sweep failed.
        """
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidArgumentError("chunk_size", f"must be in 1..{MAX_CHUNK_SIZE}")
        self._storage = storage
        self._keyring = keyring
        self._chunk_size = chunk_size
        if sweep_on_open:
            self.sweep_debris()

    @classmethod
    def from_url(
        cls,
        url_or_path: str | Path,
        keyring: Keyring | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        sweep_on_open: bool = True,
    ) -> ContentAddressedStore:
        """Open the store rooted at a local path, ``file://`` or any fsspec URL.

        Raises:
            ConfigurationError: the URL cannot be opened (see ``open_storage``).
            BackendError: the root cannot be created or swept.
        """
        return cls(open_storage(url_or_path), keyring, chunk_size, sweep_on_open)

    @property
    def storage(self) -> ByteStorage:
        """The byte storage underneath."""
        return self._storage

    @property
    def keyring(self) -> Keyring | None:
        """The keyring, or None when objects are stored plain."""
        return self._keyring

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> ObjectInfo:
        """Store ``data``; idempotent (``created`` is False when it was already stored).

        Raises:
            BackendError: the storage failed; nothing becomes visible.
        """
        return self._put(slices(bytes(data), self._chunk_size))

    def put_stream(self, chunks: BinaryIO | Iterable[bytes]) -> ObjectInfo:
        """Store a binary file or an iterable of bytes in bounded memory; idempotent.

        Raises:
            InvalidArgumentError: the iterable yields something other than bytes.
            BackendError: the storage failed; nothing becomes visible.
        """
        return self._put(iter_source(chunks, self._chunk_size))

    def put_file(self, path: str | Path) -> ObjectInfo:
        """Store the file at ``path`` in bounded memory; idempotent.

        Raises:
            NotFoundError: there is no file at ``path``.
            BackendError: the file or the storage cannot be read or written.
        """
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                # A FIFO would block forever and a folder cannot be one object.
                raise InvalidArgumentError("path", f"{str(path)!r} is not a regular file")
            source = open(path, "rb")  # noqa: SIM115 - closed below; errors are mapped first
        except FileNotFoundError as exc:
            raise NotFoundError("file", str(path)) from exc
        except OSError as exc:
            raise BackendError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
        with source:
            return self._put(iter_source(source, self._chunk_size))

    def _put(self, pieces: Iterable[bytes]) -> ObjectInfo:
        temp, digest, size = self._write_temp(pieces)
        committed = False
        try:
            existing = self._locate(digest)
            if existing is None:
                kid = None if self._keyring is None else self._keyring.active_id
                self._storage.commit(temp, object_key(digest, encrypted=kid is not None))
                committed = True
                return ObjectInfo(digest, size, kid, created=True)
        finally:
            if not committed:
                self._storage.discard(temp)
        self._touch(existing)
        return replace(self._info_at(existing), created=False)

    def _touch(self, key: ObjectKey) -> None:
        """Make a local object's modification time say it was just put again.

        Retention deletes unreferenced objects by age; an old orphan that a registration is
        about to name again must look new, or a concurrent retention run may delete it
        between this put and the record naming it. fsspec stores keep the first write's time
        (object stores cannot touch an object without rewriting it); there retention's
        re-check after its commit, which keeps any blob a record names by then, is the guard.
        """
        if isinstance(self._storage, LocalStorage):
            path = os.path.join(self._storage.url, object_key(key.digest, key.encrypted))
            with suppress(OSError):  # best effort: the put itself succeeded
                os.utime(path)

    def _write_temp(self, pieces: Iterable[bytes]) -> tuple[TempFile, str, int]:
        """Write ``pieces`` (encrypted when a keyring is set) to a temp; return it, digest, size."""
        hasher = hashlib.sha256()
        size = 0

        def hashed() -> Iterator[bytes]:
            nonlocal size
            for piece in rechunk(pieces, self._chunk_size):
                hasher.update(piece)
                size += len(piece)
                yield piece

        blocks: Iterator[bytes] = hashed()
        if self._keyring is not None:
            keyring = self._keyring
            blocks = encrypt_stream(keyring.active_key, keyring.active_id, blocks, self._chunk_size)
        temp = self._storage.open_temp()
        try:
            for block in blocks:
                temp.file.write(block)
        except BaseException:
            self._storage.discard(temp)
            raise
        return temp, hasher.hexdigest(), size

    # -- reading ---------------------------------------------------------------------------

    def _keys_of(self, digest: str) -> list[ObjectKey]:
        """Return the stored forms of ``digest``, plain first."""
        _check_digest(digest)
        found = [ObjectKey(digest, encrypted) for encrypted in (False, True)]
        return [key for key in found if self._storage.exists(object_key(digest, key.encrypted))]

    def _locate(self, digest: str) -> ObjectKey | None:
        # Plain first: both forms are complete and valid (rotation leaves both for a moment),
        # and the plain one needs no key.
        keys = self._keys_of(digest)
        return keys[0] if keys else None

    def _require(self, digest: str) -> ObjectKey:
        found = self._locate(digest)
        if found is None:
            raise NotFoundError("artifact", digest)
        return found

    def _decryption_key(self, kid: str, digest: str) -> bytes:
        if self._keyring is None:
            raise ConfigurationError(
                f"artifact {digest} is encrypted under key id {kid} but no encryption key is "
                f"configured; set {ENV_VAR} or the key file"
            )
        try:
            return self._keyring.key_for(kid)
        except ConfigurationError as exc:
            raise ConfigurationError(f"cannot decrypt artifact {digest}: {exc.message}") from exc

    def _plaintext(self, raw: BinaryIO, key: ObjectKey) -> Iterator[bytes]:
        if not key.encrypted:
            return iter(lambda: raw.read(self._chunk_size), b"")
        try:
            header = read_header(raw)
        except IntegrityError as exc:
            raise IntegrityError(f"artifact {key.digest} is corrupt: {exc.message}") from exc
        secret = self._decryption_key(header.key_id, key.digest)
        return decrypt_stream(secret, header, raw)

    @contextmanager
    def _open_key(self, key: ObjectKey) -> Iterator[BinaryIO]:
        raw = self._storage.open_read(object_key(key.digest, key.encrypted))
        try:
            chunks = self._plaintext(raw, key)
            with io.BufferedReader(VerifyingReader(key.digest, chunks), self._chunk_size) as out:
                yield out
        finally:
            raw.close()

    @contextmanager
    def open(self, digest: str) -> Iterator[BinaryIO]:
        """Open a binary reader of ``digest`` that verifies the SHA-256 as it streams.

        Raises:
            InvalidArgumentError: ``digest`` is not a SHA-256 hex digest.
            NotFoundError: nothing is stored under ``digest``.
            ConfigurationError: the object is encrypted under a key the keyring lacks.
            IntegrityError: (from ``read``) the bytes do not match, at the latest at EOF.
        """
        with self._open_key(self._require(digest)) as reader:
            yield reader

    def get_bytes(self, digest: str) -> bytes:
        """Return the verified bytes of ``digest`` (raises as :meth:`open`)."""
        with self.open(digest) as reader:
            return reader.read()

    def get_to_file(self, digest: str, dest: str | Path) -> ObjectInfo:
        """Write the verified bytes of ``digest`` to ``dest`` atomically (temp sibling + rename).

        Nothing appears at ``dest`` unless every byte matched.

        Raises:
            As :meth:`open`; BackendError when ``dest`` cannot be written.
        """
        key = self._require(digest)
        target = Path(dest)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with self._open_key(key) as reader, open(temp, "xb") as out:
                shutil.copyfileobj(reader, out, self._chunk_size)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
            fsync_dir(str(target.parent))
        except OSError as exc:
            raise BackendError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
        finally:
            with suppress(FileNotFoundError):
                temp.unlink()
        return self._info_at(key)

    def exists(self, digest: str) -> bool:
        """Tell whether ``digest`` is stored, plain or encrypted.

        Raises:
            InvalidArgumentError: ``digest`` is not a SHA-256 hex digest.
        """
        return self._locate(digest) is not None

    def info(self, digest: str) -> ObjectInfo:
        """Describe ``digest`` (plaintext size, key id) reading at most the header.

        Raises:
            InvalidArgumentError, NotFoundError: as :meth:`open`.
            IntegrityError: an encrypted object's header is damaged.
        """
        return self._info_at(self._require(digest))

    def modified(self, digest: str) -> datetime | None:
        """Return when ``digest`` was last put (written, or put again locally); None if unknown.

        Local storage reports the object file's modification time; an fsspec filesystem is
        asked with ``fs.modified`` when it implements it. None when the storage cannot tell.

        Raises:
            InvalidArgumentError: ``digest`` is not a 64-hex SHA-256.
            NotFoundError: no object has that digest.
        """
        name = object_key(digest, self._require(digest).encrypted)
        try:
            if isinstance(self._storage, LocalStorage):
                path = os.path.join(self._storage.url, name)
                seconds = os.stat(path, follow_symlinks=False).st_mtime
                return datetime.fromtimestamp(seconds, UTC)
            if isinstance(self._storage, FsspecStorage):
                return _fs_modified(self._storage, name)
        except OSError:
            return None
        return None

    def _info_at(self, key: ObjectKey) -> ObjectInfo:
        name = object_key(key.digest, key.encrypted)
        stored = self._storage.size(name)
        if not key.encrypted:
            return ObjectInfo(key.digest, stored)
        with self._storage.open_read(name) as raw:
            try:
                header = read_header(raw)
            except IntegrityError as exc:
                raise IntegrityError(f"artifact {key.digest} is corrupt: {exc.message}") from exc
        return ObjectInfo(key.digest, plaintext_size(stored, header.chunk_size), header.key_id)

    def _stored_keys(self) -> Iterator[ObjectKey]:
        for name in self._storage.list(OBJECTS):
            parsed = parse_object_key(name)
            if parsed is not None:
                yield parsed

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Yield one record per stored digest, in digest order."""
        seen: set[str] = set()
        for key in self._stored_keys():
            if key.digest not in seen:
                seen.add(key.digest)
                yield self._info_at(key)

    # -- maintenance -----------------------------------------------------------------------

    def verify(self, digests: Iterable[str] | None = None) -> VerifyReport:
        """Re-read and re-hash the named objects (every stored form; all when None).

        A bad object is reported, never raised: missing, corrupt, undecryptable or escaping.

        Raises:
            InvalidArgumentError: a given digest is not a SHA-256 hex digest.
        """
        names = None if digests is None else [_check_digest(d) for d in digests]
        checked = bytes_checked = 0
        problems: list[ObjectProblem] = []
        for digest, key, problem in self._verify_targets(names):
            if key is not None:
                checked += 1
                try:
                    bytes_checked += self._drain(key)
                    continue
                except (LooplineError, OSError) as exc:
                    problem = f"{object_key(digest, key.encrypted)}: {exc}"
            problems.append(ObjectProblem(digest, problem))
        return VerifyReport(checked, bytes_checked, tuple(problems))

    def _verify_targets(
        self,
        digests: list[str] | None,
    ) -> Iterator[tuple[str, ObjectKey | None, str]]:
        if digests is None:
            for key in self._stored_keys():
                yield key.digest, key, ""
            return
        for digest in digests:
            try:
                keys = self._keys_of(digest)
            except LooplineError as exc:
                yield digest, None, str(exc)
                continue
            if not keys:
                yield digest, None, "missing"
            for key in keys:
                yield digest, key, ""

    def _drain(self, key: ObjectKey) -> int:
        total = 0
        with self._open_key(key) as reader:
            while piece := reader.read(self._chunk_size):
                total += len(piece)
        return total

    def delete(self, digest: str) -> None:
        """Remove every stored form of ``digest``.

        Raises:
            InvalidArgumentError: ``digest`` is not a SHA-256 hex digest.
            NotFoundError: nothing is stored under ``digest``.
        """
        keys = self._keys_of(digest)
        if not keys:
            raise NotFoundError("artifact", digest)
        for key in keys:
            self._storage.delete(object_key(key.digest, key.encrypted))

    def sweep_debris(self, now: float | None = None) -> int:
        """Delete temp files of dead writers on this host and any older than 24 h; return count.

        ``now`` (POSIX seconds) replaces the wall clock, for tests.
        """
        return self._storage.sweep_temp(now)

    def rotate_key(self) -> RotationReport:
        """Re-encrypt, object by object, every object not under the active key (plain included).

        Each object is decrypted and re-hashed while it is re-encrypted into a temp, committed
        atomically, and only then is a plain copy removed. Safe to re-run after a crash.

        An object that cannot be re-encrypted (corrupt, or under a key the keyring lacks) is
        left as it was and listed in ``failed``; the others are still rotated.

        Raises:
            ConfigurationError: no keyring.
        """
        if self._keyring is None:
            raise ConfigurationError(
                f"rotating keys needs an encryption key; set {ENV_VAR} or the key file"
            )
        active = self._keyring.active_id
        rewritten: set[str] = set()
        failed: list[ObjectProblem] = []
        current = 0
        for key in list(self._stored_keys()):
            if key.digest in rewritten:
                continue
            try:
                if key.encrypted and self._info_at(key).key_id == active:
                    current += 1
                    continue
                self._reencrypt(key)
            except (LooplineError, OSError) as exc:
                failed.append(ObjectProblem(key.digest, str(exc)))
                continue
            rewritten.add(key.digest)
        return RotationReport(len(rewritten), current, active, tuple(failed))

    def _reencrypt(self, key: ObjectKey) -> None:
        with self._open_key(key) as reader:
            temp, digest, _ = self._write_temp(iter(lambda: reader.read(self._chunk_size), b""))
        if digest != key.digest:  # the verifying reader already refused; belt and braces
            self._storage.discard(temp)
            raise IntegrityError(f"artifact {key.digest} re-hashed to {digest} during rotation")
        self._storage.commit(temp, object_key(key.digest, encrypted=True))
        if not key.encrypted:
            self._storage.delete(object_key(key.digest, encrypted=False))
