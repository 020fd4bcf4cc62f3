"""Results of validating a dataset version against an expectation suite, and their report.

Pure: no I/O. One ``ExpectationResult`` per expectation (what was expected, what was observed,
pass or fail); a ``ValidationReport`` gathers them for one suite and one dataset version and
renders the readable text a failed pipeline shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.errors import ValidationFailedError

_MAX_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """The outcome of one expectation.

    ``arguments`` are the expectation's settings (JSON values, without ``type`` and
    ``column``); ``observed`` is what the data showed (JSON values), e.g. the null rate or
    the count of offending rows with a few examples.
    """

    expectation: str
    column: str | None
    arguments: Mapping[str, Any]
    passed: bool
    observed: Mapping[str, Any]
    message: str

    @property
    def label(self) -> str:
        """A short description: ``null_rate_at_most(amount, max=0.01)``."""
        parts = [self.column] if self.column is not None else []
        parts += [f"{key}={_short(value)}" for key, value in self.arguments.items()]
        return f"{self.expectation}({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class ValidationRun:
    """One stored validation run, as listed in a dataset version's history."""

    id: str
    dataset_version_id: str
    suite: str
    passed: bool
    expectations: int
    failures: int
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every expectation result of one suite on one dataset version.

    ``run_id``, ``created_at`` and ``created_by`` are set once the report has been stored.
    """

    suite: str
    dataset_version_id: str
    results: tuple[ExpectationResult, ...]
    run_id: str = ""
    created_at: datetime | None = None
    created_by: str = ""

    @property
    def passed(self) -> bool:
        """True when every expectation passed (an empty suite passes)."""
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[ExpectationResult, ...]:
        """The results that failed, in suite order."""
        return tuple(result for result in self.results if not result.passed)

    def summary(self) -> str:
        """Render a readable multi-line report: a headline, then one line per expectation.

        Failed expectations are marked ``FAIL`` and followed by what was observed.
        """
        target = self.dataset_version_id or "(unsaved table)"
        verdict = ("PASSED" if self.passed else
                   f"FAILED ({len(self.failures)} of {len(self.results)} expectations failed)")
        lines = [f"Validation of suite {self.suite!r} on dataset version {target}: {verdict}"]
        if self.run_id:
            lines.append(f"  run {self.run_id}")
        for position, result in enumerate(self.results):
            mark = "ok  " if result.passed else "FAIL"
            lines.append(f"  [{mark}] {position}. {result.label}: {result.message}")
            if not result.passed and result.observed:
                observed = ", ".join(f"{key}={_short(value)}"
                                     for key, value in result.observed.items())
                lines.append(f"           observed: {observed}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Do nothing when the suite passed.

        Raises:
            ValidationFailedError: carrying ``summary()`` when any expectation failed.
        """
        if not self.passed:
            raise ValidationFailedError(self.suite, self.dataset_version_id,
                                        len(self.failures), self.summary())


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS - 3] + "..."
