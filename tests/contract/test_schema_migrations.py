"""The schema contract on every backend: migrations create exactly the models, and a database
at another revision is refused with the command to run."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from loopline.core.errors import SchemaVersionError
from loopline.store import MetadataStore, SchemaState, schema
from loopline.store.models import Base


def test_upgrade_from_empty_yields_exactly_the_models(db_url: str) -> None:
    store = MetadataStore.open(db_url, check_schema=False)
    try:
        assert schema.status(store.engine).state is SchemaState.EMPTY
        assert store.upgrade().state is SchemaState.CURRENT
        with store.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": schema.VERSION_TABLE,
                                  "compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.close()


def test_reopening_and_upgrading_again_changes_nothing(store: MetadataStore) -> None:
    tables_before = set(sa.inspect(store.engine).get_table_names())
    head_before = store.audit.head()
    assert store.upgrade().state is SchemaState.CURRENT
    reopened = MetadataStore.open(store.url)
    try:
        assert set(sa.inspect(reopened.engine).get_table_names()) == tables_before
        assert reopened.audit.head() == head_before
    finally:
        reopened.close()


def test_empty_database_is_refused_naming_init_and_upgrade(db_url: str) -> None:
    with pytest.raises(SchemaVersionError, match="loopline db upgrade") as caught:
        MetadataStore.open(db_url)
    assert "loopline init" in str(caught.value)


def test_newer_database_is_refused_and_not_downgraded(store: MetadataStore) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = :v"),
                           {"v": "9999_from_the_future"})
    with pytest.raises(SchemaVersionError, match="newer than this loopline"):
        MetadataStore.open(store.url)
    with pytest.raises(SchemaVersionError, match="newer"):
        store.upgrade()


def test_older_database_is_refused_naming_db_upgrade(db_url: str) -> None:
    store = MetadataStore.open(db_url, check_schema=False)
    try:
        schema.upgrade(store.engine, target="0001_foundation")
        with pytest.raises(SchemaVersionError, match="run `loopline db upgrade`") as caught:
            MetadataStore.open(db_url)
        assert caught.value.current == "0001_foundation"
        assert caught.value.expected == schema.head_revision()
        assert store.upgrade().state is SchemaState.CURRENT
        MetadataStore.open(db_url).close()
    finally:
        store.close()


def test_crash_during_upgrade_leaves_the_schema_wholly_old(db_url: str) -> None:
    store = MetadataStore.open(db_url, check_schema=False)

    def crash(**_: Any) -> None:
        raise RuntimeError("simulated crash after the revision's DDL ran")

    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            schema.upgrade(store.engine, on_version_apply=crash)
        assert schema.status(store.engine).state is SchemaState.EMPTY
        leftover = set(sa.inspect(store.engine).get_table_names())
        assert leftover.isdisjoint({"events", "audit_entries", "audit_head", "event_cursors"})
        assert store.upgrade().state is SchemaState.CURRENT
    finally:
        store.close()


def test_history_lists_the_shipped_revisions_oldest_first() -> None:
    revisions = schema.history()
    assert revisions[0].down_revision is None
    assert revisions[-1].revision == schema.head_revision()
