"""Provenance of a run: the code version (git) and the Python environment it ran in.

Git is read through the ``git`` binary with no shell, a 10 s bound per call and a controlled
environment; a directory outside git, or a machine without git, gives a ``CodeVersion``
whose ``reason`` says why, never an exception. The environment scan (every installed
distribution) is cached per process; ``clear_environment_cache`` forgets it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from loopline.core.canonical import canonical_json, hash_canonical, sha256_hex

GIT_TIMEOUT = 10.0
MAX_UNTRACKED_BYTES = 10 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
# Pinned so the same changes hash the same whatever a user's git config says about diffs.
_DIFF_OPTIONS = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
                 "--unified=3", "--diff-algorithm=myers", "--indent-heuristic",
                 "--src-prefix=a/", "--dst-prefix=b/", "--ignore-submodules=none")
# Inherited GIT_* variables are dropped (a hook's GIT_DIR or GIT_INDEX_FILE would point git
# at another repository or index) except these, which only bound discovery or pick config.
_KEPT_GIT_VARIABLES = frozenset({"GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
                                 "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL",
                                 "GIT_CONFIG_SYSTEM"})
_SEPARATORS = re.compile(r"[-_.]+")


@dataclass(frozen=True, slots=True)
class CodeVersion:
    """The git state code ran from; ``repo`` is None outside git, with ``reason`` saying why.

    ``diff_sha256`` hashes the uncommitted changes (tracked and untracked-not-ignored files)
    and is None for a clean tree. ``reason`` is also set, with ``dirty`` true, when the
    repository was found but its state could not be read completely.
    """

    repo: Path | None
    commit: str | None = None
    branch: str | None = None
    dirty: bool = False
    diff_sha256: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-ready values (the repo path as a string)."""
        return {"repo": str(self.repo) if self.repo is not None else None,
                "commit": self.commit, "branch": self.branch, "dirty": self.dirty,
                "diff_sha256": self.diff_sha256, "reason": self.reason}


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _GitFailed(Exception):
    """A git call that could not run or did not succeed; ``reason`` is shown to users."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Git:
    executable: str
    env: dict[str, str]

    def run(self, cwd: Path, *args: str, allowed: tuple[int, ...] = (0,),
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``git args`` in ``cwd``; return the result when its exit code is ``allowed``.

        Raises:
            _GitFailed: when git cannot start, times out or exits with another code.
        """
        command = [self.executable, *args]
        try:
            done = subprocess.run(command, shell=False, capture_output=True, timeout=GIT_TIMEOUT,
                                  check=False, cwd=cwd, env=self.env, input=stdin)
        except subprocess.TimeoutExpired as exc:
            raise _GitFailed(f"git {args[0]} timed out after {GIT_TIMEOUT:g} s") from exc
        except OSError as exc:
            raise _GitFailed(f"git could not be run: {exc}") from exc
        if done.returncode not in allowed:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = message[0] if message else f"exit code {done.returncode}"
            raise _GitFailed(f"git {args[0]} failed: {detail}")
        return done


