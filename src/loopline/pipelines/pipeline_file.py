"""Pipelines of command tasks described in a TOML or YAML file, refused whole when wrong.

A file is checked completely when it is loaded (unknown fields, types, duplicate or unknown
task names, cycles, placeholders without a value), so a bad file fails before anything runs,
with the file, the field path (``tasks[1].needs``) and the task named. Format::

    name = "nightly"                  # the pipeline's name

    [parameters]                      # name -> default; the type is the default's:
    rows = 1000                       # int, float, str or bool, checked on every run

    [[tasks]]
    name = "prepare"
    command = "python prepare.py --rows {rows} --out {out}"   # split like a shell would
    retries = 2                       # also retry_delay, backoff, jitter, max_delay
    timeout = 600                     # seconds; the command's process group is killed
    outputs = ["data.csv"]            # files the command must write under {out}

    [[tasks]]
    name = "train"
    command = ["python", "train.py", "--data", "{prepare}", "--out", "{out}"]
    needs = ["prepare"]               # runs after prepare; {prepare} is a folder of its files
    env = { SEED = "7" }              # added to the environment
    cwd = "jobs"                      # relative to the file's folder (the default cwd)
    cache = false                     # always run

YAML files (``.yaml``/``.yml``) hold the same structure. Placeholders a command may use:
``{out}``, the pipeline's parameters, and the tasks it ``needs``. Commands never run through
a shell (see ``shell.py``).
"""

from __future__ import annotations

import inspect
import keyword
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name
from loopline.pipelines.definitions import PipelineDefinition, TaskDefinition
from loopline.pipelines.shell import shell_task
from loopline.pipelines.shell_command import OUT, CommandCall

MAX_FILE_BYTES = 1024 * 1024
SUFFIXES = (".toml", ".yaml", ".yml")
PARAMETER_TYPES = (bool, int, float, str)


class TaskSpec(BaseModel):
    """One ``[[tasks]]`` entry."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    command: Any
    needs: list[str] = Field(default_factory=list)
    retries: int = 0
    retry_delay: float = 1.0
    backoff: float = 2.0
    jitter: float = 0.1
    max_delay: float = 60.0
    timeout: float | None = None
    cache: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    outputs: list[str] = Field(default_factory=list)

    @field_validator("command")
    @classmethod
    def _command(cls, value: Any) -> str | list[str]:
        if isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(part, str) for part in value)):
            return value
        raise ValueError("must be a string or a list of strings")


class PipelineSpec(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    tasks: list[TaskSpec] = Field(min_length=1)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _validate(path: Path, data: Any) -> PipelineSpec:
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        problem = first["msg"]
        if len(errors) > 1:
            problem += "; also " + "; ".join(f"{_location(e['loc']) or 'the file'}: {e['msg']}"
                                             for e in errors[1:5])
        where = _location(first["loc"])
        raise InvalidArgumentError(f"{path}: {where}" if where else str(path), problem) from exc


def _parse(path: Path, text: str) -> Any:
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgumentError(str(path), f"is not valid TOML: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgumentError(str(path), f"is not valid YAML: {exc}") from exc


def _read(path: Path) -> Any:
    if path.suffix not in SUFFIXES:
        raise InvalidArgumentError(str(path), f"must end in {', '.join(SUFFIXES)}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidArgumentError(str(path), f"is {size} bytes; the limit is "
                                                  f"{MAX_FILE_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise InvalidArgumentError(str(path), "no such file") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(str(path), f"is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise InvalidArgumentError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    return _parse(path, text)


def _check_parameters(path: Path, spec: PipelineSpec, tasks: set[str]) -> None:
    for name, value in spec.parameters.items():
        field = f"{path}: parameters.{name}"
        if not name.isidentifier() or keyword.iskeyword(name) or name == OUT:
            raise InvalidArgumentError(field, "a parameter name must be a Python identifier "
                                              "(letters, digits, '_'), not a keyword or 'out'")
        if name in tasks:
            raise InvalidArgumentError(field, f"is also a task's name; {{{name}}} would be "
                                              "ambiguous")
        if not isinstance(value, PARAMETER_TYPES) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise InvalidArgumentError(field, "the default must be an integer, a finite "
                                              f"number, a string or a boolean, not {value!r}")


def _check_tasks(path: Path, spec: PipelineSpec) -> None:
    seen: dict[str, int] = {}
    for i, task in enumerate(spec.tasks):
        validate_name(task.name, f"{path}: tasks[{i}].name")
        if task.name in seen:
            raise InvalidArgumentError(f"{path}: tasks[{i}].name", f"task {task.name!r} is "
                                       f"defined twice (also tasks[{seen[task.name]}])")
        seen[task.name] = i
    for i, task in enumerate(spec.tasks):
        for j, need in enumerate(task.needs):
            field = f"{path}: tasks[{i}].needs[{j}]"
            if need not in seen:
                raise InvalidArgumentError(field, f"task {task.name!r} needs unknown task "
                                           f"{need!r}; the tasks are {', '.join(seen)}")
            if need == OUT:
                raise InvalidArgumentError(field, "a task named 'out' cannot be needed: "
                                                  "{out} is the task's own output folder")
            if task.needs.index(need) != j:
                raise InvalidArgumentError(field, f"task {task.name!r} needs {need!r} twice")


def _order(path: Path, spec: PipelineSpec) -> list[str]:
    waiting = {task.name: set(task.needs) for task in spec.tasks}
    order: list[str] = []
    while waiting:
        ready = [name for name, needs in waiting.items() if not needs]
        if not ready:
            raise InvalidArgumentError(f"{path}: tasks", f"the needs of tasks "
                                       f"{', '.join(sorted(waiting))} form a cycle")
        for name in ready:
            order.append(name)
            del waiting[name]
        for needs in waiting.values():
            needs.difference_update(ready)
    return order


def _command_task(path: Path, index: int, task: TaskSpec) -> TaskDefinition:
    base = path.parent.resolve()
    try:
        return shell_task(
            task.command, name=task.name, retries=task.retries, retry_delay=task.retry_delay,
            backoff=task.backoff, jitter=task.jitter, max_delay=task.max_delay,
            timeout=task.timeout, cache=task.cache, env=task.env,
            cwd=base if task.cwd is None else base / task.cwd, outputs=task.outputs)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{path}: tasks[{index}].{exc.field}",
                                   f"{exc.problem} (task {task.name!r})") from exc


def _arguments(path: Path, index: int, spec: PipelineSpec,
               definition: TaskDefinition) -> tuple[str, ...]:
    """Return the parameters the task's command uses, refusing placeholders without a value."""
    task, call = spec.tasks[index], definition.fn
    if not isinstance(call, CommandCall):  # shell_task always makes one
        raise InvalidArgumentError(f"{path}: tasks[{index}]", "is not a command task")
    unknown = sorted(call.placeholders - {OUT} - set(spec.parameters) - set(task.needs))
    if unknown:
        tasks = {other.name for other in spec.tasks}
        hint = f"; add {unknown[0]!r} to its needs" if unknown[0] in tasks else ""
        raise InvalidArgumentError(
            f"{path}: tasks[{index}].command", f"placeholder {{{unknown[0]}}} of task "
            f"{task.name!r} is not a parameter, a needed task or {{out}}{hint}")
    return tuple(sorted(call.placeholders & set(spec.parameters)))


