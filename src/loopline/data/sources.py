"""Reading what users snapshot — pandas, Arrow, CSV, Parquet, globs, fsspec URLs — as batches.

Every source becomes a stream of Arrow record batches under one schema, read in bounded
memory; a file source also yields the SHA-256 of its own bytes. Bad sources (missing, empty,
malformed, mixed types, unreadable) raise ``InvalidArgumentError`` naming the source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loopline.core.errors import InvalidArgumentError
from loopline.core.redaction import redact_text

FIELD = "source"
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_BLOCK_BYTES = 4 << 20
GLOB_CHARS = set("*?[")


@dataclass(slots=True)
class SourceStream:
    """A source opened for reading: its schema, its batches, and what it was."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    uri: str | None
    file_hashes: list[str] = field(default_factory=list)

    @property
    def source_hash(self) -> str | None:
        """SHA-256 over the files' own bytes (in file order), known once batches are read."""
        if not self.file_hashes:
            return None
        if len(self.file_hashes) == 1:
            return self.file_hashes[0]
        return hashlib.sha256("".join(self.file_hashes).encode()).hexdigest()


def open_source(source: Any, batch_rows: int = 65_536) -> SourceStream:
    """Open ``source`` (DataFrame, Arrow table, path, glob or fsspec URL) as a batch stream.

    Raises:
        InvalidArgumentError: naming the source when it is missing, empty, of an unknown
            format, malformed, or holds a column of mixed types.
    """
    if isinstance(source, pd.DataFrame):
        return _from_table(_arrow_from_pandas(source), batch_rows)
    if isinstance(source, pa.Table):
        return _from_table(source, batch_rows)
    if isinstance(source, pa.RecordBatch):
        return _from_table(pa.Table.from_batches([source]), batch_rows)
    if isinstance(source, str | Path):
        return _from_files(_absolute(str(source)), batch_rows)
    raise InvalidArgumentError(FIELD, f"cannot snapshot a {type(source).__name__}; give a pandas"
                                      " DataFrame, a pyarrow Table, or a CSV/Parquet path or URL")


def _absolute(uri: str) -> str:
    """Local paths become absolute, so the recorded source names one file wherever it ran."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().absolute())


def _arrow_from_pandas(frame: pd.DataFrame) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        column = _column_in_message(str(exc), [str(c) for c in frame.columns])
        where = f"column {column!r}" if column else "a column"
        raise InvalidArgumentError(FIELD, f"{where} mixes types: {exc}") from exc


def _column_in_message(message: str, columns: list[str]) -> str | None:
    for column in columns:
        if f"'{column}'" in message or f"column {column}" in message:
            return column
    return None


def _from_table(table: pa.Table, batch_rows: int) -> SourceStream:
    if table.num_columns == 0:
        raise InvalidArgumentError(FIELD, "the table has no columns")
    return SourceStream(table.schema, iter(table.to_batches(max_chunksize=batch_rows)), None)


def _expand(uri: str) -> tuple[Any, list[str]]:
    try:
        fs, _, paths = fsspec.get_fs_token_paths(uri)
    except (ValueError, ImportError, OSError) as exc:
        raise InvalidArgumentError(FIELD, f"cannot open {redact_text(uri)!r}: "
                                          f"{redact_text(str(exc))}") from exc
    if len(paths) == 1 and fs.isdir(paths[0]):
        paths = sorted(p for p in fs.find(paths[0]) if _format_of(p) is not None)
    if not paths or (not GLOB_CHARS & set(uri) and not fs.exists(paths[0])):
        raise InvalidArgumentError(FIELD, f"{redact_text(uri)!r}: no such file, or the glob "
                                          "matched nothing")
    return fs, sorted(paths)


def _format_of(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _from_files(uri: str, batch_rows: int) -> SourceStream:
    fs, paths = _expand(uri)
    formats = {_format_of(p) for p in paths}
    if None in formats or len(formats) != 1:
        raise InvalidArgumentError(
            FIELD, f"{redact_text(uri)!r}: every file must be CSV "
                   f"({', '.join(CSV_SUFFIXES)}) or Parquet "
                   f"({', '.join(PARQUET_SUFFIXES)}), not a mix")
    reader = _open_csv if formats == {"csv"} else _open_parquet
    with fs.open(paths[0], "rb") as handle:
        schema, _ = reader(handle, paths[0], batch_rows)
    stream = SourceStream(schema, iter(()), redact_text(uri))  # stored and shown: no secrets
    stream.batches = _batches(fs, paths, reader, batch_rows, stream)
    return stream


def _batches(fs: Any, paths: list[str], reader: Any, batch_rows: int,
             stream: SourceStream) -> Iterator[pa.RecordBatch]:
    for path in paths:
        stream.file_hashes.append(_file_hash(fs, path))
        with fs.open(path, "rb") as handle:
            schema, batches = reader(handle, path, batch_rows)
            if not schema.equals(stream.schema, check_metadata=False):
                raise InvalidArgumentError(
                    FIELD, f"{path}: its columns or types differ from the first file's "
                           f"({', '.join(f'{f.name}: {f.type}' for f in stream.schema)})")
            yield from batches


def _file_hash(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _open_csv(handle: Any, path: str, batch_rows: int,
              ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    delimiter = "\t" if ".tsv" in path.lower() else ","
    stream = pa.CompressedInputStream(handle, "gzip") if path.lower().endswith(".gz") else handle
    try:
        reader = pacsv.open_csv(
            stream, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, OSError) as exc:  # OSError: a corrupt gzip stream
        raise InvalidArgumentError(FIELD, f"{path}: {_csv_problem(str(exc))}") from exc
    return reader.schema, _csv_batches(reader, path, batch_rows)


def _csv_batches(reader: Any, path: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        for batch in reader:
            if batch.num_rows:
                yield from _split(batch, batch_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidArgumentError(FIELD, f"{path}: {_csv_problem(str(exc))}") from exc


def _csv_problem(message: str) -> str:
    if "Empty CSV file" in message:
        return "the file is empty"
    if "inflate" in message or "gzip" in message.lower():
        return f"not a readable gzip file ({message.strip()})"
    if "conversion error" in message:
        return (f"a column mixes types ({message.strip()}); its type was inferred from the "
                "first 4 MiB, so convert the file to Parquet with explicit types, or load it "
                "with pandas and snapshot the DataFrame")
    return f"malformed CSV ({message.strip()})"


def _open_parquet(handle: Any, path: str, batch_rows: int,
                  ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        # pre_buffer=False: the default keeps every column chunk read, unbounded for streams
        parquet = pq.ParquetFile(handle, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidArgumentError(FIELD, f"{path}: unreadable Parquet ({exc})") from exc
    if parquet.metadata.num_columns == 0:
        raise InvalidArgumentError(FIELD, f"{path}: the file has no columns")
    return parquet.schema_arrow, _parquet_batches(parquet, path, batch_rows)


def _parquet_batches(parquet: Any, path: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from parquet.iter_batches(batch_size=batch_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidArgumentError(FIELD, f"{path}: unreadable Parquet ({exc})") from exc


def _split(batch: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)
