"""Streams in bounded memory: chunking what callers put, and the reader that verifies on EOF."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from loopline.core.errors import IntegrityError, InvalidArgumentError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def _as_bytes(piece: object) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, bytearray | memoryview):
        return bytes(piece)
    raise InvalidArgumentError("chunks", f"yielded {type(piece).__name__}; expected bytes")


def iter_source(source: BinaryIO | Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """Yield the bytes of a binary file (read ``chunk_size`` at a time) or of an iterable.

    Raises:
        InvalidArgumentError: the source yields something other than bytes.
    """
    read = getattr(source, "read", None)
    if callable(read):
        while piece := read(chunk_size):
            yield _as_bytes(piece)
        return
    for item in source:
        yield _as_bytes(item)


def rechunk(pieces: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """Yield ``chunk_size`` pieces (the last may be shorter; none empty), holding one at most."""
    buffer = bytearray()
    for piece in pieces:
        if not buffer and len(piece) == chunk_size:
            yield piece
            continue
        buffer += piece
        while len(buffer) >= chunk_size:
            yield bytes(buffer[:chunk_size])
            del buffer[:chunk_size]
    if buffer:
        yield bytes(buffer)


def slices(data: bytes, chunk_size: int) -> Iterator[bytes]:
    """Yield ``data`` in ``chunk_size`` slices."""
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


class VerifyingReader(io.RawIOBase):
    """A raw reader over plaintext chunks that hashes as it goes and checks the digest at EOF.

    Reading raises ``IntegrityError`` naming the digest when the stream ends with another
    SHA-256, or when the chunk source reports corruption; every later read raises again.
    """

    def __init__(self, digest: str, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._digest = digest
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self._buffer = b""
        self._offset = 0
        self._done = False
        self._failure: IntegrityError | None = None

    def readable(self) -> bool:
        """Return True: this stream can be read."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` with the next verified-so-far bytes; 0 at a verified end.

        Raises:
            IntegrityError: the content does not match the digest.
        """
        if self._failure is not None:
            raise IntegrityError(self._failure.message) from self._failure
        if not self._fill():
            return 0
        with memoryview(buffer) as view, view.cast("B") as target:
            count = min(len(target), len(self._buffer) - self._offset)
            target[:count] = self._buffer[self._offset : self._offset + count]
        self._offset += count
        return count

    def _fill(self) -> bool:
        while self._offset >= len(self._buffer):
            if self._done:
                return False
            try:
                piece = next(self._chunks)
            except StopIteration:
                self._done = True
                self._check()
                return False
            except IntegrityError as exc:
                self._fail(f"artifact {self._digest} is corrupt: {exc.message}", exc)
            self._hash.update(piece)
            self._buffer, self._offset = piece, 0
        return True

    def _check(self) -> None:
        actual = self._hash.hexdigest()
        if actual != self._digest:
            self._fail(
                f"artifact {self._digest} is corrupt: expected sha256 {self._digest}, "
                f"read bytes with sha256 {actual}",
                None,
            )

    def _fail(self, message: str, cause: IntegrityError | None) -> NoReturn:
        self._failure = IntegrityError(message)
        raise self._failure from cause
