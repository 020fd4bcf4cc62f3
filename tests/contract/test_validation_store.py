"""Validation runs on every backend: reports round-trip exactly, failures are stored too, and
each run commits with its event and audit entry."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from loopline.core.errors import InvalidArgumentError, NotFoundError, ValidationFailedError
from loopline.core.events import EventType
from loopline.core.ids import new_id
from loopline.data.validation import Suite
from loopline.data.validation_service import ValidationService
from loopline.store import AuditFilter, MetadataStore
from loopline.store.models import DatasetVersionRow

SUITE = Suite.from_yaml("""
name: orders
expectations:
  - {type: column_exists, column: id}
  - {type: values_unique, column: id}
  - {type: values_between, column: amount, min: 0, max: 100, mostly: 0.5}
  - {type: values_in_set, column: city, values: [Oslo, Lima]}
  - {type: null_rate_at_most, column: amount, max: 0.0}
  - {type: values_match_regex, column: city, regex: '^[A-Z]'}
  - {type: row_count_between, min: 1, max: 10}
  - {type: null_rate_shift_at_most, max_shift: 0.1}
  - {type: custom, check: not_registered_anywhere}
""")
GOOD = pa.table({"id": [1, 2, 3], "amount": [1.5, 2.5, 3.5], "city": ["Oslo", "Lima", "Oslo"]})
BAD = pa.table({"id": [1, 1, 3], "amount": [1.5, None, 300.0], "city": ["Oslo", "Rome", "x"]})
PROFILE = {"rows": 3, "columns": {"amount": {"kind": "numeric", "null_rate": 0.0}}}


def add_version(store: MetadataStore, dataset: str = "orders", version: int = 1) -> str:
    version_id = new_id()
    with store.write("t") as uow:
        uow.session.add(DatasetVersionRow(
            id=version_id, dataset=dataset, version=version, content_hash="0" * 64,
            blob_digest="0" * 64, rows=3, columns=[], profile={}, source_uri=None,
            source_hash=None, parents=[], created_at=datetime.now(UTC), created_by="t"))
    return version_id


def passing_suite() -> Suite:
    return Suite(name="orders", expectations=SUITE.expectations[:7])


def test_a_saved_report_loads_back_equal(store: MetadataStore) -> None:
    version_id = add_version(store)
    service = ValidationService(store, "alice")
    report = service.validate(version_id, BAD, SUITE, current_profile=PROFILE,
                              previous_profile=PROFILE)
    assert report.run_id and report.created_by == "alice"
    loaded = service.load(report.run_id)
    assert loaded == report
    assert loaded.summary() == report.summary()
    assert [r.observed for r in loaded.results] == [r.observed for r in report.results]


def test_a_failed_validation_is_stored_with_passed_false(store: MetadataStore) -> None:
    version_id = add_version(store)
    service = ValidationService(store, "alice")
    report = service.validate(version_id, BAD, passing_suite())
    assert not report.passed
    [run] = service.history(version_id)
    assert (run.id, run.passed, run.suite) == (report.run_id, False, "orders")
    assert (run.expectations, run.failures) == (7, len(report.failures)) == (7, 4)
    with pytest.raises(ValidationFailedError, match="FAILED \\(4 of 7 expectations failed\\)"):
        service.load(run.id).raise_for_failure()


def test_history_lists_runs_newest_first_per_version(store: MetadataStore) -> None:
    first, second = add_version(store), add_version(store, version=2)
    service = ValidationService(store, "bob")
    runs = [service.validate(first, table, passing_suite()) for table in (BAD, GOOD)]
    service.validate(second, GOOD, passing_suite())
    history = service.history(first)
    assert [r.id for r in history] == [runs[1].run_id, runs[0].run_id]
    assert [r.passed for r in history] == [True, False]
    assert history[0].failures == 0
    assert len(service.history(second)) == 1
    with pytest.raises(InvalidArgumentError, match="limit"):
        service.history(first, limit=0)


def test_event_and_audit_entry_are_written_with_the_run(store: MetadataStore) -> None:
    version_id = add_version(store)
    before = store.events.last_seq()
    report = ValidationService(store, "carol").validate(version_id, BAD, passing_suite())
    [event] = store.events.read_after(before, types=[EventType.DATASET_VALIDATED])
    assert event.subject == f"dataset_version:{version_id}"
    assert event.actor == "carol"
    payload = dict(event.payload)
    assert {k: payload[k] for k in ("suite", "passed", "failures", "run_id", "dataset")} == {
        "suite": "orders", "passed": False, "failures": 4, "run_id": report.run_id,
        "dataset": "orders@1"}
    assert payload["failed"][0] == "values_unique(id)"
    [entry] = store.audit.entries(AuditFilter(action="dataset.validate"))
    assert (entry.actor, entry.subject) == ("carol", f"dataset_version:{version_id}")
    assert entry.after is not None and entry.after["run_id"] == report.run_id
    assert store.audit.verify().ok

def test_validating_an_unknown_version_stores_nothing(store: MetadataStore) -> None:
    service = ValidationService(store, "dave")
    before = store.events.last_seq()
    with pytest.raises(NotFoundError, match="dataset version 'nope' not found"):
        service.validate("nope", GOOD, passing_suite())
    assert store.events.last_seq() == before
    assert service.history("nope") == []
    with pytest.raises(NotFoundError, match="validation run"):
        service.load("nope")
