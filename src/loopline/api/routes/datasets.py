"""``/datasets``, ``/dataset-versions``: list, show, download, upload and validate snapshots.

Reads need ``read``. An upload (a new snapshot) and a validation (a suite as JSON, checked
against a version; its reports are read under ``/validations``) need ``write`` and are
audited as the token's user by the services. A version's rows download as the stored
Parquet bytes (streamed, ``ETag`` = the blob digest). An upload takes Parquet bytes
(``application/octet-stream``): the handler streams them to a temporary folder the server
chooses (``api.uploads``; 413 past ``max_upload_bytes``), rewrites them as Arrow batch by
batch, counting what the rows decode to against ``max_decoded_bytes`` (413 past it: a small
compressed body can hold gigabytes of rows), and snapshots the rows (never a client path,
RELIABILITY rule 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path as FilePath
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from starlette.responses import StreamingResponse

from loopline.api.auth import Reader, Writer
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText
from loopline.api.uploads import PARQUET_TYPE, UPLOAD_BODY, received, too_large
from loopline.app import Workspace
from loopline.core.datasets import DatasetVersion
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.names import NAME_PATTERN
from loopline.core.validation import ValidationReport, ValidationRun
from loopline.data.parquet_io import ARROW_ERRORS
from loopline.data.snapshots import SnapshotResult
from loopline.data.validation import Suite

router = APIRouter(tags=["datasets"])

DOWNLOAD_CHUNK = 1 << 20
BATCH_ROWS = 65_536
DECODE_BYTES = 64 << 20  # the most one written batch decodes to (unless it is one row)
MAX_PARENTS = 64
DatasetName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="A dataset name.")]
VersionNumber = Annotated[str, Path(pattern=r"^([1-9][0-9]{0,8}|latest)$",
                                    description="A version number, or `latest`.")]
VersionId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A version id.")]
RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A validation run id.")]
MAX_RUNS = 1_000  # the most validation runs of a version a listing reaches
MAX_VERSIONS = 100_000  # the most dataset versions a listing reaches


class DatasetSummary(BaseModel):
    """A dataset: its name and how many snapshot versions and appended partitions it has."""

    name: str
    versions: int
    partitions: int


@router.get("/datasets", response_model=Page[DatasetSummary])
def list_datasets(ws: Reader, paging: Paging) -> Page[DatasetSummary]:
    """List datasets by name, with their counts of versions and partitions."""
    found = [DatasetSummary(name=name, versions=versions, partitions=partitions)
             for name, versions, partitions in ws.datasets.queries.datasets()]
    return paginate(found, paging)


@router.get("/datasets/{name}/versions", response_model=Page[DatasetVersion])
def list_versions(name: DatasetName, ws: Reader, paging: Paging) -> Page[DatasetVersion]:
    """List the versions of one dataset, newest first (an unknown dataset has none).

    Raises:
        InvalidArgumentError: naming ``cursor`` past the listing's first 100,000 versions.
    """
    return paginate(ws.datasets.versions(name, paging.window(MAX_VERSIONS)), paging)


@router.get("/dataset-versions", response_model=Page[DatasetVersion])
def list_all_versions(ws: Reader, paging: Paging,
                      dataset: Annotated[FilterText | None, Query()] = None,
                      ) -> Page[DatasetVersion]:
    """List versions of every dataset (or of ``dataset``), newest first.

    Raises:
        InvalidArgumentError: naming ``cursor`` past the listing's first 100,000 versions,
            ``dataset`` when it is not a dataset name.
    """
    return paginate(ws.datasets.versions(dataset, paging.window(MAX_VERSIONS)), paging)


@router.get("/dataset-versions/{version_id}", response_model=DatasetVersion)
def show_version_by_id(version_id: VersionId, ws: Reader) -> DatasetVersion:
    """Show the version with this id."""
    found = ws.datasets.queries.by_id(version_id)
    if found is None:
        raise NotFoundError("dataset version", version_id,
                            "list versions with GET /dataset-versions")
    return found


@router.post("/dataset-versions/{version_id}/validations", status_code=201,
             response_model=ValidationReport)
def validate_version(version_id: VersionId, suite: Suite, ws: Writer) -> ValidationReport:
    """Check the version against ``suite`` and store the report, passed or failed (201).

    Raises:
        InvalidArgumentError: naming the column a suite checks that the version lacks.
    """
    return ws.validate_dataset(version_id, suite)


@router.get("/dataset-versions/{version_id}/validations", response_model=Page[ValidationRun])
def list_validations(version_id: VersionId, ws: Reader,
                     paging: Paging) -> Page[ValidationRun]:
    """List the validation runs of a version, newest first (the latest 1000 at most).

    Raises:
        InvalidArgumentError: naming ``cursor`` past the latest 1000.
    """
    return paginate(ws.validation.history(version_id, paging.window(MAX_RUNS)), paging)


@router.get("/validations/{run_id}", response_model=ValidationReport)
def show_validation(run_id: RunId, ws: Reader) -> ValidationReport:
    """Show the stored report of one validation run: every expectation's result."""
    return ws.validation.load(run_id)


