"""``client.datasets``: the workspace's ``DatasetService`` over HTTP.

A snapshot reads its source here, as the local service does (DataFrame, Arrow table, CSV
or Parquet path, glob or fsspec URL), writes the rows to a temporary Parquet file and
uploads it; the server snapshots the rows. Reads download the stored Parquet, check its
SHA-256 against the version's ``blob_digest`` and read it here, so they return the same
Arrow tables. Both stream through temporary files, never holding the bytes in memory.
``RemoteValidation`` is ``Workspace.validation`` with ``Workspace.validate_dataset``.
"""

from __future__ import annotations

import builtins
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from loopline.client.transport import Transport, decode, segment
from loopline.core.datasets import DatasetRef, DatasetVersion
from loopline.core.errors import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.core.names import validate_name
from loopline.core.validation import ValidationReport, ValidationRun
from loopline.data.parquet_io import ParquetSink
from loopline.data.snapshots import Progress, SnapshotResult
from loopline.data.sources import open_source
from loopline.data.validation import Suite

__all__ = ["RemoteDatasets", "RemoteValidation"]

MAX_RUNS = 1_000
_VERSION_ID = re.compile(r"[0-9a-f]{32}")
PARQUET_TYPE = "application/vnd.apache.parquet"


def _download(transport: Transport, path: str, target: Path, digest: str) -> None:
    """GET ``path``'s bytes into ``target``, checking their SHA-256 is ``digest``."""
    if transport.download(path, target, PARQUET_TYPE) != digest:
        raise IntegrityError(f"the rows downloaded from {path} do not match their digest "
                             f"{digest}: the transfer or the stored object is damaged")


@contextmanager
def _temporary_parquet(prefix: str) -> Iterator[Path]:
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=".parquet")
    os.close(handle)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


