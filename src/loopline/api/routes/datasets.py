"""``/datasets``, ``/dataset-versions``: list, show, download, upload and validate snapshots.

Reads need ``read``. An upload (a new snapshot) and a validation (a suite as JSON, checked
against a version; its reports are read under ``/validations``) need ``write`` and are
audited as the token's user by the services. A version's rows download as the stored
Parquet bytes (streamed, ``ETag`` = the blob digest). An upload takes Parquet bytes
(``application/octet-stream``): the handler streams them to a temporary folder the server
chooses, counting them against ``max_upload_bytes`` (413 past it), and snapshots the rows
(never a client path, RELIABILITY rule 1).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from loopline.api.auth import Reader, Writer
from loopline.api.errors import ApiError
from loopline.api.pagination import Page, PageRequest, Paging, paginate
from loopline.app import Workspace
from loopline.core.datasets import DatasetVersion
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.names import NAME_PATTERN
from loopline.core.validation import ValidationReport, ValidationRun
from loopline.data.parquet_io import ARROW_ERRORS
from loopline.data.snapshots import SnapshotResult
from loopline.data.validation import Suite

router = APIRouter(tags=["datasets"])

PARQUET_TYPE = "application/vnd.apache.parquet"
DOWNLOAD_CHUNK = 1 << 20
WRITE_CHUNK = 1 << 20
BATCH_ROWS = 65_536
MAX_PARENTS = 64
DatasetName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="A dataset name.")]
VersionNumber = Annotated[str, Path(pattern=r"^([1-9][0-9]{0,8}|latest)$",
                                    description="A version number, or `latest`.")]
VersionId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A version id.")]
RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A validation run id.")]
MAX_RUNS = 1_000


class DatasetSummary(BaseModel):
    """A dataset: its name and how many snapshot versions and appended partitions it has."""

    name: str
    versions: int
    partitions: int


def _window(paging: PageRequest) -> int:
    # Enough rows for the page and one more, so ``paginate`` knows whether a next one exists.
    return paging.offset + paging.limit + 1


@router.get("/datasets", response_model=Page[DatasetSummary])
def list_datasets(ws: Reader, paging: Paging) -> Page[DatasetSummary]:
    """List datasets by name, with their counts of versions and partitions."""
    found = [DatasetSummary(name=name, versions=versions, partitions=partitions)
             for name, versions, partitions in ws.datasets.queries.datasets()]
    return paginate(found, paging)


@router.get("/datasets/{name}/versions", response_model=Page[DatasetVersion])
def list_versions(name: DatasetName, ws: Reader, paging: Paging) -> Page[DatasetVersion]:
    """List the versions of one dataset, newest first (an unknown dataset has none)."""
    return paginate(ws.datasets.versions(name, _window(paging)), paging)


@router.get("/dataset-versions", response_model=Page[DatasetVersion])
def list_all_versions(ws: Reader, paging: Paging,
                      dataset: Annotated[str | None, Query(max_length=128)] = None,
                      ) -> Page[DatasetVersion]:
    """List versions of every dataset (or of ``dataset``), newest first."""
    return paginate(ws.datasets.versions(dataset, _window(paging)), paging)


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
    """List the validation runs of a version, newest first (the latest 1000 at most)."""
    window = min(_window(paging), MAX_RUNS)
    return paginate(ws.validation.history(version_id, window), paging)


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
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}}}})
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
        ApiError: 413 when the body is larger than ``max_upload_bytes``.
    """
    chosen = list(parents or ())
    # Refuse a missing parent before taking gigabytes of body.
    await run_in_threadpool(lambda: [ws.datasets.get(p, field="parents") for p in chosen])
    async with _received(request, request.app.state.options.max_upload_bytes) as body:
        result = await run_in_threadpool(_snapshot, ws, body, name, chosen)
    if not result.created:
        response.status_code = 200
    return result


@asynccontextmanager
async def _received(request: Request, limit: int) -> AsyncIterator[FilePath]:
    """Stream the body into a temporary folder of the server's; yield the file, then clean up.

    Raises:
        ApiError: 413 past ``limit`` bytes; 400 when the client goes away while sending.
    """
    folder = FilePath(await run_in_threadpool(tempfile.mkdtemp, prefix="loopline-upload-"))
    try:
        body = folder / "body.parquet"
        await _stream_to(request, body, limit)
        yield body
    finally:
        await run_in_threadpool(shutil.rmtree, folder, True)


async def _stream_to(request: Request, path: FilePath, limit: int) -> None:
    size = 0
    pending = bytearray()
    with open(path, "xb") as out:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "too_large", f"the body is larger than the limit of "
                                                     f"{limit} bytes", "body")
                pending += chunk
                if len(pending) >= WRITE_CHUNK:  # write on the pool, a MiB at a time
                    await run_in_threadpool(out.write, pending)
                    pending.clear()
        except ClientDisconnect:
            raise ApiError(400, "malformed", "the client went away while sending",
                           "body") from None
        await run_in_threadpool(out.write, pending)


def _to_arrow_file(parquet: FilePath) -> FilePath:
    """Rewrite uploaded Parquet as an Arrow IPC file beside it, batch by batch.

    The IPC file is memory-mapped for the snapshot: its rows reach the service as one table
    without being decoded into memory at once, and the service records no source path (the
    temporary file means nothing to anyone).

    Raises:
        InvalidArgumentError: naming ``body`` when it is not readable Parquet.
    """
    target = parquet.with_suffix(".arrow")
    try:
        with pq.ParquetFile(parquet, pre_buffer=False) as source, \
                pa.OSFile(str(target), "wb") as sink, \
                pa.ipc.new_file(sink, source.schema_arrow) as writer:
            for batch in source.iter_batches(batch_size=BATCH_ROWS):
                writer.write_batch(batch)
    except (*ARROW_ERRORS, OSError) as exc:
        raise InvalidArgumentError("body", f"is not readable Parquet ({exc})") from exc
    return target


def _snapshot(ws: Workspace, body: FilePath, name: str, parents: list[str]) -> SnapshotResult:
    """Snapshot the uploaded rows; a problem with them names ``body``, the source here."""
    arrow = _to_arrow_file(body)
    with pa.memory_map(str(arrow)) as mapped:
        table = pa.ipc.open_file(mapped).read_all()
        try:
            return ws.datasets.snapshot(table, name, parents=parents)
        except InvalidArgumentError as exc:
            if exc.field != "source":
                raise
            raise InvalidArgumentError("body", exc.problem) from exc