class FilePipeline:
    """The pipeline function of a pipeline file: calls its command tasks in ``needs`` order."""

    def __init__(self, name: str, parameters: Mapping[str, Any],
                 steps: list[tuple[TaskDefinition, tuple[str, ...], tuple[str, ...]]]) -> None:
        self.__name__ = self.__qualname__ = name
        # Read by inspect.signature and typing.get_type_hints, so runs check parameter types.
        self.__signature__ = inspect.Signature([
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value,
                              annotation=type(value)) for key, value in parameters.items()])
        self.__annotations__ = {key: type(value) for key, value in parameters.items()}
        self._steps = steps

    def __call__(self, **parameters: Any) -> dict[str, Any]:
        """Call every task with the parameters it uses and the outputs it needs."""
        futures: dict[str, Any] = {}
        for task, used, needs in self._steps:
            kwargs = {name: parameters[name] for name in used}
            kwargs.update({need: futures[need] for need in needs})
            futures[task.name] = task(**kwargs)
        return futures


def load_pipeline_file(path: str | Path) -> PipelineDefinition:
    """Read, check and return the pipeline a TOML or YAML file describes.

    Raises:
        InvalidArgumentError: naming the file and the field (``tasks[1].needs[0]``) that is
            wrong: syntax, unknown fields, types, names, needs, cycles or placeholders.
    """
    path = Path(path)
    spec = _validate(path, _read(path))
    validate_name(spec.name, f"{path}: name")
    _check_tasks(path, spec)
    _check_parameters(path, spec, {task.name for task in spec.tasks})
    order = _order(path, spec)
    index = {task.name: i for i, task in enumerate(spec.tasks)}
    steps = []
    for name in order:
        definition = _command_task(path, index[name], spec.tasks[index[name]])
        used = _arguments(path, index[name], spec, definition)
        steps.append((definition, used, tuple(spec.tasks[index[name]].needs)))
    return PipelineDefinition(FilePipeline(spec.name, spec.parameters, steps), spec.name)
