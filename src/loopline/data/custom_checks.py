"""Named custom checks written in Python, and the ``custom`` expectation that runs them.

A check is a function ``(table, **arguments) -> (passed, observed)`` registered with
``@register_check("name")``. It is user code: whatever it raises becomes a failed result
carrying the error (the semantics of ``UserCodeError``), never a crash of the validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import Field, field_validator

from loopline.core.errors import AlreadyExistsError, NotFoundError
from loopline.core.names import validate_name
from loopline.data.expectation_model import (
    CheckFunction,
    ColumnName,
    EvaluationContext,
    ExpectationModel,
    Outcome,
)
from loopline.data.observed import jsonable

F = TypeVar("F", bound=CheckFunction)

_CHECKS: dict[str, CheckFunction] = {}


def register_check(name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the custom check ``name``.

    Registering the same function again (a re-imported module) is allowed.

    Raises:
        InvalidArgumentError: when ``name`` is not a valid name.
        AlreadyExistsError: when another function already has ``name`` and not ``replace``.
    """
    validate_name(name, "check")

    def decorate(function: F) -> F:
        existing = _CHECKS.get(name)
        if existing is not None and not replace and _identity(existing) != _identity(function):
            raise AlreadyExistsError("check", name)
        _CHECKS[name] = function
        return function

    return decorate


def unregister_check(name: str) -> None:
    """Forget the custom check ``name``.

    Raises:
        NotFoundError: when no check has that name.
    """
    if _CHECKS.pop(name, None) is None:
        raise NotFoundError("check", name)


def registered_checks() -> Mapping[str, CheckFunction]:
    """Return a read-only view of the registered checks, by name."""
    return MappingProxyType(_CHECKS)


def _identity(function: CheckFunction) -> tuple[str, str]:
    return (getattr(function, "__module__", ""), getattr(function, "__qualname__", ""))


class Custom(ExpectationModel):
    """Run the registered check ``check`` with ``arguments`` (and ``column=`` when given)."""

    type: Literal["custom"] = "custom"
    check_name: str = Field(alias="check", min_length=1, max_length=128)
    column: ColumnName | None = None
    arguments_: dict[str, Any] = Field(default_factory=dict, alias="arguments")

    @field_validator("arguments_")
    @classmethod
    def _json(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(arguments, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON values: {exc}") from exc
        return arguments

    def arguments(self) -> dict[str, Any]:
        """Return the check's name and its arguments."""
        return {"check": self.check_name, "arguments": jsonable(self.arguments_)}

    def check(self, context: EvaluationContext) -> Outcome:
        """Call the check; an unknown name, an error or a malformed return fails the result."""
        function = context.checks.get(self.check_name)
        if function is None:
            return Outcome(False, {"registered": sorted(context.checks)[:50]},
                           f"no check named {self.check_name!r} is registered; decorate it with "
                           f"@register_check({self.check_name!r}) and import it first")
        keywords = dict(self.arguments_)
        if self.column is not None:
            keywords["column"] = self.column
        try:
            returned = function(context.table, **keywords)
        except Exception as exc:  # noqa: BLE001 - user code boundary: any error fails the result
            return Outcome(False, {"error": type(exc).__name__, "detail": str(exc)},
                           f"custom check {self.check_name!r} raised "
                           f"{type(exc).__name__}: {exc}")
        return _read_return(self.check_name, returned)


def _read_return(name: str, returned: Any) -> Outcome:
    valid = (isinstance(returned, tuple) and len(returned) == 2
             and isinstance(returned[0], bool | np.bool_) and isinstance(returned[1], Mapping))
    if not valid:
        return Outcome(False, {"returned": jsonable(repr(returned))[:200]},
                       f"custom check {name!r} must return (passed: bool, observed: dict), "
                       f"not {type(returned).__name__}")
    passed = bool(returned[0])
    verdict = "passed" if passed else "failed"
    return Outcome(passed, jsonable(returned[1]), f"custom check {name!r} {verdict}")
