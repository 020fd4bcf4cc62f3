"""Task outputs as stored records, and the content-derived cache key of a task call.

An output is stored inline when it is a small JSON value, in the artifact store (by digest)
when it is bytes, a large JSON value or data (a DataFrame, Arrow table, NumPy array or file:
see ``codecs.py``). Downstream tasks always receive the value read back from the record
(tuples arrive as lists, files as read-only local copies), so a fresh run and a resumed one
see the same thing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterator, Mapping
from typing import Any

from loopline.artifacts import ContentAddressedStore
from loopline.core.canonical import canonical_json, hash_canonical, sha256_hex
from loopline.core.errors import IntegrityError, InvalidArgumentError
from loopline.pipelines.codecs import DATA_KINDS, codec_for, codec_named
from loopline.pipelines.graph import Node, map_structure

INLINE_LIMIT = 64 * 1024
JSON, JSON_ARTIFACT, BYTES = "json", "json_artifact", "bytes"
ARTIFACT_KINDS = frozenset({JSON_ARTIFACT, BYTES}) | DATA_KINDS  # records with a "digest"


def encode_output(key: str, value: Any, blobs: ContentAddressedStore,
                  inline_limit: int = INLINE_LIMIT) -> dict[str, Any]:
    """Return the stored record of task ``key``'s output, putting large values in ``blobs``.

    Bytes and data (tables, arrays, files) always go to the artifact store; JSON values stay
    inline up to ``inline_limit`` bytes of canonical JSON.

    Raises:
        InvalidArgumentError: naming the task when the output is neither bytes, data nor JSON,
            or is data that cannot be stored (an object array, a path to no file).
    """
    if isinstance(value, bytes | bytearray | memoryview):
        info = blobs.put_bytes(bytes(value))
        return {"kind": BYTES, "digest": info.digest, "size": info.size}
    codec = codec_for(value)
    if codec is not None:
        return codec.store(key, value, blobs)
    try:
        text = canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"task {key!r} output", f"must be bytes, a JSON value, a DataFrame, an Arrow "
            f"table, a NumPy array or a file path (got {type(value).__name__}: {exc}); "
            "store other objects as bytes") from exc
    data = text.encode("utf-8")
    if len(data) <= inline_limit:
        return {"kind": JSON, "value": json.loads(text)}
    info = blobs.put_bytes(data)
    return {"kind": JSON_ARTIFACT, "digest": info.digest, "size": info.size}


def decode_output(record: Mapping[str, Any], blobs: ContentAddressedStore) -> Any:
    """Return the value a stored output record stands for.

    Raises:
        IntegrityError: when the record is malformed or its blob fails verification.
    """
    kind = record.get("kind")
    if kind == JSON:
        return record.get("value")
    if kind == BYTES:
        return blobs.get_bytes(str(record["digest"]))
    if kind == JSON_ARTIFACT:
        return json.loads(blobs.get_bytes(str(record["digest"])).decode("utf-8"))
    codec = codec_named(kind)
    if codec is not None:
        return codec.load(record, blobs)
    raise IntegrityError(f"unknown task output record kind {kind!r}")


def content_hash(record: Mapping[str, Any]) -> str:
    """Return the hash identifying an output's content (what a cache key depends on).

    Data outputs count by kind and digest (a DataFrame and an Arrow table with the same bytes
    are different inputs), files by their name too: the task reading one sees it.
    """
    kind = record.get("kind")
    if kind == BYTES:
        return f"bytes:{record['digest']}"
    if kind == JSON_ARTIFACT:
        return f"json:{record['digest']}"  # the digest of the canonical JSON text
    if kind in DATA_KINDS:
        name = record.get("name")
        return f"{kind}:{record['digest']}" + (f":{name}" if name is not None else "")
    return f"json:{hash_canonical(record.get('value'))}"


def artifact_digest(record: Mapping[str, Any] | None) -> str | None:
    """Return the digest of the artifact an output record points at, or None when inline."""
    if record is not None and record.get("kind") in ARTIFACT_KINDS:
        return str(record["digest"])
    return None


def outputs_available(record: Mapping[str, Any], blobs: ContentAddressedStore) -> bool:
    """Tell whether every artifact an output record points at is still stored.

    A command task's inline output lists the files it wrote (``{"files": {path: {"digest"``
    ...); those must be stored too.
    """
    digest = artifact_digest(record)
    if digest is not None:
        return bool(blobs.exists(digest))
    value = record.get("value")
    files = value.get("files") if isinstance(value, dict) and "exit_code" in value else None
    if isinstance(files, dict):
        return all(isinstance(info, dict) and blobs.exists(str(info.get("digest")))
                   for info in files.values())
    return True


def _source_hash(fn: Any) -> str:
    identity = getattr(fn, "cache_identity", None)
    if callable(identity):  # a command task: its command line, environment and folder
        return sha256_hex(f"identity:{identity()}".encode())
    try:
        return sha256_hex(inspect.getsource(fn).encode("utf-8"))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        digest = hashlib.sha256(getattr(fn, "__qualname__", repr(fn)).encode("utf-8"))
        if code is not None:
            digest.update(code.co_code)
            digest.update(repr(code.co_consts).encode("utf-8"))
        return digest.hexdigest()


IMMUTABLE = (str, int, float, bool, bytes, tuple, frozenset, type(None))


def _value_hash(value: Any) -> str:
    """Hash what a task reads from a global or a closure: constants by value, code by source.

    Mutable containers (lists, dicts) count by type only: tasks often collect into them, and
    their contents at call time are not what the task's result depends on.
    """
    if isinstance(value, IMMUTABLE):
        try:
            plain = sorted(value, key=repr) if isinstance(value, frozenset) else value
            return "value:" + hash_canonical(list(plain) if isinstance(plain, tuple | list)
                                             else plain)
        except (TypeError, ValueError):
            return "value:" + sha256_hex(repr(value).encode("utf-8"))
    if inspect.isfunction(value) or inspect.ismethod(value):
        return "code:" + _source_hash(value)
    inner = getattr(value, "fn", None)  # another task definition
    if callable(inner):
        return "code:" + _source_hash(inner)
    return "type:" + type(value).__qualname__  # modules, classes, clients: by kind only


def code_hash(node: Node) -> str:
    """Return the SHA-256 of the task's source and of the globals and closure values it reads.

    A constant or helper the task uses changes its cache key when it changes; objects that
    are neither data nor functions (modules, clients) count by type only.
    """
    fn = node.task.fn
    parts = {"source": _source_hash(fn)}
    code = getattr(fn, "__code__", None)
    namespace = getattr(fn, "__globals__", {})
    for name in sorted(set(getattr(code, "co_names", ())) & set(namespace)):
        parts[f"global:{name}"] = _value_hash(namespace[name])
    cells = getattr(fn, "__closure__", None) or ()
    for name, cell in zip(getattr(code, "co_freevars", ()), cells, strict=False):
        try:
            parts[f"closure:{name}"] = _value_hash(cell.cell_contents)
        except ValueError:  # an empty cell
            parts[f"closure:{name}"] = "empty"
    return hash_canonical(parts)


def cache_key(node: Node, inputs: Mapping[str, Mapping[str, Any]],
              code_hashes: dict[str, str] | None = None) -> str:
    """Return the SHA-256 over the task's code, literal arguments and inputs' content.

    ``code_hashes`` memoises the code hash per task name for the length of one run (reading
    a function's source is the slow part, and a run's code does not change under it).
    """
    arguments = map_structure((list(node.args), dict(node.kwargs)),
                              lambda future: {"$future": future.key})
    if code_hashes is None:
        code = code_hash(node)
    else:
        memo = f"{node.task.name}:{id(node.task)}"
        code = code_hashes.get(memo) or code_hashes.setdefault(memo, code_hash(node))
    return hash_canonical({
        "task": node.task.name, "code": code, "arguments": arguments,
        "inputs": {key: content_hash(inputs[key]) for key in node.upstream},
    })


def resolve_arguments(node: Node, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Return the node's arguments with each future replaced by its task's output value."""
    args = map_structure(list(node.args), lambda future: values[future.key])
    kwargs = map_structure(dict(node.kwargs), lambda future: values[future.key])
    return args, kwargs


class LazyOutputs(Mapping[str, Any]):
    """A run's outputs by task key, read from the artifact store only when looked up.

    The driver of a process or Ray run never holds every task's data at once; each value is
    read (and verified) on first access and kept.
    """

    def __init__(self, records: Mapping[str, Mapping[str, Any]],
                 blobs: ContentAddressedStore) -> None:
        """Keep the records; check every artifact they point at is still stored.

        Raises:
            IntegrityError: naming the task whose output is gone from the artifact store.
        """
        missing = [key for key, record in records.items()
                   if not outputs_available(record, blobs)]
        if missing:
            raise IntegrityError(f"the outputs of {', '.join(sorted(missing))} are gone from "
                                 "the artifact store")
        self._records = dict(records)
        self._blobs = blobs
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            self._values[key] = decode_output(self._records[key], self._blobs)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def record(self, key: str) -> Mapping[str, Any]:
        """Return the stored output record of task ``key`` (digests, kinds), reading nothing."""
        return self._records[key]
