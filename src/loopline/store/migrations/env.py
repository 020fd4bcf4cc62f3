"""Alembic environment: runs revisions on the store's connection, all in one transaction."""

from __future__ import annotations

from alembic import context

from loopline.store.models import Base
from loopline.store.schema import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
    transaction_per_migration=False,
    compare_type=True,
    # A fail point for tests that prove a crashed upgrade leaves the schema wholly old.
    on_version_apply=context.config.attributes.get("on_version_apply"),
)
with context.begin_transaction():
    context.run_migrations()
