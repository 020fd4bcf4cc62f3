"""Pipeline parameters bound to the pipeline function's signature and checked by annotation.

Pure: no I/O. A run's parameters are recorded as JSON, so they must be JSON values; an
unknown, missing or wrongly typed parameter is refused naming it, before anything runs.
Annotations understood: classes, ``Any``, ``X | None`` and other unions, ``Literal``,
``list[X]``, ``set[X]``, ``tuple[X, ...]``/``tuple[X, Y]``, ``dict[K, V]``; anything else is
accepted unchecked.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from loopline.core.canonical import canonical_json
from loopline.core.errors import InvalidArgumentError
from loopline.pipelines.definitions import PipelineDefinition


def _matches_generic(value: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    if origin in (list, set, frozenset):
        return isinstance(value, origin) and all(matches(item, args[0]) for item in value)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(matches, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(
            matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    return isinstance(origin, type) and isinstance(value, origin)


def matches(value: Any, hint: Any) -> bool:
    """Tell whether ``value`` fits the annotation ``hint`` (``bool`` is not a number here)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(matches(value, option) for option in args)
    if origin is typing.Literal:
        return value in args
    if origin is not None:
        return not args or _matches_generic(value, origin, args)
    if not isinstance(hint, type):
        return True
    if isinstance(value, bool) and hint in (int, float):
        return False
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def _hints(pipeline: PipelineDefinition) -> dict[str, Any]:
    try:
        return typing.get_type_hints(pipeline.fn)
    except (NameError, TypeError) as exc:
        raise InvalidArgumentError(f"pipeline {pipeline.name!r}",
                                   f"has annotations that cannot be resolved: {exc}") from exc


def _given(signature: inspect.Signature, parameters: Mapping[str, Any]) -> None:
    accepted = [name for name, p in signature.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in parameters:
        if name not in accepted:
            raise InvalidArgumentError(f"parameters.{name}", "unknown parameter; the pipeline "
                                       f"takes {', '.join(accepted) or 'no parameters'}")


def bind_parameters(pipeline: PipelineDefinition,
                    parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return every parameter of ``pipeline``, defaults filled in, after checking them.

    Raises:
        InvalidArgumentError: naming ``parameters.<name>`` when a parameter is unknown,
            missing, of the wrong type or not a JSON value.
    """
    given = dict(parameters or {})
    signature, hints = pipeline.signature, _hints(pipeline)
    _given(signature, given)
    bound: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in given:
            value = given[name]
        elif parameter.default is not inspect.Parameter.empty:
            value = parameter.default
        else:
            raise InvalidArgumentError(f"parameters.{name}", "is required")
        hint = hints.get(name, Any)
        if not matches(value, hint):
            raise InvalidArgumentError(f"parameters.{name}", f"expected {_show(hint)}, got "
                                       f"{type(value).__name__} {value!r}")
        try:
            canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"parameters.{name}",
                                       f"must be a JSON value (it is recorded): {exc}") from exc
        bound[name] = value
    return bound


def _show(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
