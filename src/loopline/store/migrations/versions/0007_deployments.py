"""Deployments: routes and rollout state, their history, canary verdicts, serving stats.

Revision ID: 0007_deployments
Revises: 0006_governance
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_deployments"
down_revision = "0006_governance"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", _WHEN, nullable=True),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_good", sa.JSON(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployments")),
    )
    op.create_table(
        "deployment_history",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("gate", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["name"], ["deployments.name"], ondelete="CASCADE",
                                name=op.f("fk_deployment_history_name_deployments")),
        sa.PrimaryKeyConstraint("name", "revision", name=op.f("pk_deployment_history")),
    )
    op.create_table(
        "rollout_verdicts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("window_start", _WHEN, nullable=False),
        sa.Column("window_end", _WHEN, nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.Column("decided_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_verdicts")),
    )
    with op.batch_alter_table("rollout_verdicts", schema=None) as batch_op:
        batch_op.create_index("ix_rollout_verdicts_deployment_decided_at",
                              ["deployment", "decided_at"], unique=False)
    op.create_table(
        "serving_stats",
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=256), nullable=False),
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("bucket_start", _WHEN, nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency_sketch", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("deployment", "model_version", "instance", "bucket_start",
                                name=op.f("pk_serving_stats")),
    )
    with op.batch_alter_table("serving_stats", schema=None) as batch_op:
        batch_op.create_index("ix_serving_stats_deployment_bucket",
                              ["deployment", "bucket_start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("serving_stats", schema=None) as batch_op:
        batch_op.drop_index("ix_serving_stats_deployment_bucket")
    op.drop_table("serving_stats")
    with op.batch_alter_table("rollout_verdicts", schema=None) as batch_op:
        batch_op.drop_index("ix_rollout_verdicts_deployment_decided_at")
    op.drop_table("rollout_verdicts")
    op.drop_table("deployment_history")
    op.drop_table("deployments")
