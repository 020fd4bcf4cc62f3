"""Unit tests of the chunked AES-256-GCM format in loopline.artifacts.crypto."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.artifacts.crypto import (
    HEADER_SIZE,
    TAG_SIZE,
    decrypt_stream,
    encrypt_stream,
    plaintext_size,
    read_header,
)
from loopline.artifacts.keys import key_id
from loopline.artifacts.streams import rechunk
from loopline.core.errors import ConfigurationError, IntegrityError

KEY = bytes(range(32))
KID = key_id(KEY)


def encrypt(data: bytes, chunk_size: int, key: bytes = KEY) -> bytes:
    pieces = rechunk([data], chunk_size)
    return b"".join(encrypt_stream(key, key_id(key), pieces, chunk_size))


def decrypt(blob: bytes, key: bytes = KEY) -> bytes:
    source = io.BytesIO(blob)
    header = read_header(source)
    return b"".join(decrypt_stream(key, header, source))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600), chunk_size=st.integers(min_value=1, max_value=70))
def test_decrypt_returns_the_plaintext_and_size_follows_from_stored_length(
    data: bytes, chunk_size: int
) -> None:
    blob = encrypt(data, chunk_size)
    assert decrypt(blob) == data
    assert plaintext_size(len(blob), chunk_size) == len(data)


def test_header_records_key_id_and_chunk_size() -> None:
    header = read_header(io.BytesIO(encrypt(b"abc", 16)))
    assert (header.key_id, header.chunk_size) == (KID, 16)


def test_two_encryptions_of_the_same_bytes_use_different_nonce_prefixes() -> None:
    first, second = encrypt(b"same" * 10, 8), encrypt(b"same" * 10, 8)
    assert (
        read_header(io.BytesIO(first)).nonce_prefix != read_header(io.BytesIO(second)).nonce_prefix
    )
    assert first[HEADER_SIZE:] != second[HEADER_SIZE:]


def test_empty_plaintext_is_one_authenticated_final_chunk() -> None:
    blob = encrypt(b"", 16)
    assert len(blob) == HEADER_SIZE + TAG_SIZE
    assert decrypt(blob) == b""
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(blob[:HEADER_SIZE])


def chunks_of(blob: bytes, chunk_size: int) -> list[bytes]:
    stride = chunk_size + TAG_SIZE
    body = blob[HEADER_SIZE:]
    return [body[i : i + stride] for i in range(0, len(body), stride)]


def test_dropping_whole_final_chunks_is_detected() -> None:
    blob = encrypt(os.urandom(64), 16)
    head, parts = blob[:HEADER_SIZE], chunks_of(blob, 16)
    with pytest.raises(IntegrityError, match="chunk 2"):
        decrypt(head + b"".join(parts[:3]))


def test_reordered_chunks_are_detected() -> None:
    blob = encrypt(os.urandom(64), 16)
    head, parts = blob[:HEADER_SIZE], chunks_of(blob, 16)
    with pytest.raises(IntegrityError, match="chunk 0"):
        decrypt(head + parts[1] + parts[0] + parts[2] + parts[3])


def test_chunk_swapped_in_from_another_object_under_the_same_key_is_detected() -> None:
    one, two = encrypt(os.urandom(48), 16), encrypt(os.urandom(48), 16)
    mixed = (
        one[:HEADER_SIZE] + chunks_of(one, 16)[0] + chunks_of(two, 16)[1] + chunks_of(one, 16)[2]
    )
    with pytest.raises(IntegrityError, match="chunk 1"):
        decrypt(mixed)


def test_bytes_appended_after_the_final_chunk_are_detected() -> None:
    blob = encrypt(os.urandom(32), 16)
    with pytest.raises(IntegrityError):
        decrypt(blob + blob[HEADER_SIZE : HEADER_SIZE + 16 + TAG_SIZE])


def test_edited_chunk_size_in_the_header_is_detected() -> None:
    blob = bytearray(encrypt(os.urandom(64), 16))
    blob[HEADER_SIZE - 9] ^= 0x20  # low byte of the chunk size: 16 -> 48
    with pytest.raises(IntegrityError):
        decrypt(bytes(blob))


def test_wrong_key_fails_authentication() -> None:
    blob = encrypt(b"secret", 16)
    with pytest.raises(IntegrityError, match="authentication"):
        decrypt(blob, key=bytes(32))


def test_foreign_bytes_are_refused_as_not_a_loopline_object() -> None:
    with pytest.raises(IntegrityError, match="magic"):
        read_header(io.BytesIO(b"PK\x03\x04" + bytes(HEADER_SIZE)))
    with pytest.raises(IntegrityError, match="shorter"):
        read_header(io.BytesIO(b"LLAE"))


def test_newer_format_version_asks_for_an_upgrade() -> None:
    blob = bytearray(encrypt(b"x", 16))
    blob[4] = 2
    with pytest.raises(ConfigurationError, match="upgrade"):
        read_header(io.BytesIO(bytes(blob)))
