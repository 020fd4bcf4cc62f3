"""Expectation suites (YAML or Python) and their evaluation into a ``ValidationReport``.

Pure: no I/O beyond reading a suite file. ``evaluate`` runs every expectation of a suite on
an Arrow table and never stops at the first failure. An expectation naming a column the
table lacks gives a FAILED result saying the column is missing, rather than an error, so
one bad column does not hide what the other expectations found; callers that would rather
refuse such a suite up front call ``Suite.check_columns(schema)`` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, get_args

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.names import validate_name
from loopline.core.validation import ExpectationResult, ValidationReport
from loopline.data.custom_checks import Custom, registered_checks
from loopline.data.expectation_model import (
    CheckFunction,
    EvaluationContext,
    EvaluationProblem,
    ExpectationModel,
    Outcome,
)
from loopline.data.expectations import (
    ColumnExists,
    ColumnType,
    NullRateAtMost,
    RowCountBetween,
    ValuesBetween,
    ValuesInSet,
    ValuesMatchRegex,
    ValuesUnique,
)
from loopline.data.observed import jsonable
from loopline.data.profile_checks import (
    NullRateShiftAtMost,
    RangeWithinPrevious,
    SchemaUnchanged,
    profile_columns,
)

Expectation = Annotated[
    ColumnExists | ColumnType | NullRateAtMost | ValuesBetween | ValuesInSet | ValuesUnique
    | ValuesMatchRegex | RowCountBetween | Custom | SchemaUnchanged | NullRateShiftAtMost
    | RangeWithinPrevious,
    Field(discriminator="type"),
]
EXPECTATION_TYPES: tuple[str, ...] = tuple(
    model.model_fields["type"].default for model in get_args(get_args(Expectation)[0]))
_YAML_SUFFIXES = (".yaml", ".yml")


class Suite(BaseModel):
    """A named list of expectations, loadable from YAML and buildable in Python.

    Built directly in Python, bad settings raise pydantic's ``ValidationError`` (a
    ``ValueError``) naming the field; ``from_dict`` and ``from_yaml`` raise
    ``InvalidArgumentError`` naming the field path, e.g. ``expectations[2].max``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str | None = None
    expectations: tuple[Expectation, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        try:
            return validate_name(name, "name")
        except InvalidArgumentError as exc:
            raise ValueError(exc.problem) from exc

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> Suite:
        """Build a suite from plain data (as parsed from YAML or JSON).

        Raises:
            InvalidArgumentError: naming the field path of the first problem.
        """
        if not isinstance(data, Mapping):
            raise InvalidArgumentError("suite", "must be a mapping with 'name' and "
                                                f"'expectations'{_where(source)}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc, source) from exc

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> Suite:
        """Load a suite from a YAML file or from YAML text.

        A ``Path``, or a one-line ``str`` ending ``.yaml`` or ``.yml``, is a file; any other
        ``str`` is YAML text.

        Raises:
            NotFoundError: when the suite file does not exist.
            InvalidArgumentError: when the YAML is malformed or a field is wrong (naming it).
        """
        source, text = "", path_or_text
        if isinstance(path_or_text, Path) or (
                "\n" not in path_or_text and path_or_text.strip().endswith(_YAML_SUFFIXES)):
            path = Path(path_or_text)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError as exc:
                raise NotFoundError("suite file", str(path)) from exc
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidArgumentError("suite", f"cannot read {path}: {exc}") from exc
            source = str(path)
        try:
            data = yaml.safe_load(str(text))
        except yaml.YAMLError as exc:
            raise InvalidArgumentError("suite", f"is not valid YAML{_where(source)}: "
                                                f"{exc}") from exc
        return cls.from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        """Return the suite as plain data that ``from_dict`` reads back."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dict(jsonable(data))

    def to_yaml(self) -> str:
        """Return the suite as YAML text that ``from_yaml`` reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def check_columns(self, schema: pa.Schema | Iterable[str]) -> None:
        """Refuse a suite naming a column that ``schema`` lacks (``column_exists`` aside).

        Raises:
            InvalidArgumentError: naming ``expectations[i].column`` (or ``.columns``).
        """
        names = set(schema.names if isinstance(schema, pa.Schema) else schema)
        for position, expectation in enumerate(self.expectations):
            wanted = _named_columns(expectation)
            missing = [column for column in wanted if column not in names]
            if missing:
                key = "columns" if getattr(expectation, "columns", None) else "column"
                raise InvalidArgumentError(
                    f"expectations[{position}].{key}",
                    f"column {missing[0]!r} is not in the table (it has: "
                    f"{', '.join(sorted(names)) or 'no columns'})")


    def columns_read(self) -> list[str] | None:
        """Return the columns evaluating this suite reads, or None when it needs them all.

        A custom check receives the whole table, so a suite with one reads every column;
        checks against profiles read none.
        """
        names: list[str] = []
        for expectation in self.expectations:
            if expectation.kind == "custom":
                return None
            if isinstance(expectation, ColumnExists):
                names.append(expectation.column)
            elif not expectation.uses_profiles:
                names.extend(expectation.table_columns())
        return list(dict.fromkeys(names))


def _named_columns(expectation: ExpectationModel) -> tuple[str, ...]:
    if isinstance(expectation, ColumnExists):
        return ()
    if expectation.uses_profiles:
        column = expectation.target_column
        return (column,) if column is not None else ()
    return expectation.table_columns()


def evaluate(suite: Suite, table: pa.Table, *, current_profile: Mapping[str, Any] | None = None,
             previous_profile: Mapping[str, Any] | None = None, dataset_version_id: str = "",
             checks: Mapping[str, CheckFunction] | None = None) -> ValidationReport:
    """Evaluate every expectation of ``suite`` on ``table``; pure, no I/O.

    ``checks`` replaces the registered custom checks (by default those registered with
    ``@register_check``). A missing column, a failed custom check or data that cannot be
    evaluated as asked give FAILED results, never an exception.

    Raises:
        InvalidArgumentError: when the suite compares profiles but ``current_profile`` is
            missing, or a profile is not a profile dict.
    """
    _require_profiles(suite, current_profile, previous_profile)
    context = EvaluationContext(table, current_profile, previous_profile,
                                registered_checks() if checks is None else checks)
    results = tuple(_evaluate_one(expectation, context) for expectation in suite.expectations)
    return ValidationReport(suite.name, dataset_version_id, results)


def _require_profiles(suite: Suite, current: Mapping[str, Any] | None,
                      previous: Mapping[str, Any] | None) -> None:
    positions = [i for i, e in enumerate(suite.expectations) if e.uses_profiles]
    if not positions:
        return
    if current is None:
        first = positions[0]
        raise InvalidArgumentError(
            "current_profile",
            f"suite {suite.name!r} compares profiles (expectations[{first}]: "
            f"{suite.expectations[first].kind}); give the profile of the table being validated")
    profile_columns(current, "current_profile")
    if previous is not None:
        profile_columns(previous, "previous_profile")


def _evaluate_one(expectation: ExpectationModel, context: EvaluationContext,
                  ) -> ExpectationResult:
    names = context.table.column_names
    missing = [column for column in expectation.table_columns() if column not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        outcome = Outcome(False, {"missing_columns": missing},
                          f"column {missing[0]!r} is missing from the table "
                          f"(it has: {shown or 'no columns'})")
    else:
        try:
            outcome = expectation.check(context)
        except EvaluationProblem as exc:
            outcome = Outcome(False, exc.observed, str(exc))
        except pa.ArrowException as exc:
            column = expectation.target_column
            on = f" on column {column!r}" if column else ""
            outcome = Outcome(False, {"error": str(exc)}, f"could not evaluate{on}: {exc}")
    return ExpectationResult(expectation.kind, expectation.target_column,
                             expectation.arguments(), outcome.passed,
                             jsonable(outcome.observed), outcome.message)


def _where(source: str) -> str:
    return f" in {source}" if source else ""


def _invalid(error: ValidationError, source: str) -> InvalidArgumentError:
    """Build one ``InvalidArgumentError`` from pydantic's errors.

    It names the first problem's path and message, and the paths of the others.
    """
    problems: dict[str, str] = {}
    for detail in error.errors():
        path, message = _path(detail["loc"]), _message(detail)
        if detail["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path += ".type"
        problems.setdefault(path, message)
    (first_path, first_message), *others = problems.items()
    more = f" (and {len(others)} more: {', '.join(p for p, _ in others)})" if others else ""
    return InvalidArgumentError(first_path, f"{first_message}{_where(source)}{more}")


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif index > 0 and isinstance(loc[index - 1], int) and part in EXPECTATION_TYPES:
            continue  # the union member pydantic tried: the index already names the item
        else:
            text += f".{part}" if text else part
    return text or "suite"


def _message(detail: Mapping[str, Any]) -> str:
    kind, message = detail["type"], str(detail["msg"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field (check the spelling)"
    if kind == "union_tag_invalid":
        tag = detail.get("ctx", {}).get("tag")
        return f"unknown expectation type {tag!r}; known: {', '.join(EXPECTATION_TYPES)}"
    if kind == "union_tag_not_found":
        return f"is required (one of: {', '.join(EXPECTATION_TYPES)})"
    return message.removeprefix("Value error, ")