@router.get("/datasets/{name}/versions/{version}", response_model=DatasetVersion)
def show_version(name: DatasetName, version: VersionNumber, ws: Reader) -> DatasetVersion:
    """Show one version: rows, columns and their types, profile, source, parents."""
    return ws.datasets.get(f"{name}@{version}")


def _readable(ws: Workspace, version: DatasetVersion) -> None:
    purged = ws.datasets.queries.purged_at(version.id)
    if purged is not None:
        raise NotFoundError("dataset data", version.ref,
                            f"it was purged by retention on {purged:%Y-%m-%d}; the version's "
                            "record (hash, profile, lineage) remains")


@router.get("/datasets/{name}/versions/{version}/data", response_class=StreamingResponse,
            responses={200: {"content": {PARQUET_TYPE: {}},
                             "description": "The version's rows as the stored Parquet file."}})
def download_version(name: DatasetName, version: VersionNumber,
                     ws: Reader) -> StreamingResponse:
    """Stream the version's rows as Parquet: the stored bytes, whose SHA-256 is the ETag.

    Raises:
        NotFoundError: when the version is unknown or retention purged its data.
    """
    found = ws.datasets.get(f"{name}@{version}")
    _readable(ws, found)
    size = ws.artifacts.info(found.blob_digest).size
    stack = ExitStack()
    reader = stack.enter_context(ws.artifacts.open(found.blob_digest))

    def chunks() -> Iterator[bytes]:
        # The verifying reader raises at the end when the bytes do not match their digest;
        # the answer is then cut short of its Content-Length, which the client notices.
        with stack:
            while chunk := reader.read(DOWNLOAD_CHUNK):
                yield chunk

    return StreamingResponse(chunks(), media_type=PARQUET_TYPE, headers={
        "Content-Length": str(size), "ETag": f'"{found.blob_digest}"',
        "Content-Disposition": f'attachment; filename="{found.dataset}@{found.version}.parquet"'})


@router.post("/datasets/{name}/upload", status_code=201, response_model=SnapshotResult,
             responses={200: {"model": SnapshotResult,
                              "description": "The rows repeat the latest version: no new one."}},
             openapi_extra=UPLOAD_BODY)
async def upload_snapshot(
        name: DatasetName, request: Request, response: Response, ws: Writer,
        parents: Annotated[list[str] | None, Query(
            max_length=MAX_PARENTS, description="Versions these rows were derived from, "
                                                "as NAME@VERSION.")] = None,
) -> SnapshotResult:
    """Snapshot the Parquet rows of the body as the next version of ``name`` (201).

    Answers 200 with the latest version when the rows (and parents) repeat it. Async only
    to stream the body; the blocking work runs on the thread pool.

    Raises:
        InvalidArgumentError: naming ``body`` when it is not Parquet with rows, ``parents``
            when one is malformed (422).
        NotFoundError: when a parent does not exist (404).
        ApiError: 413 when the body is larger than ``max_upload_bytes`` or its rows decode
            to more than ``max_decoded_bytes`` (nothing is stored).
    """
    chosen = list(parents or ())
    # Refuse a missing parent before taking gigabytes of body.
    await run_in_threadpool(lambda: [ws.datasets.get(p, field="parents") for p in chosen])
    limit: int = request.app.state.options.max_decoded_bytes
    async with received(request, ws) as body:
        result = await run_in_threadpool(_snapshot, ws, body.path, limit,
                                         (name, chosen))
    if not result.created:
        response.status_code = 200
    return result


def _width_bits(field: pa.Field) -> int:
    try:
        return int(field.type.bit_width)
    except ValueError:  # variable width: at least a 32-bit offset a value (null: nothing)
        return 0 if pa.types.is_null(field.type) else 32


