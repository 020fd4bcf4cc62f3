"""Validation runs and their per-expectation results in the metadata store.

Writes go through the caller's write transaction (``uow.session``) so a run commits with its
event and audit entry; reads open their own session.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from loopline.core.errors import InvalidArgumentError
from loopline.core.validation import ExpectationResult, ValidationReport, ValidationRun
from loopline.store.models import DatasetVersionRow, ValidationResultRow, ValidationRunRow

MAX_LIST = 1000


def dataset_version_ref(session: Session, version_id: str) -> str | None:
    """Return ``name@version`` of the dataset version with this id, or None."""
    row = session.get(DatasetVersionRow, version_id)
    return f"{row.dataset}@{row.version}" if row is not None else None


def add_report(session: Session, report: ValidationReport) -> None:
    """Insert a stored report's run row and one result row per expectation.

    Raises:
        InvalidArgumentError: when the report has no run id, time or actor yet.
    """
    if not report.run_id or report.created_at is None or not report.created_by:
        raise InvalidArgumentError("report", "needs run_id, created_at and created_by to be "
                                             "stored")
    session.add(ValidationRunRow(
        id=report.run_id, dataset_version_id=report.dataset_version_id, suite=report.suite,
        passed=report.passed, created_at=report.created_at, created_by=report.created_by))
    session.flush()  # the run row first: result rows refer to it
    session.add_all([
        ValidationResultRow(
            run_id=report.run_id, position=position, expectation=result.expectation,
            column_name=result.column, arguments=dict(result.arguments), passed=result.passed,
            observed=dict(result.observed), message=result.message)
        for position, result in enumerate(report.results)])
    session.flush()


def _result(row: ValidationResultRow) -> ExpectationResult:
    return ExpectationResult(expectation=row.expectation, column=row.column_name,
                             arguments=row.arguments, passed=row.passed, observed=row.observed,
                             message=row.message)


class ValidationQueries:
    """Reads of validation runs and reports."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def runs(self, dataset_version_id: str, limit: int = 100) -> list[ValidationRun]:
        """List the runs on one dataset version, newest first, with their failure counts.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        if not 1 <= limit <= MAX_LIST:
            raise InvalidArgumentError("limit", f"must be between 1 and {MAX_LIST}")
        failed = sa.case((ValidationResultRow.passed.is_(False), 1), else_=0)
        counts = (sa.select(ValidationResultRow.run_id,
                            sa.func.count().label("expectations"),
                            sa.func.sum(failed).label("failures"))
                  .group_by(ValidationResultRow.run_id).subquery())
        query = (sa.select(ValidationRunRow, counts.c.expectations, counts.c.failures)
                 .outerjoin(counts, counts.c.run_id == ValidationRunRow.id)
                 .where(ValidationRunRow.dataset_version_id == dataset_version_id)
                 .order_by(ValidationRunRow.created_at.desc(), ValidationRunRow.id.desc())
                 .limit(limit))
        with Session(self._engine) as session:
            return [ValidationRun(id=run.id, dataset_version_id=run.dataset_version_id,
                                  suite=run.suite, passed=run.passed,
                                  expectations=int(expectations or 0),
                                  failures=int(failures or 0), created_at=run.created_at,
                                  created_by=run.created_by)
                    for run, expectations, failures in session.execute(query)]

    def report(self, run_id: str) -> ValidationReport | None:
        """Return the stored report of a run, or None when there is no such run."""
        with Session(self._engine) as session:
            run = session.get(ValidationRunRow, run_id)
            if run is None:
                return None
            rows: Sequence[ValidationResultRow] = session.scalars(
                sa.select(ValidationResultRow).where(ValidationResultRow.run_id == run_id)
                .order_by(ValidationResultRow.position)).all()
            return ValidationReport(suite=run.suite, dataset_version_id=run.dataset_version_id,
                                    results=tuple(_result(row) for row in rows), run_id=run.id,
                                    created_at=run.created_at, created_by=run.created_by)
