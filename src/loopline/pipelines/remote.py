"""One task attempt as a self-contained call any worker can run: thread, process or Ray.

A ``TaskCall`` carries the task (or where to import it from), its arguments with each
upstream output given as its stored record, and how to open the artifact store; the worker
reads its inputs from the artifact store and writes its output there, so data never travels
through the driver. ``execute_call`` is what every worker runs.

Errors from another process come back as ``RemoteTaskFailure``, which names the original
exception's classes so ``retry_on`` still matches them without unpickling anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from loopline.artifacts import ContentAddressedStore
from loopline.artifacts.store_address import StoreAddress
from loopline.core.errors import InvalidArgumentError
from loopline.core.lineage_reads import listening_for_reads
from loopline.pipelines.context import TaskContext, reset_current, set_current
from loopline.pipelines.outputs import decode_output, encode_output


class AttemptTimeoutError(TimeoutError):
    """A task attempt ran longer than its timeout."""


class WorkerLostError(ConnectionError):
    """The worker running an attempt died (killed, out of memory) before it answered."""


class RemoteTaskFailure(Exception):
    """An exception raised by a task in another process, described by its class names."""

    def __init__(self, type_name: str, mro: tuple[str, ...], message: str,
                 traceback_text: str = "") -> None:
        self.type_name = type_name
        self.mro = mro
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(f"{type_name}: {message}")

    @classmethod
    def from_exception(cls, exc: BaseException) -> RemoteTaskFailure:
        """Describe ``exc`` (and its traceback) for sending to another process."""
        names = tuple(qualified_name(kind) for kind in type(exc).__mro__)
        text = "".join(traceback.format_exception(exc))
        return cls(type(exc).__name__, names, str(exc), text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteTaskFailure, (self.type_name, self.mro, self.message,
                                    self.traceback_text))


def qualified_name(kind: type) -> str:
    """Return ``module.QualName`` of a class."""
    return f"{kind.__module__}.{kind.__qualname__}"


def error_matches(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Tell whether ``error`` is one of ``kinds``, also when it was raised in another process."""
    if isinstance(error, kinds):
        return True
    if isinstance(error, RemoteTaskFailure):
        return any(qualified_name(kind) in error.mro for kind in kinds)
    return False


def describe_error(error: BaseException) -> str:
    """Return ``Type: message`` for an error, the original type for a remote failure."""
    if isinstance(error, RemoteTaskFailure):
        return f"{error.type_name}: {error.message}"
    return f"{type(error).__name__}: {error}"


def traceback_of(error: BaseException) -> str:
    """Return the formatted traceback of ``error`` (the remote one for a remote failure)."""
    if isinstance(error, RemoteTaskFailure):
        return error.traceback_text
    return "".join(traceback.format_exception(error))


@dataclass(frozen=True, slots=True)
class TaskLocator:
    """Where a module-level task is defined, so a fresh process can import it."""

    module: str
    qualname: str
    file: str | None

    @classmethod
    def of(cls, fn: Callable[..., Any], task_name: str) -> TaskLocator:
        """Locate the task whose function is ``fn``.

        Raises:
            InvalidArgumentError: when the task is not defined at a module's top level.
        """
        qualname = getattr(fn, "__qualname__", "")
        if not qualname or "<locals>" in qualname or "<lambda>" in qualname:
            raise InvalidArgumentError(
                f"task {task_name!r}", "must be defined at the top level of a module to run "
                "in another process (it is defined inside a function)")
        try:
            file: str | None = inspect.getfile(fn)
        except TypeError:
            file = None
        return cls(fn.__module__, qualname, file)

    def resolve(self) -> Callable[..., Any]:
        """Import the module (from its file when it is not importable) and return the task.

        Raises:
            InvalidArgumentError: when the module or the task cannot be found.
        """
        module = sys.modules.get(self.module) or self._import()
        found: Any = module
        for part in self.qualname.split("."):
            found = getattr(found, part, None)
        fn = getattr(found, "fn", found)  # a TaskDefinition wraps the function
        if not callable(fn):
            raise InvalidArgumentError("task", f"{self.module}.{self.qualname} is not callable")
        return fn  # type: ignore[no-any-return]

    def _import(self) -> Any:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            if self.file is None:
                raise InvalidArgumentError("task", f"cannot import module "
                                                   f"{self.module!r}") from exc
            spec = importlib.util.spec_from_file_location(self.module, self.file)
            if spec is None or spec.loader is None:
                raise InvalidArgumentError("task", f"cannot import {self.file}") from None
            module = importlib.util.module_from_spec(spec)
            sys.modules[self.module] = module
            spec.loader.exec_module(module)
            return module


