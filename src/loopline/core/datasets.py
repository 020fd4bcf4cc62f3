"""Records of versioned datasets: immutable snapshots and appended partitions.

Pure: no I/O. A snapshot's identity is the hash of its normalised rows; the Parquet bytes
that hold it are a separate, content-addressed artifact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name

_REF = re.compile(r"^(?P<name>[^@]+)(?:@(?P<version>\d+|latest))?$")


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """One column of a dataset: its name and its Arrow type as text."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One immutable version of a named dataset."""

    id: str
    dataset: str
    version: int
    content_hash: str
    blob_digest: str
    rows: int
    columns: tuple[ColumnSchema, ...]
    profile: Mapping[str, Any]
    source_uri: str | None
    source_hash: str | None
    parents: tuple[str, ...]
    created_at: datetime
    created_by: str

    @property
    def ref(self) -> str:
        """The human reference ``name@version``."""
        return f"{self.dataset}@{self.version}"


@dataclass(frozen=True, slots=True)
class DatasetPartition:
    """One appended batch of an incremental dataset."""

    id: str
    dataset: str
    seq: int
    blob_digest: str
    content_hash: str
    rows: int
    time_column: str | None
    min_time: datetime | None
    max_time: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """A parsed ``name``, ``name@3`` or ``name@latest``; ``version`` None means latest."""

    name: str
    version: int | None

    @classmethod
    def parse(cls, text: str, field: str = "dataset") -> DatasetRef:
        """Parse a dataset reference.

        Raises:
            InvalidArgumentError: naming ``field`` when the text is not NAME[@VERSION].
        """
        match = _REF.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidArgumentError(field, f"{text!r} is not NAME, NAME@VERSION or NAME@latest")
        name = validate_name(match["name"], field)
        version = match["version"]
        if version in (None, "latest"):
            return cls(name, None)
        if int(version) < 1:
            raise InvalidArgumentError(field, "versions start at 1")
        return cls(name, int(version))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"
