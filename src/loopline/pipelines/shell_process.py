"""One command run as a child process: no shell, bounded capture, and its process group killed.

Rule: the command is an argument list started with ``shell=False`` (RELIABILITY rule 4),
under ``command_guard.py``, which kills it if this process dies. The guard leads a new
session, so on a timeout, and after it exits, every process it started is
killed with its group: nothing it spawned outlives the attempt or writes after its outputs are
collected. stdout and stderr are read through pipes keeping at most ``limit`` bytes of each
(the tail), so neither memory nor disk grows with a chatty command.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CAPTURE_LIMIT = 64 * 1024 * 1024
READ_CHUNK = 64 * 1024
# How long to wait for the pipes to drain once the process group is dead; a process that
# escaped the group (setsid) may hold them open for ever.
DRAIN_GRACE = 5.0
GUARD = str(Path(__file__).with_name("command_guard.py"))


class _Tail:
    """The last ``limit`` bytes of a stream, and how many bytes before them were dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._size += len(chunk)
            while self._chunks and self._size - len(self._chunks[0]) >= self._limit:
                first = self._chunks.popleft()
                self._size -= len(first)
                self._dropped += len(first)

    def data(self) -> bytes:
        with self._lock:
            joined = b"".join(self._chunks)
            dropped = self._dropped
        excess = max(0, len(joined) - self._limit)
        if excess == 0 and dropped == 0:
            return joined
        note = f"[loopline: output truncated; the first {dropped + excess} bytes were dropped]\n"
        return note.encode("utf-8") + joined[excess:]


def _drain(stream: IO[bytes], tail: _Tail) -> None:
    try:
        descriptor = stream.fileno()
        while chunk := os.read(descriptor, READ_CHUNK):  # whatever is there, up to a chunk
            tail.add(chunk)
    except (OSError, ValueError):  # the pipe broke or was closed: what was read is kept
        pass
    finally:
        with suppress(OSError):
            stream.close()


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    """Where and how long a command runs, and how much of its output is kept."""

    cwd: str | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None
    limit: int = CAPTURE_LIMIT


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How a command ended: its return code (negative: killed by that signal) and output."""

    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool

    @property
    def signal_name(self) -> str | None:
        """Name the signal that killed the process, when one did."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def _kill_group(pgid: int) -> None:
    # The group is gone (ProcessLookupError) or, rarely, not ours to signal any more.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _check_program(program: str, options: ProcessOptions) -> None:
    """Refuse a program that cannot be found or run, as starting it directly would."""
    if os.sep in program:
        path = Path(options.cwd or ".") / program
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return
    search = (options.env if options.env is not None else os.environ).get("PATH")
    if shutil.which(program, path=search) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def run_process(argv: Sequence[str], options: ProcessOptions) -> ProcessResult:
    """Run ``argv`` to its end (or its timeout) and return its code and captured output.

    Raises:
        FileNotFoundError, PermissionError, OSError: when the program cannot be started.
    """
    _check_program(argv[0], options)
    tails = (_Tail(options.limit), _Tail(options.limit))
    # The guard leads the command's group and kills it if this process dies (see
    # command_guard.py): a runner killed with kill -9 leaves no command running.
    guarded = [sys.executable, "-E", "-S", GUARD, str(os.getpid()), "--", *argv]
    process = subprocess.Popen(  # an argument list, never a shell
        guarded, shell=False, cwd=options.cwd, env=options.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    streams = (process.stdout, process.stderr)
    readers = [threading.Thread(target=_drain, args=(stream, tail), daemon=True,
                                name=f"loopline-capture-{process.pid}")
               for stream, tail in zip(streams, tails, strict=True) if stream is not None]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        process.wait(options.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # The leader's pid is the group id. On a timeout (or an interrupt) it is still
        # alive, so the group cannot have been reused; after a normal exit this ends
        # whatever the command left running in the background.
        _kill_group(process.pid)
        process.wait()
        for reader in readers:
            reader.join(DRAIN_GRACE)
    return ProcessResult(process.returncode, tails[0].data(), tails[1].data(), timed_out)
