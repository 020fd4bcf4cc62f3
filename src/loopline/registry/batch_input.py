"""The input of a batch-scoring run, opened as a stream of Arrow batches and cut into chunks.

An input is a DataFrame or Arrow table, a CSV/Parquet file, glob, folder or fsspec URL
(through ``data.sources.open_source``), or a dataset snapshot ``dataset:NAME[@N]`` read from
the artifact store. Reading is streamed: memory holds a batch or two, never the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from loopline.core.datasets import DatasetRef
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.ports import BlobStore
from loopline.data.parquet_io import open_stored
from loopline.data.sources import PARQUET_SUFFIXES, open_source
from loopline.store import MetadataStore
from loopline.store.datasets import DatasetQueries

DATASET_PREFIX = "dataset:"


@dataclass(slots=True)
class ScoreInput:
    """The input opened: its column names, its batches, what it is, and its rows if known."""

    names: tuple[str, ...]
    batches: Iterator[pa.RecordBatch]
    described: str
    total: int | None
    lineage_node: tuple[str, str] | None  # (kind, ref) of what was read, for lineage


def open_input(store: MetadataStore, blobs: BlobStore, source: Any, rows: int) -> ScoreInput:
    """Open ``source`` (see the module docstring) as a batch stream.

    Raises:
        InvalidArgumentError: naming ``input`` when it is missing, empty or unreadable.
        NotFoundError: when a snapshot does not exist or its data was purged.
    """
    if isinstance(source, str) and source.startswith(DATASET_PREFIX):
        return _open_snapshot(store, blobs, source[len(DATASET_PREFIX):], rows)
    try:
        stream = open_source(source, rows)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError("input", exc.problem) from exc
    total = len(source) if hasattr(source, "__len__") and not isinstance(source, str | Path) \
        else _parquet_rows(stream.uri)
    node = None if stream.uri is None else ("source", stream.uri)
    return ScoreInput(tuple(stream.schema.names), stream.batches,
                      stream.uri or type(source).__name__, total, node)


def _open_snapshot(store: MetadataStore, blobs: BlobStore, text: str, rows: int) -> ScoreInput:
    ref = DatasetRef.parse(text, "input")
    queries = DatasetQueries(store.engine)
    version = queries.version(ref.name, ref.version)
    if version is None:
        raise NotFoundError("dataset", str(ref), "list datasets with `loopline data list`")
    if (purged := queries.purged_at(version.id)) is not None:
        raise NotFoundError("dataset data", version.ref,
                            f"it was purged by retention on {purged:%Y-%m-%d}")

    def batches() -> Iterator[pa.RecordBatch]:
        with open_stored(blobs, version.blob_digest) as parquet:
            yield from parquet.iter_batches(batch_size=rows)

    names = tuple(column.name for column in version.columns)
    return ScoreInput(names, batches(), f"{DATASET_PREFIX}{version.ref}", version.rows,
                      ("dataset_snapshot", version.ref))


def _parquet_rows(uri: str | None) -> int | None:
    """Count a local Parquet input's rows from its footers, or None when not cheap to know."""
    if uri is None or "://" in uri or not uri.lower().endswith(PARQUET_SUFFIXES):
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(uri).metadata.num_rows)
    except (OSError, pa.ArrowException):
        return None


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Yield tables of exactly ``rows`` rows (the last may be shorter) from ``batches``."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, held = [b for b in rest.to_batches() if b.num_rows], rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)



def named_input(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Pass batches on, naming ``input`` in a read error that arrives mid-stream.

    Raises:
        InvalidArgumentError: naming ``input`` when a later file or block is unreadable.
    """
    try:
        yield from batches
    except InvalidArgumentError as exc:
        if exc.field == "input":
            raise
        raise InvalidArgumentError("input", exc.problem) from exc
