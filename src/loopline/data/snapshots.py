"""Dataset snapshots: versioned, content-identified, profiled copies of a table.

``DatasetService.snapshot`` reads a source once, in bounded memory, and in that single pass
normalises each batch, hashes its rows (the identity), profiles it and writes it to Parquet.
The same rows snapshot to the same version whatever the source was called; a new version is
recorded with its event, audit entry and lineage edges in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from loopline.core.canonical import json_safe
from loopline.core.clock import Clock
from loopline.core.datasets import DatasetRef, DatasetVersion
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ids import new_id
from loopline.core.lineage_reads import note_read
from loopline.core.names import validate_name
from loopline.core.ports import Authorizer, BlobStore, authorize_if_wired
from loopline.data.lineage import LineageService
from loopline.data.lineage_records import snapshot_lineage, snapshot_node
from loopline.data.normalise import RowHasher, columns_of, normalise_schema
from loopline.data.parquet_io import ParquetSink, conform, fixed_groups, open_stored
from loopline.data.profiling import Profiler
from loopline.data.sources import open_source
from loopline.store import MetadataStore, UnitOfWork
from loopline.store.datasets import (
    DatasetQueries,
    add_version,
    latest_version,
    next_version_number,
)

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    """A snapshot's version, and whether this call created it (False: same rows existed)."""

    version: DatasetVersion
    created: bool


@dataclass(slots=True)
class _Written:
    path: Any
    content_hash: str
    rows: int
    profile: dict[str, Any]
    schema: pa.Schema
    source_uri: str | None
    source_hash: str | None