class RemoteDatasets:
    """Snapshots, versions and reads of named datasets, as ``Workspace.datasets`` does."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def snapshot(self, source: Any, name: str, *, parents: Sequence[str] = (),
                 progress: Progress | None = None) -> SnapshotResult:
        """Snapshot ``source`` as the next version of ``name``. See ``DatasetService.snapshot``.

        ``source`` is read here (what the local service reads); its rows are uploaded as
        Parquet, so the server records no ``source_uri``/``source_hash`` for a file.
        ``progress`` hears the rows read so far.

        Raises:
            InvalidArgumentError: naming ``name``, ``parents`` or ``source`` (``body`` when
                the server refuses the rows).
            NotFoundError: when a parent does not exist.
            AccessDeniedError: when the token's user may not write.
        """
        validate_name(name, "name")
        with _temporary_parquet("loopline-upload-") as file:
            if self._write(source, file, progress) == 0:
                raise InvalidArgumentError("source",
                                           "it has no rows; a snapshot needs at least one")
            answer = self._http.upload(f"/datasets/{segment(name)}/upload", file,
                             {"parents": list(parents)})
        return decode(SnapshotResult, answer)

    @staticmethod
    def _write(source: Any, file: Path, progress: Progress | None) -> int:
        stream = open_source(source)
        sink = ParquetSink(stream.schema, folder=str(file.parent))
        try:
            for batch in stream.batches:
                sink.write(batch)
                if progress is not None:
                    progress(sink.rows)
            os.replace(sink.close(), file)
        except BaseException:
            sink.discard()
            raise
        return sink.rows

    def get(self, ref: str, field: str = "dataset") -> DatasetVersion:
        """Return the version ``name``, ``name@N``, ``name@latest`` or an id names.

        See ``DatasetService.get``.

        Raises:
            InvalidArgumentError: naming ``field`` when the reference is malformed.
            NotFoundError: when there is no such dataset or version.
        """
        if _VERSION_ID.fullmatch(ref):
            try:
                return decode(DatasetVersion,
                              self._http.get(f"/dataset-versions/{segment(ref)}"))
            except NotFoundError:
                pass  # a 32-character dataset name, as the local service falls back to
        parsed = DatasetRef.parse(ref, field)
        version = "latest" if parsed.version is None else str(parsed.version)
        return decode(DatasetVersion, self._http.get(
            f"/datasets/{segment(parsed.name)}/versions/{version}"))

    def previous(self, version: DatasetVersion) -> DatasetVersion | None:
        """Return the version before ``version`` of the same dataset, if any."""
        if version.version <= 1:
            return None
        try:
            return self.get(f"{version.dataset}@{version.version - 1}")
        except NotFoundError:
            return None

    def versions(self, dataset: str | None = None,
                 limit: int = 100) -> builtins.list[DatasetVersion]:
        """List versions, newest first (of one dataset when named)."""
        if dataset is None:
            items = self._http.first_items("/dataset-versions", None, limit)
        else:
            validate_name(dataset, "dataset")
            items = self._http.first_items(f"/datasets/{segment(dataset)}/versions", None,
                                limit)
        return [decode(DatasetVersion, item) for item in items]

    def datasets(self) -> builtins.list[tuple[str, int, int]]:
        """List (name, versions, partitions) of every dataset by name.

        Mirrors ``DatasetService.queries.datasets()``.
        """
        return [(str(item["name"]), int(item["versions"]), int(item["partitions"]))
                for item in self._http.items("/datasets")]

    def read(self, ref: str, columns: builtins.list[str] | None = None) -> pa.Table:
        """Read a version's rows (optionally some columns) as an Arrow table.

        Raises:
            InvalidArgumentError: when a requested column does not exist.
            NotFoundError: when the version is unknown or its data was purged.
            IntegrityError: when the downloaded bytes do not match the version's digest.
        """
        version = self.get(ref)
        if columns is not None:
            missing = sorted(set(columns) - {c.name for c in version.columns})
            if missing:
                raise InvalidArgumentError("columns", f"{version.ref} has no column {missing}")
        with self._downloaded(version) as file:
            table: pa.Table = pq.ParquetFile(str(file), pre_buffer=False).read(columns=columns)
        return table

    def iter_batches(self, ref: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream a version's rows in batches (downloaded to a temporary file first)."""
        version = self.get(ref)
        with self._downloaded(version) as file:
            yield from pq.ParquetFile(str(file), pre_buffer=False).iter_batches(
                batch_size=batch_rows)

    @contextmanager
    def _downloaded(self, version: DatasetVersion) -> Iterator[Path]:
        with _temporary_parquet("loopline-read-") as file:
            _download(self._http, f"/datasets/{segment(version.dataset)}/versions/"
                                  f"{version.version}/data", file, version.blob_digest)
            yield file


class RemoteValidation:
    """Validation runs of dataset versions, as ``Workspace.validation`` lists and loads them.

    ``validate_dataset`` is ``Workspace.validate_dataset``: the suite is sent as JSON and
    checked on the server, which stores the report as the token's user.
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self._datasets = RemoteDatasets(transport)

    def validate_dataset(self, ref: str, suite: Suite) -> ValidationReport:
        """Check a dataset version against ``suite`` and store the result.

        Raises:
            InvalidArgumentError: naming a column the suite checks that the version lacks.
            NotFoundError: when there is no such version.
            AccessDeniedError: when the token's user may not write.
        """
        version = self._datasets.get(ref)
        return decode(ValidationReport, self._http.post(
            f"/dataset-versions/{segment(version.id)}/validations",
            suite.model_dump(mode="json")))

    def history(self, version_id: str, limit: int = 100) -> builtins.list[ValidationRun]:
        """List the validation runs of a dataset version, newest first.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        if not 1 <= limit <= MAX_RUNS:
            raise InvalidArgumentError("limit", f"must be between 1 and {MAX_RUNS}")
        items = self._http.first_items(f"/dataset-versions/{segment(version_id)}/validations",
                            None, limit)
        return [decode(ValidationRun, item) for item in items]

    def load(self, run_id: str) -> ValidationReport:
        """Return the stored report of a validation run.

        Raises:
            NotFoundError: when there is no run with this id.
        """
        return decode(ValidationReport, self._http.get(f"/validations/{segment(run_id)}"))
