"""The base of every expectation: an inert, validated model with a ``check`` method.

Pure: no I/O. Expectations are frozen pydantic models that refuse unknown fields; the
``type`` field each declares is the discriminator of the union built in
``loopline.data.validation``. ``check`` returns an ``Outcome``; data that cannot be evaluated
as asked raise ``EvaluationProblem``, which the evaluator turns into a failed result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from loopline.data.observed import jsonable

CheckFunction = Callable[..., tuple[bool, Mapping[str, Any]]]
"""A custom check: ``(table, **arguments) -> (passed, observed)``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one expectation found: pass or fail, what was observed, and a sentence saying so."""

    passed: bool
    observed: Mapping[str, Any]
    message: str


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """Everything an expectation may look at: the table, the profiles, the custom checks."""

    table: pa.Table
    current_profile: Mapping[str, Any] | None = None
    previous_profile: Mapping[str, Any] | None = None
    checks: Mapping[str, CheckFunction] = field(default_factory=dict)


class EvaluationProblem(Exception):
    """The data cannot be evaluated as asked (e.g. a regex on an integer column).

    Raised inside ``check``; the evaluator turns it into a failed result with this message.
    """

    def __init__(self, message: str, observed: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.observed = dict(observed or {})


def _check_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | date):
        return value
    raise ValueError(f"{value!r} must be a number, string, boolean or date")


def _check_bound(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number or an ISO date/time, not a boolean")
    if value is None or isinstance(value, int | float | date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} must be a number or an ISO date/time")


Scalar = Annotated[Any, AfterValidator(_check_scalar)]
Bound = Annotated[Any, AfterValidator(_check_bound)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Mostly = Annotated[float, Field(gt=0.0, le=1.0)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]


class ExpectationModel(BaseModel, ABC):
    """Base of every expectation: frozen, no unknown fields, and a ``check`` to evaluate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uses_profiles: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        """The expectation's type name (its discriminator)."""
        return str(getattr(self, "type"))  # noqa: B009 - ``type`` is declared by each subclass

    @property
    def target_column(self) -> str | None:
        """The column a result is reported under, if any."""
        column = getattr(self, "column", None)
        return column if isinstance(column, str) else None

    def table_columns(self) -> tuple[str, ...]:
        """Columns the table must have for ``check`` to run; missing ones fail the result."""
        column = self.target_column
        return (column,) if column is not None else ()

    def arguments(self) -> dict[str, Any]:
        """Return the settings as given, as JSON values (no ``type``, ``column`` or defaults)."""
        return dict(jsonable(self.model_dump(mode="json", exclude={"type", "column"},
                                             exclude_none=True, exclude_defaults=True)))

    @abstractmethod
    def check(self, context: EvaluationContext) -> Outcome:
        """Evaluate on ``context``.

        Raises:
            EvaluationProblem: when the data cannot be evaluated as asked.
        """
