"""Upload bodies: streamed to a file in a folder the server chooses, bounded, hashed, removed.

The upload routes (``/datasets/{name}/upload``, ``/models/{name}/payloads/upload``) take
``application/octet-stream`` bytes (the body guard lets them through unread). ``received``
streams such a body into a fresh folder under the workspace's own ``.loopline/tmp/uploads``
(the system temporary folder is often a small RAM disk), counting the bytes against the
server's ``max_upload_bytes`` (413 past it) and hashing them as they arrive. The folder is
the handler's to use for files derived from the upload, and is removed when the block ends,
whatever happened (RELIABILITY rule 1: clients never name a path).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from loopline.api.errors import ApiError
from loopline.app import Workspace

__all__ = ["PARQUET_TYPE", "UPLOAD_BODY", "UPLOAD_TYPE", "Upload", "received", "too_large"]

UPLOAD_TYPE = "application/octet-stream"
PARQUET_TYPE = "application/vnd.apache.parquet"
# What the OpenAPI document says an upload route takes (FastAPI cannot infer a raw body).
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    UPLOAD_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}
WRITE_CHUNK = 1 << 20
STALE_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Upload:
    """A received body: the file holding it, its size and its SHA-256 (lowercase hex)."""

    path: Path
    size: int
    sha256: str

    @property
    def folder(self) -> Path:
        """The upload's own folder, removed with it: room for files derived from it."""
        return self.path.parent


def too_large(limit: int, excess: str = "the body is larger",
              option: str = "max_upload_bytes") -> ApiError:
    """Return the 413 refusal of a body past ``limit`` bytes, naming the server's option."""
    return ApiError(413, "too_large", f"{excess} than the limit of {limit} bytes "
                                      f"(the server's {option})", "body")


def _folder(ws: Workspace) -> Path:
    root = uploads_root(ws)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=root))


def uploads_root(ws: Workspace) -> Path:
    """Return the folder uploads are received in (``.loopline/tmp/uploads``)."""
    return ws.config_dir / "tmp" / "uploads"


def sweep_stale(ws: Workspace, older_than: float = STALE_SECONDS) -> int:
    """Remove upload folders left by a server that died mid-upload; return how many.

    Only folders untouched for ``older_than`` seconds go: another server process on this
    machine may be receiving into a newer one.
    """
    root = uploads_root(ws)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for folder in root.glob("upload-*"):
        try:
            if folder.is_dir() and not folder.is_symlink() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:  # gone meanwhile, or not ours to read: leave it
            continue
    return removed


def _append(out: IO[bytes], hasher: Any, data: bytes) -> None:
    hasher.update(data)
    out.write(data)


async def _stream_to(request: Request, path: Path, limit: int) -> Upload:
    size, hasher, pending = 0, hashlib.sha256(), bytearray()
    with open(path, "xb") as out:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                pending += chunk
                if len(pending) >= WRITE_CHUNK:  # hash and write on the pool, a MiB at a time
                    data = bytes(pending)
                    pending.clear()
                    await run_in_threadpool(_append, out, hasher, data)
        except ClientDisconnect:
            raise ApiError(400, "malformed", "the client went away while sending",
                           "body") from None
        await run_in_threadpool(_append, out, hasher, bytes(pending))
    return Upload(path, size, hasher.hexdigest())


@asynccontextmanager
async def received(request: Request, ws: Workspace) -> AsyncIterator[Upload]:
    """Stream the request body to a new file of the server's; yield it, then remove its folder.

    Raises:
        ApiError: 413 past the server's ``max_upload_bytes``; 400 when the client goes away
            while sending.
        OSError: when the workspace's folder cannot be written.
    """
    limit: int = request.app.state.options.max_upload_bytes
    folder = await run_in_threadpool(_folder, ws)
    try:
        yield await _stream_to(request, folder / "body", limit)
    finally:
        await run_in_threadpool(shutil.rmtree, folder, True)