def _git_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("GIT_") or name in _KEPT_GIT_VARIABLES}
    env.update(GIT_OPTIONAL_LOCKS="0", LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    return env


def code_version(start: Path | None = None) -> CodeVersion:
    """Describe the git work tree holding ``start`` (default: the current directory).

    Never raises for a missing ``git`` binary, a directory outside git or a git failure:
    the returned ``reason`` says what went wrong.
    """
    executable = shutil.which("git")
    if executable is None:
        return CodeVersion(None, reason="git executable not found on PATH")
    directory = (start if start is not None else Path.cwd()).absolute()
    if directory.is_file():
        directory = directory.parent
    if not directory.is_dir():
        return CodeVersion(None, reason=f"{directory} is not a directory")
    git = _Git(executable, _git_env())
    try:
        root = _toplevel(git, directory)
    except _GitFailed as exc:
        return CodeVersion(None, reason=exc.reason)
    commit = branch = None
    try:
        commit = _head(git, root)
        branch = _branch(git, root)
        changes = _changes_digest(git, root, commit)
    except _GitFailed as exc:
        # An unreadable state must not pass for a clean one: the commit alone would not
        # reproduce the run.
        return CodeVersion(root, commit, branch, dirty=True, reason=exc.reason)
    return CodeVersion(root, commit, branch, dirty=changes is not None, diff_sha256=changes)


def _toplevel(git: _Git, directory: Path) -> Path:
    try:
        done = git.run(directory, "rev-parse", "--show-toplevel")
    except _GitFailed as exc:
        if "not a git repository" in exc.reason:
            raise _GitFailed(f"{directory} is not inside a git work tree") from exc
        raise
    top = done.stdout.decode("utf-8", "surrogateescape").strip()
    if not top:
        raise _GitFailed(f"{directory} is not inside a git work tree")
    return Path(top)


def _head(git: _Git, root: Path) -> str | None:
    """Return HEAD's commit id, or None in a repository with no commits yet."""
    done = git.run(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", allowed=(0, 1))
    commit = done.stdout.decode("ascii").strip()
    return commit if done.returncode == 0 and commit else None


def _branch(git: _Git, root: Path) -> str | None:
    """Return the checked-out branch's short name, or None when HEAD is detached."""
    done = git.run(root, "symbolic-ref", "--quiet", "--short", "HEAD", allowed=(0, 1))
    name = done.stdout.decode("utf-8", "replace").strip()
    return name if done.returncode == 0 and name else None


def _changes_digest(git: _Git, root: Path, commit: str | None) -> str | None:
    """Return the SHA-256 of the uncommitted changes under ``root``, or None when clean."""
    base = commit or _empty_tree(git, root)
    diff = git.run(root, "diff", base, *_DIFF_OPTIONS).stdout
    listed = git.run(root, "ls-files", "--others", "--exclude-standard", "-z").stdout
    untracked = sorted(path for path in listed.split(b"\0") if path)
    if not diff and not untracked:
        return None
    digest = hashlib.sha256(b"loopline.code-changes.v1")
    _frame(digest, b"diff", diff)
    for path in untracked:
        _hash_untracked(digest, root, path)
    return digest.hexdigest()


def _empty_tree(git: _Git, root: Path) -> str:
    """Return the empty tree's id in this repository's hash format (SHA-1 or SHA-256)."""
    done = git.run(root, "hash-object", "-t", "tree", "--stdin", stdin=b"")
    return done.stdout.decode("ascii").strip()


def _frame(digest: _Digest, *parts: bytes) -> None:
    """Feed length-prefixed ``parts`` to ``digest``, so no two sequences hash alike."""
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)


def _hash_untracked(digest: _Digest, root: Path, path: bytes) -> None:
    """Feed one untracked path and what it holds (bounded) to ``digest``.

    Only regular files are opened (a FIFO would block); a symlink contributes its target,
    a file over ``MAX_UNTRACKED_BYTES`` only its size.
    """
    full = root / os.fsdecode(path.rstrip(b"/"))
    try:
        info = full.lstat()
    except OSError:
        _frame(digest, b"missing", path)
        return
    if stat.S_ISLNK(info.st_mode):
        _frame(digest, b"symlink", path, os.fsencode(os.readlink(full)))
    elif not stat.S_ISREG(info.st_mode):
        _frame(digest, b"other", path, str(stat.S_IFMT(info.st_mode)).encode())
    elif info.st_size > MAX_UNTRACKED_BYTES:
        _frame(digest, b"large", path, str(info.st_size).encode())
    else:
        _frame(digest, b"file", path, _file_sha256(full))


def _file_sha256(path: Path) -> bytes:
    content = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                content.update(chunk)
    except OSError as exc:
        return f"unreadable: {exc.strerror}".encode()
    return content.hexdigest().encode()


@dataclass(frozen=True, slots=True)
class Environment:
    """The interpreter, platform and installed distributions a process runs in.

    ``packages`` are sorted ``name==version`` strings with PEP 503 names; ``digest`` is the
    SHA-256 of the canonical JSON of every other field.
    """

    python_version: str
    python_implementation: str
    sys_platform: str
    platform: str
    machine: str
    packages: tuple[str, ...]
    digest: str

    def content(self) -> dict[str, Any]:
        """Return every field but ``digest`` as JSON-ready values (what ``digest`` hashes)."""
        return {"python_version": self.python_version,
                "python_implementation": self.python_implementation,
                "sys_platform": self.sys_platform, "platform": self.platform,
                "machine": self.machine, "packages": list(self.packages)}

    def as_dict(self) -> dict[str, Any]:
        """Return every field, ``digest`` included, as JSON-ready values."""
        return {**self.content(), "digest": self.digest}


def environment() -> Environment:
    """Describe this process's interpreter, platform and installed distributions.

    Scanned once per process (it reads every distribution's metadata); call
    ``clear_environment_cache`` after installing or removing packages.
    """
    return _scan_environment()


def environment_record(env: Environment) -> tuple[bytes, dict[str, Any]]:
    """Return ``env`` as stored (canonical JSON) and the summary a run or model version keeps.

    The summary names the stored record by its SHA-256 (``artifact``): put the bytes in the
    artifact store and the digest matches.
    """
    record = canonical_json(env.as_dict()).encode("utf-8")
    summary = {"digest": env.digest, "python": env.python_version,
               "implementation": env.python_implementation, "platform": env.platform,
               "packages": len(env.packages), "artifact": sha256_hex(record)}
    return record, summary


def clear_environment_cache() -> None:
    """Forget the cached environment, so the next ``environment()`` scans again."""
    _scan_environment.cache_clear()


@functools.cache
def _scan_environment() -> Environment:
    content: dict[str, Any] = {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sys_platform": sys.platform, "platform": platform.platform(),
        "machine": platform.machine(), "packages": list(_installed_packages())}
    return Environment(content["python_version"], content["python_implementation"],
                       content["sys_platform"], content["platform"], content["machine"],
                       tuple(content["packages"]), hash_canonical(content))


def normalise_name(name: str) -> str:
    """Return a distribution name normalised as PEP 503 does (``Foo_Bar`` → ``foo-bar``)."""
    return _SEPARATORS.sub("-", name).lower()


def _install_paths() -> list[str]:
    """Return the interpreter's install folders (site-packages), in import order.

    Not the whole ``sys.path``: libraries add folders of their own at run time (Ray adds its
    vendored ``thirdparty_files``), which would make the same installation describe itself
    differently before and after such an import.
    """
    paths = sysconfig.get_paths()
    found = [paths[key] for key in ("purelib", "platlib") if key in paths]
    found += [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    ordered = [entry for entry in sys.path if entry in found]
    return ordered + [entry for entry in dict.fromkeys(found) if entry not in ordered]


def _installed_packages() -> tuple[str, ...]:
    """Return sorted ``name==version`` of the distributions installed for this interpreter.

    A name found twice keeps its first, the one ``import`` would load; distributions with
    no name or version in their metadata are left out.
    """
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=_install_paths()):
        name, version = _first(dist, "Name"), _first(dist, "Version")
        if name and version:
            seen.setdefault(normalise_name(name), version.strip())
    return tuple(sorted(f"{name}=={version}" for name, version in seen.items()))


def _first(dist: importlib.metadata.Distribution, key: str) -> str | None:
    """Return the first ``key`` header of ``dist``'s metadata, or None when it has none.

    ``get_all``, because reading a missing key by subscript is deprecated (a warning).
    """
    values = dist.metadata.get_all(key) or []
    return str(values[0]) if values else None


def requirements_lock(env: Environment) -> str:
    """Return ``env``'s packages as pip requirements text: a header, then sorted pins.

    Pins name installed versions; a locally built or editable distribution's version may
    not exist on any index.
    """
    header = (f"# {env.python_implementation} {env.python_version} on {env.platform} "
              f"({env.sys_platform}, {env.machine})\n"
              f"# environment sha256:{env.digest}\n")
    return header + "".join(f"{pin}\n" for pin in env.packages)
