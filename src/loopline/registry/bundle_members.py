"""Reading a bundle's members safely (RELIABILITY rule 2): checked names, types, bounded sizes.

Everything below is decided from the zip directory before a byte is decompressed:

- at most ``max_members`` members, each name once;
- names are relative, ``/``-separated segments of letters, digits, ``.``, ``_`` and ``-``
  (not starting with ``.``): no absolute paths, drive letters, backslashes, NUL, ``..``;
- regular files only: no folders, symbolic or hard links, devices, FIFOs or sockets (the
  Unix mode in the external attributes), and no encryption;
- stored or deflated only, with declared sizes within ``max_member_bytes`` each and
  ``max_total_bytes`` together, and a bounded expansion ratio.

Extraction then counts the bytes actually produced (a declared size is never trusted), writes
each member to a file of the caller's choosing in a private temporary folder (a member's name
is never used as a path) and hashes it on the way.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from loopline.core.errors import IntegrityError
from loopline.registry.bundle_format import BundleLimits

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a folder", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)


def _refuse(name: str, problem: str) -> IntegrityError:
    return IntegrityError(f"member {name!r} is refused: {problem}")


def name_problem(name: str) -> str | None:
    """Return why ``name`` may not name a bundle member, or None when it may."""
    segments = name.split("/")
    problems = [
        ("\x00" in name, "it holds a NUL byte"),
        (name.startswith("/") or bool(_DRIVE.match(name)), "it is an absolute path"),
        ("\\" in name, "it holds a backslash"),
        (".." in segments, "it climbs out of its folder with '..'"),
        ("" in segments or "." in segments, "it has an empty or '.' segment (a folder?)"),
        (len(name) > 255 or not all(_SEGMENT.fullmatch(s) for s in segments),
         "only letters, digits, '.', '_' and '-' are allowed, not starting with '.'"),
    ]
    return next((problem for bad, problem in problems if bad), None)


def _check_one(info: zipfile.ZipInfo, limits: BundleLimits) -> None:
    name = info.orig_filename
    problem = name_problem(name) if name == info.filename else "its stored name was rewritten"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if problem is None and (info.is_dir() or kind not in (0, stat.S_IFREG)):
        problem = f"it is {_KINDS.get(kind, 'a folder')}, not a regular file"
    if problem is None and info.flag_bits & 0x1:
        problem = "it is encrypted"
    if problem is None and info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        problem = f"compression method {info.compress_type} is not stored or deflated"
    if problem is None and info.file_size > limits.max_member_bytes:
        problem = (f"it expands to {info.file_size} bytes, more than the limit of "
                   f"{limits.max_member_bytes}")
    if problem is None and info.file_size > max(limits.max_ratio * info.compress_size,
                                                limits.ratio_allowance):
        problem = (f"it expands {info.file_size} bytes from {info.compress_size}, more than "
                   f"{limits.max_ratio} times")
    if problem is not None:
        raise _refuse(name, problem)


def check_members(infos: list[zipfile.ZipInfo], limits: BundleLimits) -> dict[str, zipfile.ZipInfo]:
    """Return the members by name once every rule above holds.

    Raises:
        IntegrityError: naming the first member that breaks one, or the count or total.
    """
    if len(infos) > limits.max_members:
        raise IntegrityError(f"the bundle holds {len(infos)} members, more than the limit of "
                             f"{limits.max_members}")
    found: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        _check_one(info, limits)
        if info.filename in found:
            raise _refuse(info.filename, "the name appears twice")
        found[info.filename] = info
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise IntegrityError(f"the bundle's members expand to {total} bytes, more than the "
                             f"limit of {limits.max_total_bytes}")
    return found


def copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, sink: BinaryIO,
                limit: int) -> tuple[str, int]:
    """Copy a member's bytes to ``sink``, at most ``limit``; return their SHA-256 and size.

    Raises:
        IntegrityError: naming the member when it is corrupt (a CRC or deflate error) or
            yields more bytes than it declares or than ``limit``.
    """
    hasher, size = hashlib.sha256(), 0
    bound = min(limit, info.file_size)
    try:
        with archive.open(info) as source:
            while piece := source.read(_CHUNK):
                size += len(piece)
                if size > bound:
                    raise _refuse(info.filename, f"it yields more than {bound} bytes")
                hasher.update(piece)
                sink.write(piece)
    except _READ_ERRORS as exc:
        raise IntegrityError(f"member {info.filename!r} is corrupt: {exc}") from exc
    return hasher.hexdigest(), size


def extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path,
            limit: int) -> tuple[str, int]:
    """Write a member to the new file ``dest`` (see :func:`copy_member`)."""
    with dest.open("xb") as sink:
        return copy_member(archive, info, sink, limit)
