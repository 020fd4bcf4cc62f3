"""Codecs for task outputs that are data: DataFrames, Arrow tables, NumPy arrays and files.

Each codec names the ``kind`` kept in the output record and the classes it takes (by module
and name, so nothing imports pandas or pyarrow until a value needs it), writes a value to the
artifact store and reads it back. Encoding is deterministic (the same value gives the same
bytes, so the same digest and cache keys), and nothing is ever unpickled: Parquet, Arrow IPC,
and ``.npy`` read with ``allow_pickle=False``.

Also here: which return annotations a task can have, checked when a plan is built.

    TABLE        pandas.DataFrame → Parquet
    ARROW_TABLE  pyarrow.Table    → Arrow IPC stream
    NDARRAY      numpy.ndarray    → .npy (no object dtypes)
    FILE         pathlib.Path     → the file's bytes; read back as a read-only local copy
"""

from __future__ import annotations

import atexit
import collections.abc
import io
import os
import shutil
import stat
import sys
import tempfile
import threading
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol

from loopline.artifacts import ContentAddressedStore
from loopline.core.canonical import is_digest
from loopline.core.errors import IntegrityError, InvalidArgumentError, NotFoundError

ClassRef = tuple[str, str]  # (module, class name): looked up only once the module is loaded


class OutputCodec(Protocol):
    """Stores one family of task outputs in the artifact store and reads them back."""

    @property
    def kind(self) -> str:
        """The ``kind`` written in the output record."""
        ...

    @property
    def types(self) -> tuple[ClassRef, ...]:
        """The classes this codec stores (and a return annotation may name)."""
        ...

    def accepts(self, value: Any) -> bool:
        """Tell whether ``value`` is one this codec stores."""
        ...

    def store(self, key: str, value: Any, blobs: ContentAddressedStore) -> dict[str, Any]:
        """Put ``value`` in ``blobs``; return the output record of task ``key``."""
        ...

    def load(self, record: Mapping[str, Any], blobs: ContentAddressedStore) -> Any:
        """Return the value ``record`` stands for, read and verified from ``blobs``."""
        ...


def loaded_classes(refs: tuple[ClassRef, ...]) -> tuple[type, ...]:
    """Return the classes named by ``refs`` whose modules are already imported."""
    found = (getattr(sys.modules.get(module), name, None) for module, name in refs)
    return tuple(cls for cls in found if isinstance(cls, type))


def record_digest(record: Mapping[str, Any]) -> str:
    """Return the record's digest, checked to be a SHA-256 (it may name a folder).

    Raises:
        IntegrityError: when the record holds no well-formed digest.
    """
    digest = record.get("digest")
    if not isinstance(digest, str) or not is_digest(digest):
        raise IntegrityError(f"task output record has no valid digest: {digest!r}")
    return digest


@dataclass(frozen=True, slots=True)
class BytesCodec:
    """A codec whose values encode to bytes in memory: ``encode`` and ``decode`` functions."""

    kind: str
    types: tuple[ClassRef, ...]
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]

    def accepts(self, value: Any) -> bool:
        """Tell whether ``value`` is an instance of one of this codec's classes."""
        return isinstance(value, loaded_classes(self.types))

    def store(self, key: str, value: Any, blobs: ContentAddressedStore) -> dict[str, Any]:
        """Encode ``value`` and put it in ``blobs``.

        Raises:
            InvalidArgumentError: naming task ``key``'s output when the value cannot be encoded.
        """
        try:
            data = self.encode(value)
        except (ValueError, TypeError, NotImplementedError) as exc:  # pyarrow's derive these
            raise InvalidArgumentError(
                f"task {key!r} output",
                f"is a {type(value).__name__} that cannot be stored: {exc}",
            ) from exc
        info = blobs.put_bytes(data)
        return {"kind": self.kind, "digest": info.digest, "size": info.size}

    def load(self, record: Mapping[str, Any], blobs: ContentAddressedStore) -> Any:
        """Read the record's verified bytes and decode them.

        Raises:
            IntegrityError: when the bytes fail verification or do not decode.
            NotFoundError: when the artifact is no longer stored.
        """
        data = blobs.get_bytes(record_digest(record))
        try:
            return self.decode(data)
        except (ValueError, TypeError, NotImplementedError, OSError) as exc:
            raise IntegrityError(f"stored {self.kind} output {record['digest']} cannot be "
                                 f"read: {exc}") from exc


# -- tables ---------------------------------------------------------------------------------

