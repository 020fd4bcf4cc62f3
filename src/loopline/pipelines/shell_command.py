"""One command task's call: its placeholders filled, the command run, its files kept.

``CommandCall`` is the function of a task made by ``shell.shell_task``; the rules it keeps
are drawn in that module's docstring. It is a plain frozen value, picklable by value.
"""

from __future__ import annotations

import os
import re
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from loopline.artifacts import ContentAddressedStore
from loopline.core.canonical import canonical_json, hash_canonical
from loopline.core.errors import InvalidArgumentError
from loopline.pipelines.context import TaskContext, current_task
from loopline.pipelines.shell_files import collect_outputs, is_command_output, materialise
from loopline.pipelines.shell_process import ProcessOptions, ProcessResult, run_process

OUT = "out"
PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
STDERR_TAIL_CHARS = 2000

Template = tuple[tuple[str, str | None], ...]  # (literal text, placeholder after it or None)


class CommandFailedError(Exception):
    """A command exited with a non-zero code or was killed by a signal."""

    def __init__(self, task: str, exit_code: int, stderr_tail: str,
                 signal_name: str | None = None) -> None:
        self.task = task
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.signal_name = signal_name
        how = f"was killed by {signal_name}" if signal_name else f"exited with code {exit_code}"
        tail = f"; stderr ends with:\n{stderr_tail}" if stderr_tail.strip() else "; no stderr"
        super().__init__(f"command task {task!r} {how}{tail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (CommandFailedError, (self.task, self.exit_code, self.stderr_tail,
                                     self.signal_name))