def _check_declared(source: pq.ParquetFile, limit: int) -> None:
    """Refuse a file whose metadata already says its rows decode past ``limit``.

    The row groups' uncompressed sizes count the encoded pages; dictionary and run-length
    encodings hold many rows in few bytes, so the rows times the columns' fixed widths (at
    least a byte a row) count too. Metadata is the sender's word: ``_Decoded`` counts what
    the rows really decode to.

    Raises:
        ApiError: 413 naming ``max_decoded_bytes``.
    """
    metadata = source.metadata
    encoded = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    row = max(1, sum(_width_bits(field) for field in source.schema_arrow) // 8)
    if max(encoded, metadata.num_rows * row) > limit:
        raise too_large(limit, "the rows decode to more", "max_decoded_bytes")


def _expanded(column: pa.Array) -> int:
    """Return the bytes ``column`` takes once a dictionary of strings is decoded."""
    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
    values = pc.sum(lengths).as_py() or 0
    return int(values) + 8 * (len(column) + 1) + len(column) // 8 + 1


class _Decoded:
    """Writes the upload's batches as its own schema says, counted against ``max_decoded_bytes``.

    Strings and bytes are read as dictionaries and measured before they are decoded, so a
    value repeated a million times costs its length once until the count allows it; a
    batch that decodes to more than ``DECODE_BYTES`` is written in halves, so memory stays
    bounded whatever the limit.
    """

    def __init__(self, writer: pa.ipc.RecordBatchFileWriter, schema: pa.Schema,
                 limit: int) -> None:
        self.writer, self.schema, self.limit, self.total = writer, schema, limit, 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Decode ``batch`` to the schema's types and write it, once it fits in the limit.

        Raises:
            ApiError: 413 naming ``max_decoded_bytes`` when the rows so far pass it.
        """
        size = sum(_expanded(column) for column in batch.columns)
        if self.total + size > self.limit:
            raise too_large(self.limit, "the rows decode to more", "max_decoded_bytes")
        if size > DECODE_BYTES and batch.num_rows > 1:
            half = batch.num_rows // 2
            self.write(batch.slice(0, half))
            self.write(batch.slice(half))
            return
        self.total += size
        columns = [column if column.type == field.type else column.cast(field.type)
                   for column, field in zip(batch.columns, self.schema, strict=True)]
        self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))


def _textual(field: pa.Field) -> bool:
    kind = field.type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _to_arrow_file(parquet: FilePath, limit: int) -> FilePath:
    """Rewrite uploaded Parquet as an Arrow IPC file beside it, batch by batch.

    The IPC file is memory-mapped for the snapshot: its rows reach the service as one table
    without being decoded into memory at once, and the service records no source path (the
    temporary file means nothing to anyone). The rows may decode to ``limit`` bytes at most.

    Raises:
        InvalidArgumentError: naming ``body`` when it is not readable Parquet.
        ApiError: 413 naming ``max_decoded_bytes`` when the rows decode past ``limit``.
    """
    target = parquet.with_suffix(".arrow")
    try:
        with pq.ParquetFile(parquet, pre_buffer=False) as described:
            _check_declared(described, limit)
            schema = described.schema_arrow
        textual = [field.name for field in schema if _textual(field)]
        with pq.ParquetFile(parquet, pre_buffer=False, read_dictionary=textual) as source, \
                pa.OSFile(str(target), "wb") as sink, \
                pa.ipc.new_file(sink, schema) as writer:
            decoded = _Decoded(writer, schema, limit)
            for batch in source.iter_batches(batch_size=BATCH_ROWS):
                decoded.write(batch)
    except (*ARROW_ERRORS, OSError) as exc:
        raise InvalidArgumentError("body", f"is not readable Parquet ({exc})") from exc
    return target


def _snapshot(ws: Workspace, body: FilePath, limit: int,
              target: tuple[str, list[str]]) -> SnapshotResult:
    """Snapshot the uploaded rows as ``target`` (name, parents), decoding ``limit`` at most.

    A problem with the rows names ``body``, the source here.
    """
    name, parents = target
    arrow = _to_arrow_file(body, limit)
    with pa.memory_map(str(arrow)) as mapped:
        table = pa.ipc.open_file(mapped).read_all()
        try:
            return ws.datasets.snapshot(table, name, parents=parents)
        except InvalidArgumentError as exc:
            if exc.field != "source":
                raise
            raise InvalidArgumentError("body", exc.problem) from exc
