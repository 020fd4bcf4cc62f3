"""Alembic revisions for the metadata store; the only place tables are created or changed."""
