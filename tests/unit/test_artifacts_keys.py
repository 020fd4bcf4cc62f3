"""Unit tests of key parsing and the Keyring in loopline.artifacts.keys."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from loopline.artifacts.keys import Keyring, decode_key, generate_key, key_id
from loopline.core.errors import ConfigurationError


def raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text)


def test_generate_key_returns_distinct_urlsafe_32_byte_keys() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert len(raw(first)) == 32
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def test_key_id_is_the_first_16_hex_of_the_sha256() -> None:
    key = bytes(range(32))
    assert key_id(key) == hashlib.sha256(key).hexdigest()[:16]


def test_standard_and_unpadded_urlsafe_base64_decode_to_the_same_key() -> None:
    key = bytes([0xFB, 0xFF] * 16)  # encodes with '+' '/' in standard, '-' '_' in urlsafe
    standard = base64.b64encode(key).decode()
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert "+" in standard or "/" in standard
    assert decode_key(standard, "test") == decode_key(urlsafe, "test") == key


def test_env_value_with_several_keys_makes_the_first_active() -> None:
    new, old = generate_key(), generate_key()
    ring = Keyring.from_sources(f" {new} , {old} ,", None)
    assert ring is not None
    assert ring.active_id == key_id(raw(new))
    assert ring.key_ids == (key_id(raw(new)), key_id(raw(old)))
    assert ring.key_for(key_id(raw(old))) == raw(old)


def test_key_file_skips_comments_and_makes_the_first_key_active(tmp_path: Path) -> None:
    new, old = generate_key(), generate_key()
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2024-05\n\n{new}\n  # old one\n{old}\n", encoding="utf-8")
    ring = Keyring.from_sources(None, path)
    assert ring is not None
    assert ring.key_ids == (key_id(raw(new)), key_id(raw(old)))


def test_env_key_is_active_and_file_keys_still_decrypt_when_both_are_given(tmp_path: Path) -> None:
    env_key, file_key = generate_key(), generate_key()
    path = tmp_path / "keys"
    path.write_text(file_key + "\n", encoding="utf-8")
    ring = Keyring.from_sources(env_key, path)
    assert ring is not None
    assert ring.active_id == key_id(raw(env_key))
    assert key_id(raw(file_key)) in ring


@pytest.mark.parametrize("env_value", [None, ""])
def test_no_key_sources_give_no_keyring(env_value: str | None) -> None:
    assert Keyring.from_sources(env_value, None) is None


@pytest.mark.parametrize("env_value", ["   ", ",", " , "])
def test_a_key_variable_holding_no_key_fails_closed(env_value: str) -> None:
    with pytest.raises(ConfigurationError, match="holds no key"):
        Keyring.from_sources(env_value, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64 at all!", "not base64"),
        ("QUJD", "decodes to 3 bytes"),
        ("A" * 45, "not valid base64"),
    ],
)
def test_bad_env_key_raises_configuration_error_naming_source_not_the_key(
    text: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Keyring.from_sources(f"{generate_key()},{text}", None)
    message = str(caught.value)
    assert "LOOPLINE_ENCRYPTION_KEY (item 2)" in message
    assert problem in message
    assert text not in message


def test_bad_line_in_key_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# header\n{generate_key()}\nshort\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="line 3"):
        Keyring.from_sources(None, path)


def test_missing_or_empty_key_file_raises_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Keyring.from_sources(None, tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="holds no key"):
        Keyring.from_sources(None, empty)


def test_unknown_key_id_raises_configuration_error_saying_how_to_add_the_key() -> None:
    ring = Keyring.from_encoded([generate_key()])
    with pytest.raises(ConfigurationError) as caught:
        ring.key_for("0123456789abcdef")
    assert "0123456789abcdef" in str(caught.value)
    assert "LOOPLINE_ENCRYPTION_KEY" in str(caught.value)


def test_repr_shows_key_ids_but_never_key_material() -> None:
    text = generate_key()
    ring = Keyring.from_encoded([text])
    shown = repr(ring)
    assert ring.active_id in shown
    assert text not in shown and text.rstrip("=") not in shown
    assert repr(raw(text)) not in shown


def test_duplicate_keys_are_kept_once() -> None:
    text = generate_key()
    ring = Keyring.from_encoded([text, text])
    assert ring.key_ids == (key_id(raw(text)),)
