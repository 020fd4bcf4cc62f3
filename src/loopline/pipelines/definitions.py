"""Inert, validated task and pipeline definitions made by ``@task`` and ``@pipeline``.

Decorating does no work: it checks the options and wraps the function. Calling a task inside
a pipeline function being planned records a call in the graph under construction (see
``graph.py``) and returns a future; called anywhere else, a task is its plain function.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, overload

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name
from loopline.pipelines.schedules import Schedule, Trigger, bind_schedules

MAX_RETRIES = 100


class CallRecorder(Protocol):
    """Where task calls go while a pipeline function is being planned."""

    def record(self, task: TaskDefinition, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        """Record one call of ``task`` and return the future standing for its output."""
        ...


RECORDER: ContextVar[CallRecorder | None] = ContextVar("loopline_task_recorder", default=None)


# Retried unless a task names others: errors that say "try again", not "this is a bug".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before another attempt of a failed task."""

    retries: int = 0
    retry_delay: float = 1.0
    backoff: float = 2.0
    jitter: float = 0.1
    max_delay: float = 60.0
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS

    def delay(self, attempt: int, random_value: float) -> float:
        """Return the wait after failed ``attempt`` (1-based), given a uniform value in [0, 1).

        ``retry_delay * backoff^(attempt-1)``, spread by ± ``jitter`` of itself, capped at
        ``max_delay``.
        """
        if self.retry_delay <= 0:
            return 0.0
        # Grow in log space so a large backoff or attempt count cannot overflow.
        growth = (attempt - 1) * math.log(self.backoff) if self.backoff > 0 else -math.inf
        ceiling = math.log(self.max_delay / self.retry_delay) if self.max_delay > 0 \
            else -math.inf
        base = self.max_delay if growth >= ceiling else self.retry_delay * math.exp(growth)
        spread = base * self.jitter * (2.0 * random_value - 1.0)
        return max(0.0, min(base + spread, self.max_delay))

    def retries_after(self, error: BaseException, attempt: int) -> bool:
        """Tell whether ``error`` from ``attempt`` (1-based) earns another attempt."""
        return attempt <= self.retries and isinstance(error, self.retry_on)


def _check_number(field: str, value: object, minimum: float,
                  maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            minimum <= value <= maximum):
        raise InvalidArgumentError(field, f"must be a number from {minimum} to {maximum}, "
                                          f"not {value!r}")
    return float(value)


def _check_retry_on(value: object) -> tuple[type[BaseException], ...]:
    classes = value if isinstance(value, tuple) else (value,)
    if not classes or not all(isinstance(c, type) and issubclass(c, BaseException)
                              for c in classes):
        raise InvalidArgumentError("retry_on", "must be an exception class or a tuple of them")
    return classes


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options ``@task`` accepts, checked."""

    retry: RetryPolicy
    timeout: float | None = None
    cache: bool = True


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A function made a task: its name, retry policy, timeout and cache setting."""

    fn: Callable[..., Any]
    name: str
    options: TaskOptions

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Record the call while a pipeline is planned; otherwise call the function."""
        recorder = RECORDER.get()
        if recorder is None:
            return self.fn(*args, **kwargs)
        return recorder.record(self, args, kwargs)


@dataclass(frozen=True, slots=True)
class PipelineDefinition:
    """A function made a pipeline: calling its tasks with its parameters builds the DAG.

    ``schedules`` and ``triggers`` say when ``loopline scheduler`` starts it on its own.
    """

    fn: Callable[..., Any]
    name: str
    schedules: tuple[Schedule, ...] = ()
    triggers: tuple[Trigger, ...] = ()

    @property
    def signature(self) -> inspect.Signature:
        """The pipeline function's signature: its parameters and their annotations."""
        return inspect.signature(self.fn)


def _name_of(fn: Callable[..., Any], name: str | None) -> str:
    if not callable(fn):
        raise InvalidArgumentError("function", f"{fn!r} is not callable")
    chosen = name if name is not None else getattr(fn, "__name__", "")
    return validate_name(chosen, "name")


