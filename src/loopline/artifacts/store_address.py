"""How another process opens the same artifact store: its URL and its encryption keys.

Pipeline workers (process, Ray) and the registry's fresh-process ``verify`` both hand a store
to a process of their own this way. The keys travel only to processes this user starts;
never log an address.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from loopline.artifacts.content_store import ContentAddressedStore
from loopline.artifacts.keys import Keyring


@dataclass(frozen=True, slots=True)
class StoreAddress:
    """An artifact store's URL and its keys (base64, the active one first)."""

    url: str
    keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, blobs: ContentAddressedStore) -> StoreAddress:
        """Describe ``blobs`` so another process can open the same store."""
        keyring = blobs.keyring
        return cls(blobs.storage.url, keyring.encoded() if keyring is not None else ())

    @property
    def in_memory(self) -> bool:
        """Tell whether the store lives inside one process (``memory://``): no other can open it."""
        return urlsplit(self.url).scheme == "memory"

    def open(self) -> ContentAddressedStore:
        """Open the store (once per process; later calls reuse it).

        Raises:
            ConfigurationError: when the URL or a key is unusable.
            BackendError: when the store cannot be reached.
        """
        with _OPEN_LOCK:
            store = _OPEN_STORES.get(self)
            if store is None:
                keyring = Keyring.from_encoded(self.keys) if self.keys else None
                store = ContentAddressedStore.from_url(self.url, keyring, sweep_on_open=False)
                _OPEN_STORES[self] = store
            return store


_OPEN_STORES: dict[StoreAddress, ContentAddressedStore] = {}
_OPEN_LOCK = threading.Lock()
