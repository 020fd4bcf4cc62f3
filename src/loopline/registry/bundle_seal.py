"""The seal at the end of a bundle: the SHA-256 of every region of the file, to name any change.

A member's checksum covers its content, not the zip headers around it, the unused bits at
the end of a deflate stream, or the zip directory; a byte changed there would go unnoticed.
So the zip comment, which ends the file, is a seal: canonical JSON listing the regions that
tile the file before it (each member's local header and data, then the zip directory with
its end record) with offset, size and SHA-256, then a fixed trailer::

    loopline-seal <SHA-256 of the JSON> <length of the JSON, 10 digits>

Checking re-hashes every region and names the first that differs: ``member 'x'``, ``the
zip directory``, or the seal itself. The seal is a checksum, not a signature: it finds
accidental and careless changes; who made a bundle is a question for the channel it came by.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from loopline.core.canonical import is_digest
from loopline.core.errors import IntegrityError

_END = struct.Struct("<4s4H2LH")  # the zip end-of-central-directory record, 22 bytes
_END_SIGNATURE = b"PK\x05\x06"
_TRAILER = re.compile(rb"loopline-seal ([0-9a-f]{64}) ([0-9]{10})")
TRAILER_SIZE = len(b"loopline-seal ") + 64 + 1 + 10
MAX_SEAL = 0xFFFF - TRAILER_SIZE  # a zip comment holds at most 65,535 bytes
MAX_REGIONS = 64
DIRECTORY = "the zip directory"
_CHUNK = 1 << 20
_SLACK = 1 << 20  # zip headers, directory and seal beyond the members' bytes


def _hash_range(handle: BinaryIO, offset: int, size: int, whole: Any = None) -> str:
    """Return the SHA-256 of ``size`` bytes at ``offset``, feeding them to ``whole`` too."""
    handle.seek(offset)
    hasher, left = hashlib.sha256(), size
    while left:
        piece = handle.read(min(_CHUNK, left))
        if not piece:
            raise IntegrityError("the bundle ended before a region its seal lists")
        hasher.update(piece)
        if whole is not None:
            whole.update(piece)
        left -= len(piece)
    return hasher.hexdigest()


def _regions(path: Path, size: int) -> list[dict[str, Any]]:
    """Return the regions of an unsealed zip at ``path``: its members, then its directory."""
    with path.open("rb") as handle:
        handle.seek(size - _END.size)
        end = _END.unpack(handle.read(_END.size))
    if end[0] != _END_SIGNATURE or end[-1] != 0:
        raise ValueError("the file is not a zip without a comment (zip64 is not written)")
    directory_offset = end[6]
    with zipfile.ZipFile(path) as archive:
        infos = sorted(archive.infolist(), key=lambda info: info.header_offset)
    starts = [info.header_offset for info in infos] + [directory_offset]
    regions = [{"kind": "member", "name": info.filename, "offset": start, "size": stop - start}
               for info, start, stop in zip(infos, starts, starts[1:], strict=False)]
    regions.append({"kind": "directory", "name": DIRECTORY, "offset": directory_offset,
                    "size": size - directory_offset})
    return regions


def _payload(regions: list[dict[str, Any]]) -> bytes:
    return json.dumps({"regions": regions}, sort_keys=True, separators=(",", ":")).encode()


def seal(path: Path) -> None:
    """Append the seal to the zip at ``path``, written without a comment; fsync it.

    Raises:
        ValueError: when the file is not such a zip.
    """
    size = path.stat().st_size
    regions = _regions(path, size)
    with path.open("r+b") as handle:
        for region in regions[:-1]:
            region["sha256"] = _hash_range(handle, region["offset"], region["size"])
        regions[-1]["sha256"] = "0" * 64  # a placeholder of the same length
        length = len(_payload(regions))
        handle.seek(size - 2)
        handle.write(struct.pack("<H", length + TRAILER_SIZE))  # the end record's comment size
        regions[-1]["sha256"] = _hash_range(handle, regions[-1]["offset"], regions[-1]["size"])
        payload = _payload(regions)
        if len(payload) != length or length > MAX_SEAL:  # pragma: no cover - digests are fixed
            raise ValueError("the seal does not fit a zip comment")
        trailer = b"loopline-seal %s %010d" % (hashlib.sha256(payload).hexdigest().encode(),
                                                length)
        handle.seek(size)
        handle.write(payload + trailer)
        handle.flush()
        os.fsync(handle.fileno())


def _read_seal(handle: BinaryIO, size: int, name: str) -> tuple[list[Any], int]:
    """Return the regions the seal lists and where the seal starts."""
    handle.seek(size - TRAILER_SIZE)
    trailer = _TRAILER.fullmatch(handle.read(TRAILER_SIZE))
    if trailer is None:
        raise IntegrityError(f"{name} has no loopline seal at its end: it is not a bundle, or "
                             "its last bytes were changed")
    length = int(trailer[2])
    start = size - TRAILER_SIZE - length
    changed = IntegrityError(f"{name}: the seal at the end of the file was changed")
    if length > MAX_SEAL or start < 0:
        raise changed
    handle.seek(start)
    payload = handle.read(length)
    if hashlib.sha256(payload).hexdigest().encode() != trailer[1]:
        raise changed
    try:
        regions = json.loads(payload)["regions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"the seal of {name} is malformed: {exc}") from exc
    return regions, start


def _region_ok(region: Any, position: int) -> bool:
    """Tell whether ``region`` is a well-formed region starting at ``position``."""
    if not isinstance(region, dict):
        return False
    name, offset, size, digest = (region.get(k) for k in ("name", "offset", "size", "sha256"))
    return isinstance(name, str) and offset == position and isinstance(size, int) \
        and not isinstance(size, bool) and size >= 0 and isinstance(digest, str) \
        and is_digest(digest)


def _check_tiling(regions: Any, end: int, name: str) -> None:
    """Refuse a region list that does not cover ``0..end`` exactly, in order."""
    position = 0
    valid = isinstance(regions, list) and 0 < len(regions) <= MAX_REGIONS
    for region in regions if valid else ():
        valid = _region_ok(region, position)
        if not valid:
            break
        position += region["size"]
    if not valid or position != end:
        raise IntegrityError(f"the seal of {name} does not describe the file it ends")


def _label(region: dict[str, Any]) -> str:
    return str(region["name"]) if region.get("kind") == "directory" else \
        f"member {region['name']!r}"


def check_seal(path: Path, max_bytes: int) -> str:
    """Check every region of the bundle at ``path`` against its seal; return the file's SHA-256.

    Raises:
        IntegrityError: naming the member or part of the file that changed, or when the file
            is not a regular file, is larger than ``max_bytes`` or carries no seal.
    """
    name = path.name
    try:
        info = path.stat()
    except OSError as exc:
        raise IntegrityError(f"cannot read the bundle {str(path)!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise IntegrityError(f"{str(path)!r} is not a regular file")
    if info.st_size > max_bytes + _SLACK or info.st_size < TRAILER_SIZE:
        raise IntegrityError(f"{name} is {info.st_size} bytes; a bundle is at most {max_bytes}")
    with path.open("rb") as handle:
        regions, start = _read_seal(handle, info.st_size, name)
        _check_tiling(regions, start, name)
        whole = hashlib.sha256()
        for region in regions:  # they tile the file in order: one pass hashes it all
            if _hash_range(handle, region["offset"], region["size"], whole) != region["sha256"]:
                raise IntegrityError(f"{name}: {_label(region)} was changed (its bytes no "
                                     "longer match the bundle's seal)")
        handle.seek(start)
        whole.update(handle.read())
        return whole.hexdigest()
