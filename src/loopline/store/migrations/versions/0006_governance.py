"""Governance: identities, role bindings, applied policy sets, approvals and legal holds.

Also ``dataset_versions.purged_at``: retention deletes a snapshot's data but keeps its record
(content hash, profile, lineage) as evidence of what was there.

Revision ID: 0006_governance
Revises: 0005_registry
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_governance"
down_revision = "0005_registry"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", _WHEN, nullable=True))

    op.create_table(
        "identities",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_identities")),
    )
    op.create_table(
        "role_bindings",
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("models", sa.String(length=256), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["subject"], ["identities.name"], ondelete="CASCADE",
                                name=op.f("fk_role_bindings_subject_identities")),
        sa.PrimaryKeyConstraint("subject", "role", "models", name=op.f("pk_role_bindings")),
    )
    op.create_table(
        "policy_sets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("applied_at", _WHEN, nullable=False),
        sa.Column("applied_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_sets")),
    )
    with op.batch_alter_table("policy_sets", schema=None) as batch_op:
        batch_op.create_index("ix_policy_sets_applied_at", ["applied_at"], unique=False)
    _create_approvals()
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("data_class", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=512), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("released_at", _WHEN, nullable=True),
        sa.Column("released_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )


def _create_approvals() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("gate", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("requester", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("closed_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_requests")),
    )
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.create_index("ix_approval_requests_model_version_gate",
                              ["model", "version", "gate"], unique=False)
        batch_op.create_index("ix_approval_requests_status", ["status"], unique=False)
    op.create_table(
        "approval_votes",
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("approver", sa.String(length=256), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"], ondelete="CASCADE",
                                name=op.f("fk_approval_votes_request_id_approval_requests")),
        sa.PrimaryKeyConstraint("request_id", "approver", name=op.f("pk_approval_votes")),
    )


def downgrade() -> None:
    op.drop_table("approval_votes")
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_requests_status")
        batch_op.drop_index("ix_approval_requests_model_version_gate")
    op.drop_table("approval_requests")
    op.drop_table("legal_holds")
    with op.batch_alter_table("policy_sets", schema=None) as batch_op:
        batch_op.drop_index("ix_policy_sets_applied_at")
    op.drop_table("policy_sets")
    op.drop_table("role_bindings")
    op.drop_table("identities")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
