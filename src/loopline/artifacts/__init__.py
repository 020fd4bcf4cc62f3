"""Layer L1: the content-addressed artifact store, on local disk or any fsspec filesystem.

Objects are named by the SHA-256 of their plaintext, written through a temporary name and
committed atomically, re-verified on every read and optionally encrypted at rest with
AES-256-GCM. Imports only the standard library, ``loopline.core``, fsspec and cryptography.

    storage.py        ByteStorage protocol, TempFile, open_storage (picks by URL scheme)
    local.py          LocalStorage: os calls, fsync, rename, no symlinks
    fsspec_storage.py FsspecStorage: any fsspec filesystem
    resolver.py       the one resolver from keys to paths
    layout.py         object keys, temp names, the debris rule
    crypto.py         the encrypted object format
    keys.py           key material and the Keyring
    streams.py        chunking and the verifying reader
    content_store.py  ContentAddressedStore
    store_address.py  StoreAddress: how another process opens the same store
"""

from loopline.artifacts.content_store import DEFAULT_CHUNK_SIZE, ContentAddressedStore
from loopline.artifacts.fsspec_storage import FsspecStorage
from loopline.artifacts.keys import ENV_VAR, Keyring, generate_key, key_id
from loopline.artifacts.local import LocalStorage
from loopline.artifacts.storage import ByteStorage, TempFile, open_storage

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ENV_VAR",
    "ByteStorage",
    "ContentAddressedStore",
    "FsspecStorage",
    "Keyring",
    "LocalStorage",
    "TempFile",
    "generate_key",
    "key_id",
    "open_storage",
]
