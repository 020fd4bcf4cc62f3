"""What a model version was trained on, as monitoring compares windows with it.

A version registered with ``reference=`` keeps ``extra["reference_profile"]`` naming (by
SHA-256) a JSON payload in the artifact store with the profile of its training inputs and of
the model's outputs on them (``registry.reference_profile`` writes it). ``ReferenceProfiles``
reads it back through the verifying blob store and pairs it with the version's training
metrics (overall and per slice, as ``registry.metrics`` stores them). A version registered
without a reference has none (``reference_of`` returns None); an ``input_example`` is never
one. Payloads never change (they are named by their digest), so parsed ones are cached.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loopline.core.canonical import is_digest
from loopline.core.errors import IntegrityError, InvalidArgumentError, NotFoundError
from loopline.core.models import ModelURI, ModelVersion
from loopline.core.ports import BlobStore
from loopline.data.profiling import Profile
from loopline.store import MetadataStore
from loopline.store.model_queries import ModelQueries

__all__ = ["FORMAT", "RECORD", "Reference", "ReferenceProfiles"]

RECORD = "reference_profile"
FORMAT = 1
CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Reference:
    """A version's reference: training inputs' profile, outputs' profile, training metrics.

    ``outputs`` profiles the column ``prediction`` on ``scored_rows`` of the ``rows``.
    """

    inputs: Profile
    outputs: Profile | None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    rows: int = 0
    scored_rows: int = 0
    digest: str = ""


def _parse(data: bytes, uri: str) -> tuple[Profile, Profile | None, int, int]:
    """Return the profiles and counts in a stored payload.

    Raises:
        IntegrityError: naming the version when the payload is malformed.
    """
    try:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"it is not a reference profile of format {FORMAT}")
        inputs = Profile.from_dict(document["inputs"])
        outputs = document.get("outputs")
        scored = document.get("scored") or {}
        return (inputs, None if outputs is None else Profile.from_dict(outputs),
                int(document["rows"]), int(scored.get("rows", 0)))
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgumentError) as exc:
        raise IntegrityError(f"the reference profile of {uri} is malformed: {exc}") from exc


class ReferenceProfiles:
    """Reads model versions' reference profiles (see the module docstring)."""

    def __init__(self, store: MetadataStore, blobs: BlobStore) -> None:
        self._queries = ModelQueries(store.engine)
        self._blobs = blobs
        self._cache: OrderedDict[str, tuple[Profile, Profile | None, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def reference_of(self, model: str, version: int) -> Reference | None:
        """Return the reference of version ``version`` of ``model`` (None when it has none).

        Raises:
            NotFoundError: naming the version when it does not exist.
            IntegrityError: naming the version when its payload is missing, altered or
                malformed.
        """
        return self.of_version(self._queries.version(model, version))

    def reference_at(self, uri: str | ModelURI) -> Reference | None:
        """Return the reference of the version ``uri`` names (``models:/NAME/VERSION``).

        Raises:
            InvalidArgumentError: naming ``model`` when the text is not a model URI.
            NotFoundError, IntegrityError: as :meth:`reference_of`.
        """
        return self.of_version(self._queries.resolve(uri))

    def training_metrics(self, model: str, version: int) -> dict[str, Any]:
        """Return the version's training metrics, recorded with or without a reference.

        Raises:
            NotFoundError: naming the version when it does not exist.
        """
        return dict(self._queries.version(model, version).metrics)

    def of_version(self, version: ModelVersion) -> Reference | None:
        """Return ``version``'s reference (None when it recorded none).

        Raises:
            IntegrityError: as :meth:`reference_of`.
        """
        record = version.extra.get(RECORD)
        if record is None:
            return None
        digest = record.get("digest") if isinstance(record, Mapping) else None
        if not isinstance(digest, str) or not is_digest(digest):
            raise IntegrityError(f"the reference profile record of {version.uri} names no "
                                 f"SHA-256 digest: {record!r}")
        with self._lock:
            parsed = self._cache.get(digest)
            if parsed is not None:
                self._cache.move_to_end(digest)
        if parsed is None:
            parsed = _parse(self._read(digest, version.uri), version.uri)
            with self._lock:
                self._cache[digest] = parsed
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        inputs, outputs, rows, scored = parsed
        return Reference(inputs, outputs, dict(version.metrics), rows, scored, digest)

    def _read(self, digest: str, uri: str) -> bytes:
        try:
            return self._blobs.get_bytes(digest)
        except NotFoundError as exc:
            raise IntegrityError(f"the reference profile of {uri} (sha256 {digest}) is not in "
                                 "the artifact store") from exc