def _options(retries: int, delays: tuple[float, float, float, float], retry_on: object,
             timeout: float | None, cache: bool) -> TaskOptions:
    if isinstance(retries, bool) or not isinstance(retries, int) or not (
            0 <= retries <= MAX_RETRIES):
        raise InvalidArgumentError("retries", f"must be an integer from 0 to {MAX_RETRIES}")
    retry_delay, backoff, jitter, max_delay = delays
    policy = RetryPolicy(retries, _check_number("retry_delay", retry_delay, 0.0),
                         _check_number("backoff", backoff, 1.0),
                         _check_number("jitter", jitter, 0.0, 1.0),
                         _check_number("max_delay", max_delay, 0.0), _check_retry_on(retry_on))
    if timeout is not None:
        timeout = _check_number("timeout", timeout, 0.001)
    if not isinstance(cache, bool):
        raise InvalidArgumentError("cache", "must be True or False")
    return TaskOptions(policy, timeout, cache)


@overload
def task(fn: Callable[..., Any], /) -> TaskDefinition: ...


@overload
def task(*, retries: int = 0, retry_delay: float = 1.0, backoff: float = 2.0,
         jitter: float = 0.1, max_delay: float = 60.0,
         retry_on: type[BaseException] | tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
         timeout: float | None = None, cache: bool = True,
         name: str | None = None) -> Callable[[Callable[..., Any]], TaskDefinition]: ...


def task(fn: Callable[..., Any] | None = None, /, *, retries: int = 0,  # noqa: PLR0913
         retry_delay: float = 1.0, backoff: float = 2.0, jitter: float = 0.1,
         max_delay: float = 60.0,
         retry_on: type[BaseException] | tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
         timeout: float | None = None, cache: bool = True, name: str | None = None,
         ) -> TaskDefinition | Callable[[Callable[..., Any]], TaskDefinition]:
    """Make a function a pipeline task, as ``@task`` or ``@task(retries=3, ...)``.

    Only exceptions of ``retry_on`` are retried, ``retries`` times at most, after
    ``retry_delay * backoff^(n-1)`` seconds ± ``jitter`` (a fraction), capped at
    ``max_delay``. ``timeout`` fails an attempt that runs longer (its thread is abandoned,
    its late result refused). ``cache=False`` always runs the task.

    Raises:
        InvalidArgumentError: naming the option that is out of range or of the wrong type.
    """
    options = _options(retries, (retry_delay, backoff, jitter, max_delay), retry_on, timeout,
                       cache)

    def decorate(function: Callable[..., Any]) -> TaskDefinition:
        return TaskDefinition(function, _name_of(function, name), options)

    return decorate(fn) if fn is not None else decorate


@overload
def pipeline(fn: Callable[..., Any], /) -> PipelineDefinition: ...


@overload
def pipeline(*, name: str | None = None, schedule: Schedule | str | None = None,
             schedules: Sequence[Schedule | str] = (), triggers: Sequence[Trigger] = (),
             ) -> Callable[[Callable[..., Any]], PipelineDefinition]:
    ...


def pipeline(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             schedule: Schedule | str | None = None, schedules: Sequence[Schedule | str] = (),
             triggers: Sequence[Trigger] = (),
             ) -> PipelineDefinition | Callable[[Callable[..., Any]], PipelineDefinition]:
    """Make a function a pipeline, as ``@pipeline`` or ``@pipeline(name="train", ...)``.

    Its parameters are the run's parameters (annotations are checked before a run starts);
    its body calls tasks, passing their results to other tasks, which builds the DAG.
    ``schedule`` (a ``Schedule`` or a cron string), ``schedules`` and ``triggers`` let
    ``loopline scheduler`` start it; together they must give every parameter that has no
    default, and only parameters the function takes.

    Raises:
        InvalidArgumentError: when the name breaks the naming rule, or naming the schedule
            or trigger field that is wrong.
    """
    def decorate(function: Callable[..., Any]) -> PipelineDefinition:
        chosen = _name_of(function, name)
        accepted = [p for p in inspect.signature(function).parameters.values()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        made, hooks = bind_schedules(
            chosen, [p.name for p in accepted],
            [p.name for p in accepted if p.default is inspect.Parameter.empty],
            ([schedule] if schedule is not None else []) + list(schedules), triggers)
        return PipelineDefinition(function, chosen, made, hooks)

    return decorate(fn) if fn is not None else decorate
