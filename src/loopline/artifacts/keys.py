"""Encryption keys: parsing key material, key ids, and the keyring of active and older keys.

A key is 32 random bytes written as URL-safe (or standard) base64. Its id is the first 16 hex
characters of the SHA-256 of the key bytes, so keys need no names. Key material never appears
in a message, a repr or a log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from loopline.core.errors import ConfigurationError

KEY_SIZE = 32
ENV_VAR = "LOOPLINE_ENCRYPTION_KEY"
_URLSAFE = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_STANDARD = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def generate_key() -> str:
    """Return a new random 32-byte key as URL-safe base64 text."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_SIZE)).decode("ascii")


def key_id(key: bytes) -> str:
    """Return the id of ``key``: the first 16 hex characters of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def decode_key(text: str, source: str) -> bytes:
    """Decode one base64 key; ``source`` names where it came from, for the message.

    Raises:
        ConfigurationError: the text is not base64 or does not decode to 32 bytes. The message
            names the source and the problem, never the key.
    """
    value = text.strip()
    altchars = b"-_" if _URLSAFE.match(value) else b"+/" if _STANDARD.match(value) else None
    if altchars is None:
        raise ConfigurationError(f"encryption key in {source} is not base64 text")
    padded = value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4)
    try:
        key = base64.b64decode(padded, altchars=altchars, validate=True)
    except binascii.Error as exc:
        raise ConfigurationError(f"encryption key in {source} is not valid base64") from exc
    if len(key) != KEY_SIZE:
        raise ConfigurationError(
            f"encryption key in {source} decodes to {len(key)} bytes; a key must be "
            f"{KEY_SIZE} bytes (make one with loopline.artifacts.generate_key())"
        )
    return key


def _env_keys(value: str) -> list[bytes]:
    items = [item.strip() for item in value.split(",")]
    return [
        decode_key(item, f"{ENV_VAR} (item {number})")
        for number, item in enumerate(items, start=1)
        if item
    ]


def _file_keys(path: Path) -> list[bytes]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ConfigurationError(f"encryption key file {str(path)!r} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"encryption key file {str(path)!r} cannot be read") from exc
    keys = [
        decode_key(line, f"key file {str(path)!r} line {number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise ConfigurationError(f"encryption key file {str(path)!r} holds no key")
    return keys


class Keyring:
    """The active key (used to encrypt) and older keys (still accepted to decrypt)."""

    def __init__(self, active: bytes, older: Iterable[bytes] = ()) -> None:
        """Build a keyring; duplicate keys are dropped.

        Raises:
            ConfigurationError: a key is not 32 bytes.
        """
        keys: dict[str, bytes] = {}
        for key in (active, *older):
            if len(key) != KEY_SIZE:
                raise ConfigurationError(f"an encryption key must be {KEY_SIZE} bytes")
            keys.setdefault(key_id(key), key)
        self._keys = keys
        self._active_id = key_id(active)

    @classmethod
    def from_sources(cls, env_value: str | None, key_file: Path | None) -> Keyring | None:
        """Build a keyring from the environment value and/or a key file; None when both are unset.

        ``env_value`` holds comma-separated keys, the first active. The key file holds one key
        per line, ``#`` comments allowed. When both are given, the environment's first key is
        active and every other key is accepted for decryption.

        Raises:
            ConfigurationError: a key is malformed, or the file is missing, unreadable or empty.
        """
        keys: list[bytes] = []
        if env_value and not env_value.replace(",", "").strip():
            # Set to separators or spaces only: fail closed rather than write plaintext.
            raise ConfigurationError(f"{ENV_VAR} is set but holds no key; unset it to store "
                                     "artifacts unencrypted, or give a key")
        if env_value is not None and env_value.strip():
            keys.extend(_env_keys(env_value))
        if key_file is not None:
            keys.extend(_file_keys(key_file))
        if not keys:
            return None
        return cls(keys[0], keys[1:])

    @classmethod
    def from_encoded(cls, keys: Sequence[str]) -> Keyring:
        """Build a keyring from base64 keys, the first active.

        Raises:
            ConfigurationError: ``keys`` is empty or a key is malformed.
        """
        if not keys:
            raise ConfigurationError("a keyring needs at least one key")
        decoded = [decode_key(text, f"key {number}") for number, text in enumerate(keys, 1)]
        return cls(decoded[0], decoded[1:])

    def encoded(self) -> tuple[str, ...]:
        """Return the keys as base64 text, the active one first (``from_encoded`` reads it).

        For handing the keyring to a worker process of the same user; never log it.
        """
        return tuple(base64.urlsafe_b64encode(key).decode("ascii")
                     for key in self._keys.values())

    @property
    def active_id(self) -> str:
        """The id of the key new objects are encrypted with."""
        return self._active_id

    @property
    def active_key(self) -> bytes:
        """The key new objects are encrypted with."""
        return self._keys[self._active_id]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key in the keyring, active first."""
        return tuple(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def key_for(self, kid: str) -> bytes:
        """Return the key with id ``kid``.

        Raises:
            ConfigurationError: the keyring does not hold that key; the message says how to add it.
        """
        try:
            return self._keys[kid]
        except KeyError:
            raise ConfigurationError(
                f"encryption key id {kid} is not in the keyring (it holds "
                f"{', '.join(self._keys)}); add the old key to {ENV_VAR} (after the active "
                "key, comma-separated) or to the key file"
            ) from None

    def __repr__(self) -> str:
        return f"Keyring(active={self._active_id!r}, key_ids={self.key_ids!r})"