@dataclass(frozen=True, slots=True)
class InputRef:
    """An upstream task's output, as its stored record, standing in an argument."""

    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TaskCall:
    """Everything one attempt needs, wherever it runs."""

    run_id: str
    task_key: str
    task_name: str
    attempt: int
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    blobs: StoreAddress
    inline_limit: int
    fn: Callable[..., Any] | None = None  # in-process workers call it directly
    locator: TaskLocator | None = None  # other processes import it from here

    def function(self) -> Callable[..., Any]:
        """Return the task's function, importing it when the call came from another process.

        Raises:
            InvalidArgumentError: when neither the function nor its location is known.
        """
        if self.fn is not None:
            return self.fn
        if self.locator is None:
            raise InvalidArgumentError(f"task {self.task_key!r}", "carries no function")
        return self.locator.resolve()

    def for_process(self) -> TaskCall:
        """Return this call with the function replaced by its location (for pickling).

        Raises:
            InvalidArgumentError: when the task is not defined at a module's top level.
        """
        if self.fn is None or getattr(self.fn, "ships_by_value", False):
            return self  # e.g. a command task: a plain dataclass that pickles by value
        locator = TaskLocator.of(self.fn, self.task_key)
        return TaskCall(self.run_id, self.task_key, self.task_name, self.attempt, self.args,
                        self.kwargs, self.blobs, self.inline_limit, None, locator)


@dataclass(frozen=True, slots=True)
class CallResult:
    """How an attempt ended on its worker: an output record, or an error; its logs."""

    record: dict[str, Any] | None = None
    error: BaseException | None = None
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_process(self) -> CallResult:
        """Return this result with the error made safe to send to another process."""
        if self.error is None or type(self.error) in (RemoteTaskFailure, AttemptTimeoutError):
            return self
        return CallResult(None, RemoteTaskFailure.from_exception(self.error), self.logs)


def _resolve(value: Any, blobs: ContentAddressedStore) -> Any:
    if isinstance(value, InputRef):
        return decode_output(value.record, blobs)
    if isinstance(value, list | tuple):
        return type(value)(_resolve(item, blobs) for item in value)
    if isinstance(value, dict):
        return {key: _resolve(item, blobs) for key, item in value.items()}
    return value


def _direct(thunk: Callable[[], Any]) -> Any:
    return thunk()


def execute_call(call: TaskCall, blobs: ContentAddressedStore | None = None,
                 run: Callable[[Callable[[], Any]], Any] = _direct) -> CallResult:
    """Run one attempt here: read inputs, call the task, store its output; never raises.

    ``blobs`` is the driver's own store for in-process workers; other workers open
    ``call.blobs``. ``run`` calls the task function alone (a thread invoker runs it under a
    deadline). Exceptions from the task (or ``SystemExit``) come back as the error.
    """
    try:
        store = blobs if blobs is not None else call.blobs.open()
    except Exception as exc:  # noqa: BLE001 - reported as the attempt's error, like any other
        return CallResult(None, exc)
    context = TaskContext(call.run_id, call.task_key, call.attempt, store)
    token = set_current(context)
    try:
        fn = call.function()
        args = _resolve(list(call.args), store)
        kwargs = _resolve(dict(call.kwargs), store)
        with listening_for_reads(context.used):
            value = run(lambda: fn(*args, **kwargs))
        record = encode_output(call.task_key, value, store, call.inline_limit)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user-code boundary
        return CallResult(None, exc, context.logs)
    finally:
        reset_current(token)
    if context.reads:  # kept with the output: a resumed or cached run still knows them
        record["reads"] = list(context.reads)
    return CallResult(record, None, context.logs)


class Invoker(Protocol):
    """Runs task calls somewhere: in this thread, in a worker process, on Ray."""

    name: str

    def invoke(self, call: TaskCall, timeout: float | None) -> CallResult:
        """Run ``call`` to its end; a timeout ends it with ``AttemptTimeoutError``."""
        ...

    def close(self) -> None:
        """Stop the workers this invoker started."""
        ...
