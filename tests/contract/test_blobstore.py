"""Contract suite for the content-addressed blob store, run on local disk and fsspec memory://."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest

from loopline.artifacts import (
    ByteStorage,
    ContentAddressedStore,
    FsspecStorage,
    Keyring,
    LocalStorage,
    generate_key,
    open_storage,
)
from loopline.artifacts.crypto import HEADER_SIZE, TAG_SIZE
from loopline.core.errors import (
    ConfigurationError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PathEscapeError,
)

CHUNK = 1024


@dataclass
class Backend:
    """A storage under test plus raw access to its bytes, to play the part of a bad disk."""

    kind: str
    url: str
    storage: ByteStorage
    root: str  # local directory or fsspec path of the root
    fs: Any  # the fsspec filesystem for memory://, None for local

    def path(self, key: str) -> str:
        return os.path.join(self.root, key) if self.fs is None else f"{self.root}/{key}"

    def read_raw(self, key: str) -> bytes:
        if self.fs is None:
            return Path(self.path(key)).read_bytes()
        return bytes(self.fs.cat_file(self.path(key)))

    def write_raw(self, key: str, data: bytes) -> None:
        if self.fs is None:
            Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path(key)).write_bytes(data)
        else:
            self.fs.pipe_file(self.path(key), data)

    def files(self, folder: str) -> list[str]:
        if self.fs is None:
            top = Path(self.path(folder))
            return sorted(str(p.relative_to(self.root)) for p in top.rglob("*") if p.is_file())
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(self.path(folder)))

    def store(self, keyring: Keyring | None = None, **kwargs: Any) -> ContentAddressedStore:
        kwargs.setdefault("chunk_size", CHUNK)
        return ContentAddressedStore(open_storage(self.url), keyring, **kwargs)


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        root = tmp_path / "store"
        storage = LocalStorage(str(root))
        yield Backend("local", str(root), storage, storage.url, None)
        return
    url = f"memory://blobstore-{uuid.uuid4().hex}"
    fs, root = fsspec.core.url_to_fs(url)
    yield Backend("memory", url, FsspecStorage(url), root, fs)
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def old_key() -> str:
    return generate_key()


@pytest.fixture
def old_keyring(old_key: str) -> Keyring:
    return Keyring.from_encoded([old_key])


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_key(digest: str, encrypted: bool = False) -> str:
    return f"objects/{digest[:2]}/{digest}" + (".aead" if encrypted else "")


def flip_byte(backend: Backend, key: str, offset: int) -> None:
    raw = bytearray(backend.read_raw(key))
    raw[offset] ^= 0x01
    backend.write_raw(key, bytes(raw))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


DATA = {
    "empty": b"",
    "small": b"hello, loopline",
    "one-chunk": bytes(range(256)) * 4,
    "multi-chunk": os.urandom(CHUNK * 5 + 17),
    "exact-chunks": os.urandom(CHUNK * 3),
}


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("name", list(DATA))
def test_get_returns_the_put_bytes_for_every_size(
    backend: Backend, name: str, encrypted: bool, old_keyring: Keyring
) -> None:
    store = backend.store(old_keyring if encrypted else None)
    data = DATA[name]
    info = store.put_bytes(data)
    assert info.digest == digest_of(data)
    assert info.size == len(data)
    assert info.created is True
    assert info.key_id == (old_keyring.active_id if encrypted else None)
    assert store.get_bytes(info.digest) == data
    assert store.info(info.digest) == info.__class__(info.digest, len(data), info.key_id)
    assert backend.files("objects") == [stored_key(info.digest, encrypted)]


def test_put_file_and_get_to_file_copy_the_bytes(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(DATA["multi-chunk"])
    store = backend.store()
    info = store.put_file(source)
    dest = tmp_path / "out.bin"
    assert store.get_to_file(info.digest, dest).size == len(DATA["multi-chunk"])
    assert dest.read_bytes() == DATA["multi-chunk"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_put_file_raises_not_found_when_the_file_is_missing(
    backend: Backend, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError):
        backend.store().put_file(tmp_path / "absent.bin")


def test_second_put_of_same_bytes_reports_not_created_and_keeps_one_object(
    backend: Backend,
) -> None:
    store = backend.store()
    first = store.put_bytes(b"same")
    second = store.put_stream([b"sa", b"me"])
    assert (first.created, second.created) == (True, False)
    assert second.digest == first.digest
    assert [o.digest for o in store.iter_objects()] == [first.digest]
    assert backend.files("tmp") == []


def test_put_stream_of_a_generator_holds_only_a_few_chunks_in_memory(backend: Backend) -> None:
    chunk, count = 64 * 1024, 160  # 10 MiB
    store = backend.store(chunk_size=chunk)
    # memory:// keeps the object itself in RAM (and briefly twice while fs.mv copies it)
    resident = 0 if backend.kind == "local" else 2 * chunk * count

    def chunks() -> Iterator[bytes]:
        for index in range(count):
            yield index.to_bytes(4, "big") * (chunk // 4)

    tracemalloc.start()
    try:
        info = store.put_stream(chunks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.size == chunk * count
    assert peak < resident + 8 * chunk


def test_put_stream_reads_a_binary_file_object(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(DATA["multi-chunk"])
    store = backend.store()
    with source.open("rb") as handle:
        info = store.put_stream(handle)
    assert store.get_bytes(info.digest) == DATA["multi-chunk"]


def test_failed_put_stream_leaves_no_object_and_no_temp(backend: Backend) -> None:
    store = backend.store()

    def broken() -> Iterator[bytes]:
        yield b"x" * (CHUNK * 3)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        store.put_stream(broken())
    assert list(store.iter_objects()) == []
    assert backend.files("tmp") == []


def test_put_stream_refuses_chunks_that_are_not_bytes(backend: Backend) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        backend.store().put_stream(["text"])  # type: ignore[list-item]
    assert caught.value.field == "chunks"


def test_iter_objects_lists_each_stored_digest_once(backend: Backend) -> None:
    store = backend.store()
    digests = {store.put_bytes(data).digest for data in DATA.values()}
    listed = [info.digest for info in store.iter_objects()]
    assert sorted(listed) == sorted(digests)


def test_delete_removes_the_object_and_a_second_delete_raises_not_found(backend: Backend) -> None:
    store = backend.store()
    digest = store.put_bytes(b"bye").digest
    store.delete(digest)
    assert store.exists(digest) is False
    with pytest.raises(NotFoundError):
        store.delete(digest)


def test_reading_an_absent_digest_raises_not_found(backend: Backend) -> None:
    store = backend.store()
    missing = digest_of(b"never stored")
    with pytest.raises(NotFoundError) as caught:
        store.get_bytes(missing)
    assert caught.value.key == missing
    with pytest.raises(NotFoundError):
        store.info(missing)
    assert store.exists(missing) is False


# -- integrity ------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_flipped_byte_raises_integrity_error_on_get_and_is_listed_by_verify(
    backend: Backend, encrypted: bool, old_keyring: Keyring
) -> None:
    store = backend.store(old_keyring if encrypted else None)
    good = store.put_bytes(b"good bytes").digest
    bad = store.put_bytes(DATA["multi-chunk"]).digest
    flip_byte(backend, stored_key(bad, encrypted), HEADER_SIZE + CHUNK + 3)
    with pytest.raises(IntegrityError, match=bad):
        store.get_bytes(bad)
    report = store.verify()
    assert report.checked == 2
    assert [p.digest for p in report.problems] == [bad]
    assert store.verify([good]).ok


def test_plain_reader_raises_integrity_error_naming_expected_and_actual_digest(
    backend: Backend,
) -> None:
    store = backend.store()
    digest = store.put_bytes(b"original").digest
    backend.write_raw(stored_key(digest), b"replaced")
    with store.open(digest) as reader, pytest.raises(IntegrityError) as caught:
        reader.read()
    assert digest in str(caught.value)
    assert digest_of(b"replaced") in str(caught.value)


def test_get_to_file_leaves_nothing_at_dest_when_the_object_is_corrupt(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store()
    digest = store.put_bytes(DATA["multi-chunk"]).digest
    flip_byte(backend, stored_key(digest), 5)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(IntegrityError):
        store.get_to_file(digest, out_dir / "model.bin")
    assert list(out_dir.iterdir()) == []


def test_verify_reports_a_named_digest_that_is_missing(backend: Backend) -> None:
    missing = digest_of(b"absent")
    report = backend.store().verify([missing])
    assert report.problems[0].digest == missing
    assert report.problems[0].reason == "missing"


# -- keys and paths -------------------------------------------------------------------------

BAD_DIGESTS = [
    "../../etc/passwd",
    "/etc/passwd",
    "",
    "A" * 64,
    "g" * 64,
    "a" * 63,
    "ab/" + "a" * 61,
    "a" * 64 + ".aead",
    "a" * 62 + "\x00a",
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_non_digest_strings_are_refused_before_touching_storage(
    backend: Backend, digest: str
) -> None:
    store = backend.store()
    for call in (store.get_bytes, store.exists, store.info, store.delete):
        with pytest.raises(InvalidArgumentError) as caught:
            call(digest)
        assert caught.value.field == "digest"


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "objects/../../outside",
        "/etc/passwd",
        "objects\\..\\x",
        "C:/Windows",
        "objects/./x",
    ],
)
def test_storage_refuses_keys_that_would_leave_the_root(backend: Backend, key: str) -> None:
    with pytest.raises(PathEscapeError):
        backend.storage.open_read(key)
    with pytest.raises(PathEscapeError):
        backend.storage.exists(key)


@pytest.mark.parametrize("key", ["", "objects//x", "objects/x/", "obj\x00ects/x", "objects/a b"])
def test_storage_refuses_malformed_keys(backend: Backend, key: str) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.storage.exists(key)


def test_symlinked_object_pointing_outside_the_root_is_refused_on_local_storage(
    tmp_path: Path,
) -> None:
    store = ContentAddressedStore.from_url(tmp_path / "store")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside")
    digest = digest_of(b"outside")
    link = tmp_path / "store" / stored_key(digest)
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with pytest.raises(PathEscapeError):
        store.get_bytes(digest)
    with pytest.raises(PathEscapeError):
        store.exists(digest)
    assert [p.digest for p in store.verify().problems] == [digest]


def test_symlinked_folder_inside_the_root_is_refused_on_local_storage(tmp_path: Path) -> None:
    store = ContentAddressedStore.from_url(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    digest = digest_of(b"outside")
    (outside / digest).write_bytes(b"outside")
    objects = tmp_path / "store" / "objects"
    objects.mkdir()
    (objects / digest[:2]).symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError):
        store.get_bytes(digest)
    with pytest.raises(PathEscapeError):
        store.put_bytes(b"outside")
    assert (outside / digest).read_bytes() == b"outside"


def test_file_url_opens_local_storage(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "store").as_uri())
    assert isinstance(storage, LocalStorage)
    assert storage.url == str((tmp_path / "store").resolve())


# -- encryption -----------------------------------------------------------------------------


def test_encrypted_object_holds_no_plaintext_and_plain_reader_cannot_see_it(
    backend: Backend, old_keyring: Keyring
) -> None:
    data = b"top secret model weights " * 200
    info = backend.store(old_keyring).put_bytes(data)
    raw = backend.read_raw(stored_key(info.digest, encrypted=True))
    assert b"top secret" not in raw
    assert backend.files("objects") == [stored_key(info.digest, encrypted=True)]


def test_reading_without_the_objects_key_raises_configuration_error_naming_the_key_id(
    backend: Backend, old_keyring: Keyring
) -> None:
    digest = backend.store(old_keyring).put_bytes(b"locked").digest
    other = backend.store(Keyring.from_encoded([generate_key()]))
    with pytest.raises(ConfigurationError) as caught:
        other.get_bytes(digest)
    message = str(caught.value)
    assert old_keyring.active_id in message
    assert "LOOPLINE_ENCRYPTION_KEY" in message
    assert other.verify().problems[0].digest == digest


def test_reading_encrypted_object_with_no_keyring_raises_configuration_error(
    backend: Backend, old_keyring: Keyring
) -> None:
    digest = backend.store(old_keyring).put_bytes(b"locked").digest
    with pytest.raises(ConfigurationError, match=old_keyring.active_id):
        backend.store().get_bytes(digest)


@pytest.mark.parametrize("cut", ["last-chunk", "mid-chunk", "header-only"])
def test_truncated_ciphertext_raises_integrity_error(
    backend: Backend, old_keyring: Keyring, cut: str
) -> None:
    store = backend.store(old_keyring)
    digest = store.put_bytes(os.urandom(CHUNK * 3)).digest
    key = stored_key(digest, encrypted=True)
    raw = backend.read_raw(key)
    keep = {
        "last-chunk": len(raw) - (CHUNK + TAG_SIZE),
        "mid-chunk": len(raw) - 100,
        "header-only": HEADER_SIZE,
    }[cut]
    backend.write_raw(key, raw[:keep])
    with pytest.raises(IntegrityError, match=digest):
        store.get_bytes(digest)


def test_tampered_encrypted_header_raises_integrity_error(
    backend: Backend, old_keyring: Keyring
) -> None:
    store = backend.store(old_keyring)
    digest = store.put_bytes(b"payload").digest
    flip_byte(backend, stored_key(digest, encrypted=True), HEADER_SIZE - 1)  # nonce prefix
    with pytest.raises(IntegrityError):
        store.get_bytes(digest)


def test_rotate_key_reencrypts_old_and_plain_objects_so_the_new_key_alone_reads_them(
    backend: Backend, old_key: str, old_keyring: Keyring
) -> None:
    plain = backend.store().put_bytes(b"plain before keys").digest
    old = backend.store(old_keyring).put_bytes(DATA["multi-chunk"]).digest
    new_key = generate_key()
    both = Keyring.from_encoded([new_key, old_key])
    report = backend.store(both).rotate_key()
    assert (report.rewritten, report.already_current) == (2, 0)
    assert report.active_key_id == both.active_id
    only_new = backend.store(Keyring.from_encoded([new_key]))
    assert only_new.get_bytes(plain) == b"plain before keys"
    assert only_new.get_bytes(old) == DATA["multi-chunk"]
    assert {o.key_id for o in only_new.iter_objects()} == {both.active_id}
    assert backend.files("objects") == sorted([stored_key(plain, True), stored_key(old, True)])
    again = only_new.rotate_key()
    assert (again.rewritten, again.already_current) == (0, 2)


def test_rotate_key_skips_a_corrupt_object_leaves_it_in_place_and_rotates_the_rest(
    backend: Backend, old_keyring: Keyring
) -> None:
    digest = backend.store().put_bytes(DATA["multi-chunk"]).digest
    healthy = backend.store().put_bytes(b"healthy bytes").digest
    flip_byte(backend, stored_key(digest), 10)
    report = backend.store(old_keyring).rotate_key()
    assert report.rewritten == 1
    assert [p.digest for p in report.failed] == [digest]
    assert "does not match" in report.failed[0].reason or digest in report.failed[0].reason
    assert stored_key(digest) in backend.files("objects")
    assert stored_key(healthy, True) in backend.files("objects")
    assert backend.files("tmp") == []


def test_rotate_key_without_a_keyring_raises_configuration_error(backend: Backend) -> None:
    with pytest.raises(ConfigurationError, match="LOOPLINE_ENCRYPTION_KEY"):
        backend.store().rotate_key()


# -- debris ---------------------------------------------------------------------------------


def temp_name(pid: int) -> str:
    return f"tmp/{socket.gethostname()}-{pid}-{uuid.uuid4().hex}"


def test_sweep_debris_removes_temp_files_of_dead_pids_and_keeps_live_ones(backend: Backend) -> None:
    dead, live = temp_name(dead_pid()), temp_name(os.getpid())
    backend.write_raw(dead, b"partial")
    backend.write_raw(live, b"in progress")
    assert backend.store(sweep_on_open=False).sweep_debris() == 1
    assert backend.files("tmp") == [live]


def test_opening_the_store_sweeps_debris_by_default(backend: Backend) -> None:
    backend.write_raw(temp_name(dead_pid()), b"partial")
    backend.store(sweep_on_open=False)
    assert len(backend.files("tmp")) == 1
    backend.store()
    assert backend.files("tmp") == []


def test_sweep_debris_removes_any_temp_file_older_than_a_day(backend: Backend) -> None:
    other_host = f"tmp/elsewhere-1-{uuid.uuid4().hex}"
    backend.write_raw(other_host, b"partial")
    backend.write_raw(temp_name(os.getpid()), b"partial")
    store = backend.store(sweep_on_open=False)
    assert store.sweep_debris(now=time.time() + 3600) == 0
    assert store.sweep_debris(now=time.time() + 25 * 3600) == 2
    assert backend.files("tmp") == []