# Written out in full so a pyarrow upgrade changing a default does not change the bytes.
PARQUET_OPTIONS: Mapping[str, Any] = {
    "compression": "zstd", "version": "2.6", "use_dictionary": True, "write_statistics": True,
    "data_page_version": "1.0", "store_schema": True,
}


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return bytes(sink.getvalue().to_pybytes())


def encode_frame(value: Any) -> bytes:
    """Return a DataFrame as Parquet; a RangeIndex is kept as metadata, other indexes as columns.

    Raises:
        ValueError, TypeError: when a column holds Python objects Arrow cannot type.
    """
    import pyarrow as pa

    return _parquet_bytes(pa.Table.from_pandas(value, preserve_index=None))


def decode_frame(data: bytes) -> Any:
    """Return the DataFrame stored as Parquet ``data``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data)).to_pandas()


def encode_arrow(value: Any) -> bytes:
    """Return an Arrow table as an Arrow IPC stream (one batch, so chunking does not matter)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, value.schema, options=options) as writer:
        writer.write_table(value.combine_chunks())
    return bytes(sink.getvalue().to_pybytes())


def decode_arrow(data: bytes) -> Any:
    """Return the Arrow table stored as an IPC stream."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


# -- arrays ---------------------------------------------------------------------------------

def encode_array(value: Any) -> bytes:
    """Return a NumPy array as ``.npy`` bytes, in C order so the layout does not change them.

    Raises:
        ValueError: for object (or object-holding) dtypes and masked arrays.
    """
    import numpy as np

    if isinstance(value, np.ma.MaskedArray):
        raise ValueError("a masked array would lose its mask; return the data and the mask "
                         "as two arrays, or a DataFrame")
    if value.dtype.hasobject:
        raise ValueError(f"its dtype is {value.dtype}, and object arrays cannot be stored "
                         "without pickle; convert it to a numeric or string dtype, or return "
                         "a DataFrame")
    array = np.asarray(value)
    if not array.flags.c_contiguous:
        array = np.array(array, order="C")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> Any:
    """Return the array in ``.npy`` ``data``; never unpickles (object dtypes are refused).

    Raises:
        ValueError: when the data is not ``.npy`` or holds an object array.
    """
    import numpy as np

    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


TABLE = BytesCodec("table", (("pandas", "DataFrame"),), encode_frame, decode_frame)
ARROW_TABLE = BytesCodec("arrow_table", (("pyarrow", "Table"),), encode_arrow, decode_arrow)
NDARRAY = BytesCodec("ndarray", (("numpy", "ndarray"),), encode_array, decode_array)


# -- files ----------------------------------------------------------------------------------

def _checked_name(name: object) -> str:
    unsafe = not isinstance(name, str) or name in ("", ".", "..") or "\0" in name or any(
        sep in name for sep in (os.sep, os.altsep) if sep)
    if unsafe or len(str(name).encode("utf-8", "surrogateescape")) > 255:
        raise IntegrityError(f"task output record names an unsafe file name {name!r}")
    return str(name)


class _FileCache:
    """The folder of read-only materialised file outputs of this process, removed at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: dict[int, Path] = {}  # by process id: a forked child makes its own

    def root(self) -> Path:
        """Return the folder, creating it (private to this user) on first use."""
        with self._lock:
            root = self._roots.get(os.getpid())
            if root is None or not root.is_dir():
                root = Path(tempfile.mkdtemp(prefix="loopline-task-files-"))
                self._roots[os.getpid()] = root
                atexit.register(shutil.rmtree, root, ignore_errors=True)
            return root


FILE_CACHE = _FileCache()


class FileCodec:
    """A ``pathlib`` path to a regular file: stored by content, read back as a local copy."""

    kind = "file"
    types: tuple[ClassRef, ...] = (("pathlib", "PurePath"),)

    def accepts(self, value: Any) -> bool:
        """Tell whether ``value`` is a ``pathlib`` path."""
        return isinstance(value, PurePath)

    def store(self, key: str, value: Any, blobs: ContentAddressedStore) -> dict[str, Any]:
        """Stream the file (a symlink's target) into ``blobs``, keeping the path's file name.

        Raises:
            InvalidArgumentError: naming task ``key``'s output when the path is missing or
                not a regular file.
        """
        field, path = f"task {key!r} output", Path(value)
        try:
            resolved = path.resolve(strict=True)
            if not stat.S_ISREG(resolved.stat().st_mode):
                raise InvalidArgumentError(field, f"is the path {str(path)!r}, which is not a "
                                                  "regular file; return the path of one file "
                                                  "(pack a folder into an archive first)")
            info = blobs.put_file(resolved)
        except (FileNotFoundError, NotFoundError) as exc:
            raise InvalidArgumentError(field, f"is the path {str(path)!r}, where there is no "
                                              "file; return the path of a file the task "
                                              "wrote") from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            raise InvalidArgumentError(field, f"is the path {str(path)!r}, which cannot be "
                                              f"read: {exc}") from exc
        return {"kind": self.kind, "digest": info.digest, "size": info.size,
                "name": path.name or resolved.name}

    def load(self, record: Mapping[str, Any], blobs: ContentAddressedStore) -> Path:
        """Return a read-only copy of the file under this process's cache folder.

        The copy is verified by the store as it is written and appears atomically; a copy
        already made by this process is reused.

        Raises:
            IntegrityError: when the record is malformed or the bytes fail verification.
            NotFoundError: when the artifact is no longer stored.
        """
        digest, name = record_digest(record), _checked_name(record.get("name"))
        folder = FILE_CACHE.root() / digest
        target = folder / name
        if target.is_file() and target.stat().st_size == record.get("size"):
            return target
        folder.mkdir(exist_ok=True)
        temp = folder / f".{uuid.uuid4().hex}.part"
        try:
            blobs.get_to_file(digest, temp)
            temp.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return target


