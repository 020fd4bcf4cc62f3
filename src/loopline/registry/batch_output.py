"""The output file of a batch-scoring run, written atomically: temp file, fsync, rename.

Tables are written to a hidden temporary file beside the target (``.NAME.<random>.tmp``);
``commit`` closes, fsyncs and renames it over the target and fsyncs the folder, so readers
see the whole output or none of it. ``discard`` (after a failure, or always after commit)
removes whatever temporary file remains: a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loopline.artifacts.local import fsync_dir
from loopline.core.errors import AlreadyExistsError, InvalidArgumentError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".parq": "parquet", ".csv": "csv"}


def output_format(output: str | Path, overwrite: bool) -> tuple[Path, str]:
    """Return the absolute output path and its format (``parquet`` or ``csv``).

    Raises:
        InvalidArgumentError: naming ``output`` when it is not a local path, has another
            suffix, names a folder, or its folder does not exist.
        AlreadyExistsError: when the file exists and ``overwrite`` is not set.
    """
    if not isinstance(output, str | Path) or not str(output).strip():
        raise InvalidArgumentError("output", "give the path of a .parquet or .csv file")
    if "://" in str(output):
        raise InvalidArgumentError("output", f"{output!r} must be a local file path")
    path = Path(output).expanduser().absolute()
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError("output", f"{path.name!r} must end in "
                                             f"{', '.join(FORMATS)}")
    if not path.parent.is_dir():
        raise InvalidArgumentError("output", f"the folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise InvalidArgumentError("output", f"{str(path)!r} is a folder")
    if path.exists() and not overwrite:
        raise AlreadyExistsError("output file", str(path))
    return path, fmt


class AtomicOutput:
    """Tables appended to a temporary file that becomes ``target`` only on ``commit``."""

    def __init__(self, target: Path, fmt: str, overwrite: bool) -> None:
        self._target = target
        self._fmt = fmt
        self._overwrite = overwrite
        self._temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        """Append ``table``; the first table fixes the columns and types.

        Raises:
            pyarrow.ArrowException, ValueError, TypeError: when a table does not fit the
                first one's schema (the caller names the chunk).
        """
        if self._writer is None:
            self._schema = table.schema
            self._writer = (pq.ParquetWriter(self._temp, table.schema, compression="zstd")
                            if self._fmt == "parquet"
                            else pacsv.CSVWriter(str(self._temp), table.schema))
        elif self._schema is not None and not table.schema.equals(self._schema):
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def commit(self) -> str:
        """Close, fsync and rename the file over the target; return its SHA-256.

        Raises:
            AlreadyExistsError: when the target appeared meanwhile and overwrite is off.
            InvalidArgumentError: naming ``output`` when nothing was written.
        """
        if self._writer is None:
            raise InvalidArgumentError("output", "nothing was written")
        self._writer.close()
        self._writer = None
        digest = hashlib.sha256()
        with open(self._temp, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
            os.fsync(handle.fileno())
        if self._target.exists() and not self._overwrite:
            raise AlreadyExistsError("output file", str(self._target))
        os.replace(self._temp, self._target)
        fsync_dir(str(self._target.parent))
        return digest.hexdigest()

    def discard(self) -> None:
        """Close and remove the temporary file, if any (a no-op after ``commit``)."""
        if self._writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):  # the file goes anyway
                self._writer.close()
            self._writer = None
        self._temp.unlink(missing_ok=True)
