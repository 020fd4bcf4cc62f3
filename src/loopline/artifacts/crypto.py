"""Chunked, streaming AES-256-GCM encryption at rest: the on-disk format of ``*.aead`` objects.

Format (all integers big-endian)::

    header (25 bytes)
      magic         4  b"LLAE"
      version       1  1
      key id        8  first 8 bytes of SHA-256(key) (16 hex characters in messages)
      chunk size    4  plaintext bytes per chunk (every chunk but the last is full)
      nonce prefix  8  random per object
    chunks, each ``len(plaintext) + 16`` bytes of AES-GCM output (ciphertext and tag)
      nonce  = nonce prefix || u32 chunk index
      aad    = header || u32 chunk index || u8 last-chunk flag

Empty content is one empty final chunk, so a file cut back to its header fails. The AAD makes
truncation (no chunk marked last), reordering (index), swapping chunks between objects (the
header holds the random nonce prefix) and editing the header detectable. The plaintext size is
not stored: a streaming writer learns it only at the end and object stores cannot seek back to
patch a header. It follows from the stored size and the chunk size (:func:`plaintext_size`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from loopline.core.errors import ConfigurationError, IntegrityError

MAGIC = b"LLAE"
VERSION = 1
TAG_SIZE = 16
MAX_CHUNK_SIZE = 64 << 20
_HEADER = struct.Struct(">4sB8sI8s")
HEADER_SIZE = _HEADER.size
_MAX_CHUNKS = 1 << 32


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed header of an encrypted object."""

    key_id: str
    chunk_size: int
    nonce_prefix: bytes

    def pack(self) -> bytes:
        """Return the 25 header bytes."""
        return _HEADER.pack(
            MAGIC, VERSION, bytes.fromhex(self.key_id), self.chunk_size, self.nonce_prefix
        )

    @classmethod
    def parse(cls, data: bytes) -> Header:
        """Parse the header bytes at the start of an encrypted object.

        Raises:
            IntegrityError: the bytes are short, the magic is wrong or the chunk size is invalid.
            ConfigurationError: the format version is newer than this code understands.
        """
        if len(data) != HEADER_SIZE:
            raise IntegrityError("encrypted object is shorter than its header")
        magic, version, key_id, chunk_size, prefix = _HEADER.unpack(data)
        if magic != MAGIC:
            raise IntegrityError("encrypted object does not start with the loopline magic")
        if version != VERSION:
            raise ConfigurationError(
                f"encrypted object has format version {version}; this loopline reads version "
                f"{VERSION}: upgrade loopline"
            )
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise IntegrityError(f"encrypted object header has invalid chunk size {chunk_size}")
        return cls(key_id.hex(), chunk_size, prefix)


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= _MAX_CHUNKS:
        raise IntegrityError("encrypted object has more than 2**32 chunks")
    return prefix + index.to_bytes(4, "big")


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def plaintext_size(stored_size: int, chunk_size: int) -> int:
    """Return the plaintext size of an encrypted object from its stored size and chunk size."""
    body = stored_size - HEADER_SIZE
    if body < TAG_SIZE:
        return 0
    chunks = -(-body // (chunk_size + TAG_SIZE))
    return body - chunks * TAG_SIZE


def encrypt_stream(
    key: bytes,
    key_id: str,
    chunks: Iterable[bytes],
    chunk_size: int,
) -> Iterator[bytes]:
    """Yield the header, then one encrypted chunk per ``chunk_size`` bytes of plaintext.

    ``chunks`` must yield pieces of exactly ``chunk_size`` bytes except the last (which may be
    shorter); one chunk is held back so the last one can be marked as last.
    """
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_SIZE}")
    header = Header(key_id, chunk_size, os.urandom(8))
    head = header.pack()
    aead = AESGCM(key)
    yield head
    prefix = header.nonce_prefix
    index = 0
    pending: bytes | None = None
    for piece in chunks:
        if pending is not None:
            yield aead.encrypt(_nonce(prefix, index), pending, _aad(head, index, False))
            index += 1
        pending = piece
    final = b"" if pending is None else pending
    yield aead.encrypt(_nonce(prefix, index), final, _aad(head, index, True))


def _read_exact(source: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads; fewer only at end of file."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        piece = source.read(remaining)
        if not piece:
            break
        parts.append(piece)
        remaining -= len(piece)
    return b"".join(parts)


def read_header(source: BinaryIO) -> Header:
    """Read and parse the header at the current position of ``source`` (see ``Header.parse``)."""
    return Header.parse(_read_exact(source, HEADER_SIZE))


def decrypt_stream(key: bytes, header: Header, source: BinaryIO) -> Iterator[bytes]:
    """Yield the plaintext chunks of ``source``, positioned just after ``header``.

    Raises:
        IntegrityError: a chunk fails authentication, or the object is truncated or extended.
    """
    aead = AESGCM(key)
    head = header.pack()
    stride = header.chunk_size + TAG_SIZE
    index = 0
    current = _read_exact(source, stride)
    while True:
        following = _read_exact(source, stride)
        last = not following
        if len(current) < TAG_SIZE or (not last and len(current) != stride):
            raise IntegrityError(f"encrypted object is truncated at chunk {index}")
        try:
            nonce = _nonce(header.nonce_prefix, index)
            plain = aead.decrypt(nonce, current, _aad(head, index, last))
        except InvalidTag as exc:
            raise IntegrityError(
                f"chunk {index} of the encrypted object failed authentication "
                "(tampered, truncated or reordered)"
            ) from exc
        yield plain
        if last:
            return
        current = following
        index += 1