class DatasetService:
    """Snapshots, versions and reads of named datasets."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, lineage: LineageService,
                 actor: str, clock: Clock, authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._authorizer = authorizer
        self._blobs = blobs
        self._lineage = lineage
        self._actor = actor
        self._clock = clock
        self.queries = DatasetQueries(store.engine)

    def snapshot(self, source: Any, name: str, *, parents: Sequence[str] = (),
                 progress: Progress | None = None) -> SnapshotResult:
        """Snapshot ``source`` as the next version of dataset ``name`` (idempotent by content).

        Raises:
            InvalidArgumentError: naming the field for a bad name, parent or source.
            NotFoundError: when a parent does not exist.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        authorize_if_wired(self._authorizer, self._actor, Permission.WRITE)
        validate_name(name, "name")
        parent_versions = [self.get(parent, field="parents") for parent in parents]
        parent_ids = tuple(p.id for p in parent_versions)
        written = self._write(source, progress)
        try:
            found = _unchanged(self.queries.version(name, None), written, parent_ids)
            if found is not None:
                return SnapshotResult(found, False)
            blob = self._blobs.put_file(written.path)
        finally:
            written.path.unlink(missing_ok=True)
        with self._store.write(self._actor) as uow:
            uow.serialise()  # version numbers are taken under the append lock
            again = _unchanged(latest_version(uow.session, name), written, parent_ids)
            if again is not None:
                return SnapshotResult(again, False)
            version = self._new_version(uow, name, written, blob.digest, parent_versions)
        return SnapshotResult(version, True)

    def _write(self, source: Any, progress: Progress | None) -> _Written:
        stream = open_source(source)
        schema = normalise_schema(stream.schema)
        hasher, profiler, sink = RowHasher(schema), Profiler(), ParquetSink(schema)
        try:
            for group in fixed_groups(conform(b, schema) for b in stream.batches):
                hasher.update(group)
                profiler.update(group)
                sink.write(group)
                if progress is not None:
                    progress(hasher.rows)
            path = sink.close()
        except BaseException:
            sink.discard()
            raise
        if hasher.rows == 0:
            path.unlink(missing_ok=True)
            raise InvalidArgumentError("source", "it has no rows; a snapshot needs at least one")
        return _Written(path, hasher.hexdigest(), hasher.rows,
                        json_safe(profiler.result().to_dict()), schema, stream.uri,
                        stream.source_hash)

    def _new_version(self, uow: UnitOfWork, name: str, written: _Written, digest: str,
                     parents: list[DatasetVersion]) -> DatasetVersion:
        version = DatasetVersion(
            id=new_id(), dataset=name, version=next_version_number(uow.session, name),
            content_hash=written.content_hash, blob_digest=digest, rows=written.rows,
            columns=columns_of(written.schema), profile=written.profile,
            source_uri=written.source_uri, source_hash=written.source_hash,
            parents=tuple(p.id for p in parents), created_at=self._clock.now(),
            created_by=self._actor,
        )
        add_version(uow.session, version)
        details = {"id": version.id, "rows": version.rows, "content_hash": version.content_hash,
                   "source_uri": version.source_uri, "parents": [p.ref for p in parents]}
        uow.emit(EventType.DATASET_SNAPSHOT_CREATED, version.ref, details)
        uow.audit("dataset.snapshot", f"dataset:{version.ref}", None, details)
        nodes, edges = snapshot_lineage(version, parents)
        self._lineage.record_in(uow, nodes, edges)
        return version

    def get(self, ref: str, field: str = "dataset") -> DatasetVersion:
        """Return the version named by ``name``, ``name@N``, ``name@latest`` or a version id.

        Raises:
            InvalidArgumentError: naming ``field`` when the reference is malformed.
            NotFoundError: when there is no such dataset or version.
        """
        if len(ref) == 32 and "@" not in ref and (found := self.queries.by_id(ref)):
            return found
        parsed = DatasetRef.parse(ref, field)
        version = self.queries.version(parsed.name, parsed.version)
        if version is None:
            raise NotFoundError("dataset", str(parsed),
                                "list datasets with `loopline data list`")
        return version

    def previous(self, version: DatasetVersion) -> DatasetVersion | None:
        """Return the version before ``version`` of the same dataset, if any."""
        if version.version <= 1:
            return None
        return self.queries.version(version.dataset, version.version - 1)

    def versions(self, dataset: str | None = None, limit: int = 100) -> list[DatasetVersion]:
        """List versions, newest first (of one dataset when named)."""
        if dataset is not None:
            validate_name(dataset, "dataset")
        return self.queries.versions(dataset, limit)

    def read(self, ref: str, columns: list[str] | None = None) -> pa.Table:
        """Read a version's rows (optionally some columns) as an Arrow table.

        Raises:
            InvalidArgumentError: when a requested column does not exist.
        """
        version = self.get(ref)
        if columns is not None:
            missing = sorted(set(columns) - {c.name for c in version.columns})
            if missing:
                raise InvalidArgumentError("columns", f"{version.ref} has no column {missing}")
        self._require_data(version)
        with open_stored(self._blobs, version.blob_digest) as parquet:
            table: pa.Table = parquet.read(columns=columns)
        note_read(snapshot_node(version))  # a running pipeline task's lineage hears of it
        return table

    def iter_batches(self, ref: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream a version's rows in batches, in bounded memory."""
        version = self.get(ref)
        self._require_data(version)
        note_read(snapshot_node(version))
        with open_stored(self._blobs, version.blob_digest) as parquet:
            yield from parquet.iter_batches(batch_size=batch_rows)

    def _require_data(self, version: DatasetVersion) -> None:
        """Refuse to read a version whose data retention deleted (its record stays).

        Raises:
            NotFoundError: naming the version and the day it was purged.
        """
        purged = self.queries.purged_at(version.id)
        if purged is not None:
            raise NotFoundError("dataset data", version.ref,
                                f"it was purged by retention on {purged:%Y-%m-%d}; the "
                                "version's record (hash, profile, lineage) remains")


def _unchanged(latest: DatasetVersion | None, written: _Written,
               parents: tuple[str, ...]) -> DatasetVersion | None:
    """Return the latest version when a snapshot would repeat it (same rows, no new parents).

    Only the latest counts: going back to older rows is a change worth a version (a rollback
    must show as the newest version), and so is the same rows derived from other parents.
    """
    if latest is None or latest.content_hash != written.content_hash:
        return None
    return latest if not parents or set(parents) == set(latest.parents) else None