FILE = FileCodec()
CODECS: tuple[OutputCodec, ...] = (TABLE, ARROW_TABLE, NDARRAY, FILE)
DATA_KINDS = frozenset(codec.kind for codec in CODECS)


def codec_for(value: Any) -> OutputCodec | None:
    """Return the codec that stores ``value``, or None when no data codec does."""
    return next((codec for codec in CODECS if codec.accepts(value)), None)


def codec_named(kind: object) -> OutputCodec | None:
    """Return the codec whose records carry ``kind``, or None."""
    return next((codec for codec in CODECS if codec.kind == kind), None)


# -- return annotations ---------------------------------------------------------------------

_SCALARS: tuple[type, ...] = (str, int, float, bool, type(None))
_JSON: tuple[type, ...] = (*_SCALARS, list, tuple, dict)
_RAW: tuple[type, ...] = (bytes, bytearray, memoryview)
_UNIONS = (typing.Union, types.UnionType)


def _related(cls: type, concrete: tuple[type, ...]) -> bool:
    """Tell whether some instance of ``cls`` could be an instance of one of ``concrete``."""
    try:
        return issubclass(cls, concrete) or any(issubclass(c, cls) for c in concrete)
    except TypeError:  # e.g. a protocol that is not runtime-checkable: unknown, so allowed
        return True


def _args_fit(cls: type, args: tuple[Any, ...]) -> bool:
    """Tell whether a container's type arguments are JSON (keys: JSON scalars)."""
    items = [arg for arg in args if arg is not Ellipsis and arg != ()]
    if issubclass(cls, collections.abc.Mapping) and len(items) == 2:
        return _fits(items[0], _SCALARS) and _fits(items[1], _JSON)
    return all(_fits(item, _JSON) for item in items)


def _fits(hint: Any, concrete: tuple[type, ...], data: tuple[type, ...] = ()) -> bool:
    """Tell whether a value of type ``hint`` may be one of ``concrete``.

    A container's items must be JSON; the type arguments of a ``data`` class (an ndarray's
    dtype, say) are not items, and are not checked.
    """
    hint = getattr(hint, "__supertype__", hint)  # a NewType
    if hint is None:
        hint = type(None)
    if hint is Any or isinstance(hint, typing.TypeVar | typing.ForwardRef | str):
        return True  # unknown here: checked when the task returns
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        return all(_fits(arg, concrete, data) for arg in args)
    if origin is typing.Literal:
        return all(isinstance(arg, concrete) for arg in args)
    if origin is typing.Annotated:
        return _fits(args[0], concrete, data)
    cls = origin if origin is not None else hint
    if not isinstance(cls, type):
        return True  # a special form typing does not model as a class (NoReturn, ...)
    if not _related(cls, concrete):
        return False
    container = _related(cls, _JSON) and not (data and _related(cls, data))
    return not (args and container) or _args_fit(cls, args)


def storable_annotation(hint: Any) -> bool:
    """Tell whether a task annotated to return ``hint`` may return a value it can store.

    Only what can never be stored is refused: bytes, JSON values (within containers too),
    and the data codecs' classes (at the top level) are accepted, and so are ``Any``,
    ``object``, abstract types a storable value may satisfy (``Sequence``, ``Mapping``,
    ``Iterable``), ``TypedDict``, unions and optionals of storable types, and anything this
    check cannot judge (type variables, forward references).
    """
    data = tuple(cls for codec in CODECS for cls in loaded_classes(codec.types))
    return _fits(hint, (*_JSON, *_RAW, *data), data)