class MissingOutputError(Exception):
    """A command succeeded without writing a file it declared in ``outputs``."""

    def __init__(self, task: str, missing: tuple[str, ...], written: tuple[str, ...]) -> None:
        self.task = task
        self.missing = missing
        self.written = written
        wrote = ", ".join(written[:20]) or "no files"
        super().__init__(f"command task {task!r} did not write its declared output(s) "
                         f"{', '.join(missing)} under {{out}}; it wrote {wrote}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (MissingOutputError, (self.task, self.missing, self.written))


def parse_argument(argument: str, field: str) -> Template:
    """Split one argument into literal text and ``{name}`` placeholders.

    Raises:
        InvalidArgumentError: naming ``field`` for unbalanced braces or a placeholder that
            is not a plain name (no ``{0}``, ``{a.b}``, ``{a!r}`` or ``{a:>5}``).
    """
    try:
        parts = list(string.Formatter().parse(argument))
    except ValueError as exc:
        raise InvalidArgumentError(field, f"{argument!r}: {exc}; write {{{{ and }}}} for "
                                          "literal braces") from exc
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is not None and (spec or conversion or not PLACEHOLDER_NAME.fullmatch(name)):
            raise InvalidArgumentError(field, f"placeholder {{{name}...}} in {argument!r} "
                                              "must be a plain name such as {rows}")
        pieces.append((literal, name))
    return tuple(pieces)


def _current() -> TaskContext | None:
    try:
        return current_task()
    except InvalidArgumentError:  # called outside a run: nothing to record logs on
        return None


class _Values:
    """The text each placeholder of one call stands for; files written for bytes and outputs."""

    def __init__(self, task: str, root: Path, blobs: ContentAddressedStore | None,
                 kwargs: Mapping[str, Any]) -> None:
        self._task = task
        self._root = root
        self._blobs = blobs
        self._kwargs = kwargs
        self._texts = {OUT: str(root / OUT)}

    def fill(self, template: Template) -> str:
        return "".join(literal + (self.text(name) if name is not None else "")
                       for literal, name in template)

    def text(self, name: str) -> str:
        if name not in self._texts:
            self._texts[name] = self._render(name, self._kwargs[name])
        return self._texts[name]

    def _render(self, name: str, value: Any) -> str:
        field = f"command task {self._task!r} argument {name!r}"
        path = self._root / "in" / name
        if isinstance(value, str):
            text = value
        elif isinstance(value, bytes | bytearray | memoryview):
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(bytes(value))
            text = str(path)
        elif is_command_output(value):
            if self._blobs is None:
                raise InvalidArgumentError(field, "a command task's output can be read only "
                                                  "inside a running task")
            materialise(value, path, self._blobs)
            text = str(path)
        else:
            try:
                text = canonical_json(value)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(field, f"must be bytes or a JSON value: {exc}") from exc
        if "\x00" in text:
            raise InvalidArgumentError(field, "holds a NUL character, which no argument can")
        return text


@dataclass(frozen=True, slots=True)
class CommandCall:
    """A command task's function: fills the placeholders, runs the command, keeps its files.

    A plain frozen value, so process and Ray workers can receive it pickled by value.
    """

    # Tells the engine to pickle this call itself rather than import it by name.
    ships_by_value: ClassVar[bool] = True

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    outputs: tuple[str, ...] = ()
    timeout: float | None = None

    @property
    def templates(self) -> tuple[Template, ...]:
        """Each argument split into literal text and placeholders."""
        return tuple(parse_argument(argument, "command") for argument in self.argv)

    @property
    def placeholders(self) -> frozenset[str]:
        """The names of every placeholder in the command, ``out`` included."""
        return frozenset(name for template in self.templates for _, name in template
                         if name is not None)

    def cache_identity(self) -> str:
        """Return the SHA-256 of what decides the command's result (not its timeout)."""
        return hash_canonical({"argv": list(self.argv), "env": [list(p) for p in self.env],
                               "cwd": self.cwd, "outputs": list(self.outputs)})

    def __repr__(self) -> str:
        # The engine hashes this when it cannot read the source: it must name the identity.
        return (f"CommandCall(name={self.name!r}, argv={list(self.argv)!r}, "
                f"identity={self.cache_identity()})")

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Check that the call gives every placeholder a value, by keyword.

        Raises:
            InvalidArgumentError: naming the task and the placeholder without a value.
        """
        field = f"command task {self.name!r}"
        if args:
            raise InvalidArgumentError(field, "takes keyword arguments only, one per "
                                              "placeholder (e.g. rows=...)")
        if OUT in kwargs:
            raise InvalidArgumentError(f"{field} argument 'out'", "is reserved: {out} is the "
                                                                 "attempt's output folder")
        missing = sorted(self.placeholders - {OUT} - set(kwargs))
        if missing:
            given = ", ".join(sorted(kwargs)) or "nothing"
            raise InvalidArgumentError(f"{field} placeholder {{{missing[0]}}}",
                                       f"has no value; pass {missing[0]}=... (given: {given})")

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run the command with the placeholders filled; return its exit code and files.

        Raises:
            InvalidArgumentError: for a missing or unusable placeholder value.
            CommandFailedError: when the command exits non-zero or is killed.
            TimeoutError: when it outlives its timeout (its process group is killed).
            MissingOutputError: when a declared output was not written.
            OSError: when the program cannot be started.
        """
        self.check_arguments(args, kwargs)
        context = _current()
        blobs = context.blobs if context is not None else None
        with tempfile.TemporaryDirectory(prefix="loopline-command-",
                                         ignore_cleanup_errors=True) as scratch:
            root = Path(scratch)
            (root / OUT).mkdir()
            values = _Values(self.name, root, blobs, kwargs)
            result = self._run([values.fill(template) for template in self.templates])
            if context is not None:
                context.record_log("stdout", result.stdout)
                context.record_log("stderr", result.stderr)
            self._check(result)
            files = collect_outputs(root / OUT, blobs)
        missing = tuple(path for path in self.outputs if path not in files)
        if missing:
            raise MissingOutputError(self.name, missing, tuple(files))
        return {"exit_code": 0, "files": files}

    def _run(self, argv: list[str]) -> ProcessResult:
        env = {**os.environ, **dict(self.env)} if self.env else None
        try:
            return run_process(argv, ProcessOptions(self.cwd, env, self.timeout))
        except OSError as exc:
            where = self.cwd or os.getcwd()
            raise OSError(exc.errno, f"command task {self.name!r} cannot start {argv[0]!r} "
                                     f"in {where}: {exc.strerror}") from exc

    def _check(self, result: ProcessResult) -> None:
        if result.timed_out:
            raise TimeoutError(f"command task {self.name!r} ran longer than its timeout of "
                               f"{self.timeout:g} s; its processes were killed")
        if result.returncode != 0:
            tail = result.stderr.decode("utf-8", errors="replace")[-STDERR_TAIL_CHARS:]
            raise CommandFailedError(self.name, result.returncode, tail, result.signal_name)
