"""Pipeline operations: what started a run, its code and environment, cancels, attempt logs.

``trigger_key`` is unique, so a schedule slot or an event starts at most one run even when a
scheduler restarts or two run at once. Attempts keep their captured output and traceback.

Revision ID: 0004_pipeline_operations
Revises: 0003_pipelines
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_pipeline_operations"
down_revision = "0003_pipelines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger_key", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("trigger_name", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("trigger", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("code_version", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("environment", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint("uq_pipeline_runs_trigger_key", ["trigger_key"])
        batch_op.create_index("ix_pipeline_runs_trigger_name_scheduled_for",
                              ["trigger_name", "scheduled_for"], unique=False)
    with op.batch_alter_table("task_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("logs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("traceback", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_attempts", schema=None) as batch_op:
        batch_op.drop_column("traceback")
        batch_op.drop_column("logs")
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_runs_trigger_name_scheduled_for")
        batch_op.drop_constraint("uq_pipeline_runs_trigger_key", type_="unique")
        for column in ("cancel_requested_at", "environment", "code_version", "scheduled_for",
                       "trigger", "trigger_name", "trigger_key"):
            batch_op.drop_column(column)
