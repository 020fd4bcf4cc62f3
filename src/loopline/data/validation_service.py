"""Validating dataset versions: evaluate a suite, store the run, and announce it, atomically.

The run row, its result rows, the ``dataset.validated`` event and the ``dataset.validate``
audit entry commit in one transaction. A failed validation is stored like a passed one
(``passed=False``); stopping a pipeline is the caller's choice, through
``ValidationReport.raise_for_failure()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from loopline.core.errors import NotFoundError
from loopline.core.events import EventType
from loopline.core.governance import Permission
from loopline.core.ids import new_id
from loopline.core.ports import Authorizer, authorize_if_wired
from loopline.core.validation import ValidationReport, ValidationRun
from loopline.data.validation import Suite, evaluate
from loopline.store import MetadataStore
from loopline.store.validations import ValidationQueries, add_report, dataset_version_ref

MAX_LISTED_FAILURES = 10


class ValidationService:
    """Validation of the dataset versions of one workspace, stored and audited."""

    def __init__(self, store: MetadataStore, actor: str,
                 authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._authorizer = authorizer
        self._actor = actor
        self._queries = ValidationQueries(store.engine)

    def validate(self, version_id: str, table: pa.Table, suite: Suite,
                 current_profile: Mapping[str, Any] | None = None,
                 previous_profile: Mapping[str, Any] | None = None) -> ValidationReport:
        """Evaluate ``suite`` on ``table`` (the data of ``version_id``) and store the report.

        Returns the stored report, passed or not; call ``raise_for_failure()`` to stop on a
        failure.

        Raises:
            NotFoundError: when no dataset version has ``version_id``.
            InvalidArgumentError: when the suite compares profiles and none was given.
            AccessDeniedError: when roles are enforced and the actor may not write.
        """
        authorize_if_wired(self._authorizer, self._actor, Permission.WRITE)
        report = evaluate(suite, table, current_profile=current_profile,
                          previous_profile=previous_profile, dataset_version_id=version_id)
        with self._store.write(self._actor) as uow:
            ref = dataset_version_ref(uow.session, version_id)
            if ref is None:
                raise NotFoundError("dataset version", version_id,
                                    "snapshot the data first; validation links to a version")
            report = dataclasses.replace(report, run_id=new_id(),
                                         created_at=self._store.clock.now(),
                                         created_by=self._actor)
            add_report(uow.session, report)
            details = _details(report, ref)
            uow.emit(EventType.DATASET_VALIDATED, f"dataset_version:{version_id}", details)
            uow.audit("dataset.validate", f"dataset_version:{version_id}", None, details)
        return report

    def history(self, version_id: str, limit: int = 100) -> list[ValidationRun]:
        """List the validation runs of a dataset version, newest first.

        Raises:
            InvalidArgumentError: when ``limit`` is outside 1..1000.
        """
        return self._queries.runs(version_id, limit)

    def load(self, run_id: str) -> ValidationReport:
        """Return the stored report of a validation run.

        Raises:
            NotFoundError: when there is no run with this id.
        """
        report = self._queries.report(run_id)
        if report is None:
            raise NotFoundError("validation run", run_id)
        return report


def _details(report: ValidationReport, ref: str) -> dict[str, Any]:
    failed = [result.label for result in report.failures]
    return {"run_id": report.run_id, "dataset": ref, "suite": report.suite,
            "passed": report.passed, "expectations": len(report.results),
            "failures": len(failed), "failed": failed[:MAX_LISTED_FAILURES]}
