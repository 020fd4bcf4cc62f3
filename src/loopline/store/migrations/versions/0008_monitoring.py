"""Monitoring: applied configs, rule evaluations, alerts and playbook actions.

Revision ID: 0008_monitoring
Revises: 0007_deployments
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_monitoring"
down_revision = "0007_deployments"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitor_configs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=True),
        sa.Column("applied_at", _WHEN, nullable=False),
        sa.Column("applied_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_configs")),
    )
    with op.batch_alter_table("monitor_configs", schema=None) as batch_op:
        batch_op.create_index("ix_monitor_configs_applied_at", ["applied_at"], unique=False)
    op.create_table(
        "monitor_evaluations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("scope_key", sa.String(length=800), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("signal", sa.String(length=32), nullable=False),
        sa.Column("window_start", _WHEN, nullable=False),
        sa.Column("window_end", _WHEN, nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=True),
        sa.Column("rule_record", sa.JSON(), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.Column("config_digest", sa.String(length=64), nullable=False),
        sa.Column("evaluated_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_evaluations")),
        sa.UniqueConstraint("rule", "scope_key", "window_end",
                            name="uq_monitor_evaluations_rule_scope_window"),
    )
    with op.batch_alter_table("monitor_evaluations", schema=None) as batch_op:
        batch_op.create_index("ix_monitor_evaluations_deployment_evaluated_at",
                              ["deployment", "evaluated_at"], unique=False)
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("scope_key", sa.String(length=800), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("playbook", sa.String(length=128), nullable=True),
        sa.Column("opened_at", _WHEN, nullable=False),
        sa.Column("resolved_at", _WHEN, nullable=True),
        sa.Column("evaluation_id", sa.String(length=32), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_rule_scope_state", ["rule", "scope_key", "state"],
                              unique=False)
        batch_op.create_index("ix_alerts_deployment_opened_at", ["deployment", "opened_at"],
                              unique=False)
    op.create_table(
        "playbook_actions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("playbook", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("requires_approval", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("approval_id", sa.String(length=32), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", _WHEN, nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbook_actions")),
        sa.UniqueConstraint("alert_id", "step", name="uq_playbook_actions_alert_step"),
    )
    with op.batch_alter_table("playbook_actions", schema=None) as batch_op:
        batch_op.create_index("ix_playbook_actions_deployment_kind",
                              ["deployment", "kind", "updated_at"], unique=False)
        batch_op.create_index("ix_playbook_actions_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("playbook_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_playbook_actions_state")
        batch_op.drop_index("ix_playbook_actions_deployment_kind")
    op.drop_table("playbook_actions")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_deployment_opened_at")
        batch_op.drop_index("ix_alerts_rule_scope_state")
    op.drop_table("alerts")
    with op.batch_alter_table("monitor_evaluations", schema=None) as batch_op:
        batch_op.drop_index("ix_monitor_evaluations_deployment_evaluated_at")
    op.drop_table("monitor_evaluations")
    with op.batch_alter_table("monitor_configs", schema=None) as batch_op:
        batch_op.drop_index("ix_monitor_configs_applied_at")
    op.drop_table("monitor_configs")
