"""Command tasks: an existing program run as a pipeline task, never through a shell.

``shell_task("python train.py --rows {rows} --out {out}", name="train")`` makes a task whose
call fills each ``{name}`` placeholder and runs the program. Rules it keeps:

* No shell (RELIABILITY rule 4). A placeholder fills its argument in place and is never
  split again, so a value like ``"a; rm -rf /"`` stays one argument. The program (the first
  word) holds no placeholder: values are arguments, never code. ``{{`` and ``}}`` are braces.
* ``{out}`` is a fresh, empty folder for the attempt. Every regular file the command writes
  there goes to the artifact store; links, FIFOs and devices fail the task.
* Other placeholders are the task's keyword arguments: a string as it is, another JSON
  scalar as its JSON text (``true``, ``3``, ``0.5``), a list or dict as JSON text, bytes as the
  path of a file holding them, and a command task's output as the path of a folder holding
  its files. Keyword arguments no placeholder names only order the tasks.
* The output is ``{"exit_code": 0, "files": {path: {"digest", "size"}}}``; a non-zero exit
  raises ``CommandFailedError``, a missing declared output ``MissingOutputError``, a
  timeout ``TimeoutError`` (retried by default) after killing the process group. What the
  command leaves running in the background when it exits is killed too.
* stdout and stderr (their last 64 MiB each) are recorded on the attempt, success or not.

The call itself is ``shell_command.CommandCall``; ``shell_files`` collects and materialises
files, ``shell_process`` runs the child process.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.names import validate_name
from loopline.pipelines.context import current_task
from loopline.pipelines.definitions import (
    TRANSIENT_ERRORS,
    TaskDefinition,
    TaskOptions,
    _options,
)
from loopline.pipelines.shell_command import (
    CommandCall,
    CommandFailedError,
    MissingOutputError,
    parse_argument,
)
from loopline.pipelines.shell_files import check_relative, files_of

# The engine's own timeout is a backstop: the command's timeout fires first, kills the
# process group and raises a retryable TimeoutError, so a retry never overlaps the old copy.
KILL_GRACE = 10.0


class CommandTask(TaskDefinition):
    """A task made by ``shell_task``: its placeholders are checked when a pipeline calls it."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Check the placeholders' values are given, then record or run the call."""
        if isinstance(self.fn, CommandCall):
            self.fn.check_arguments(args, kwargs)
        return TaskDefinition.__call__(self, *args, **kwargs)


def _argv(command: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidArgumentError("command", f"cannot be split into arguments: {exc}") \
                from exc
    elif isinstance(command, Sequence) and all(isinstance(part, str) for part in command):
        argv = list(command)
    else:
        raise InvalidArgumentError("command", "must be a string or a list of strings")
    if not argv or not argv[0]:
        raise InvalidArgumentError("command", "names no program")
    if any("\x00" in part for part in argv):
        raise InvalidArgumentError("command", "holds a NUL character")
    templates = [parse_argument(part, "command") for part in argv]
    if any(name is not None for _, name in templates[0]):
        raise InvalidArgumentError("command", f"the program {argv[0]!r} cannot hold a "
                                              "placeholder: values are arguments, never code")
    return tuple(argv)


def _env(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if env is None:
        return ()
    if not isinstance(env, Mapping):
        raise InvalidArgumentError("env", "must be a mapping of names to strings")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise InvalidArgumentError("env", f"{key!r} is not an environment variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidArgumentError(f"env.{key}", "must be a string without NUL characters")
    return tuple(sorted(env.items()))


def _outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    if isinstance(outputs, str) or not all(isinstance(path, str) for path in outputs):
        raise InvalidArgumentError("outputs", "must be a list of relative file paths")
    checked = tuple(check_relative(path, f"outputs[{i}]") for i, path in enumerate(outputs))
    if len(set(checked)) != len(checked):
        raise InvalidArgumentError("outputs", "names a file twice")
    return checked


def shell_task(  # noqa: PLR0913 - the options of @task, and the command's own
        command: str | Sequence[str], *, name: str, retries: int = 0, retry_delay: float = 1.0,
        backoff: float = 2.0, jitter: float = 0.1, max_delay: float = 60.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
        timeout: float | None = None, cache: bool = True, env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None, outputs: Sequence[str] = (),
) -> TaskDefinition:
    """Make a task that runs ``command`` (a string split like a shell would, or a list).

    Retry options are those of ``@task``. ``timeout`` kills the command's process group and
    raises ``TimeoutError``. ``env`` is added to the worker's environment; ``cwd`` is where
    the command runs (default: the worker's folder); ``outputs`` are files the command must
    write under ``{out}``.

    Raises:
        InvalidArgumentError: naming the option, or the placeholder, that is wrong.
    """
    options = _options(retries, (retry_delay, backoff, jitter, max_delay), retry_on, timeout,
                       cache)
    if cwd is not None and (not isinstance(cwd, str | os.PathLike) or "\x00" in str(cwd)):
        raise InvalidArgumentError("cwd", "must be a folder path")
    call = CommandCall(validate_name(name, "name"), _argv(command), _env(env),
                       None if cwd is None else os.fspath(cwd), _outputs(outputs),
                       options.timeout)
    backstop = None if options.timeout is None else options.timeout + KILL_GRACE
    return CommandTask(call, call.name, TaskOptions(options.retry, backstop, options.cache))


def read_output_file(output: Mapping[str, Any], path: str) -> bytes:
    """Return the bytes of file ``path`` of a command task's output, inside a running task.

    Raises:
        InvalidArgumentError: when ``output`` is not a command task's output, or no task runs.
        NotFoundError: when the command wrote no such file.
    """
    files = files_of(output)
    info = files.get(path)
    if info is None:
        wrote = ", ".join(sorted(files)[:20]) or "no files"
        raise NotFoundError("output file", path, f"the command wrote {wrote}")
    return current_task().blobs.get_bytes(str(info["digest"]))


__all__ = ["CommandCall", "CommandFailedError", "CommandTask", "MissingOutputError",
           "read_output_file", "shell_task"]
