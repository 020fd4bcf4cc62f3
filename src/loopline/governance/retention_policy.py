"""The ``kind: retention`` policy document: how long each data class is kept.

Pure: no I/O. A document names a maximum age per data class; a class the document does not
name is kept forever. Durations are written as in every policy file (``90d``, ``12h``).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.core.errors import InvalidArgumentError
from loopline.governance.durations import format_duration, parse_duration


class DataClass(StrEnum):
    """What retention can delete.

    ``prediction_log`` and ``feedback`` are prediction log segments of that kind;
    ``dataset_snapshots`` are the Parquet data of old dataset versions (the version row stays
    as evidence); ``run_logs`` are the logs and tracebacks of task attempts;
    ``unreferenced_artifacts`` are stored objects no record names.
    """

    PREDICTION_LOG = "prediction_log"
    FEEDBACK = "feedback"
    DATASET_SNAPSHOTS = "dataset_snapshots"
    RUN_LOGS = "run_logs"
    UNREFERENCED_ARTIFACTS = "unreferenced_artifacts"


def parse_data_class(value: str, field: str = "data_class", *, allow_all: bool = False) -> str:
    """Return ``value`` as a data class name (``*`` too when ``allow_all``).

    Raises:
        InvalidArgumentError: naming ``field`` and the classes there are.
    """
    if allow_all and value == "*":
        return value
    try:
        return DataClass(value).value
    except ValueError:
        choices = ", ".join(DataClass) + (" or *" if allow_all else "")
        raise InvalidArgumentError(
            field, f"{value!r} is not a data class; use one of {choices}") from None


class ClassRetention(BaseModel):
    """How long one data class is kept: anything older than ``max_age`` may be deleted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age: timedelta

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        if not isinstance(value, str | int | timedelta) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not a duration; write a number and a unit, e.g. 90d")
        try:
            return parse_duration(value, "max_age")
        except InvalidArgumentError as exc:
            # pydantic wraps ValueError with the location; the loader reports that path.
            raise ValueError(exc.problem) from exc

    def describe(self) -> str:
        """Return the age as written in policy files (``90d``)."""
        return format_duration(self.max_age)


class RetentionPolicy(BaseModel):
    """A ``kind: retention`` document: a maximum age per data class it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["retention"] = "retention"
    name: str = Field(min_length=1)
    classes: dict[DataClass, ClassRetention] = Field(min_length=1)

    def max_age(self, data_class: DataClass) -> timedelta | None:
        """Return how long ``data_class`` is kept, or None when the policy keeps it forever."""
        rule = self.classes.get(data_class)
        return rule.max_age if rule is not None else None
