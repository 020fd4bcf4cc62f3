"""Model registry: registered models, their versions, aliases and trust decisions.

``registered_models.latest_version`` allocates version numbers (one ``UPDATE ... RETURNING``
per registration), and ``model_versions`` is keyed by ``(name, version)``, so a number is
never handed out twice. Aliases and trust decisions reference an existing version.

Revision ID: 0005_registry
Revises: 0004_pipeline_operations
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_registry"
down_revision = "0004_pipeline_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_registered_models")),
    )

    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("artifact_digest", sa.String(length=64), nullable=False),
        sa.Column("flavor", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=512), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.JSON(), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"],
            ["registered_models.name"],
            name=op.f("fk_model_versions_name_registered_models"),
        ),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_model_versions")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index("ix_model_versions_status", ["status"], unique=False)
        batch_op.create_index("ix_model_versions_run_id", ["run_id"], unique=False)

    op.create_table(
        "model_aliases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["name", "version"],
            ["model_versions.name", "model_versions.version"],
            name=op.f("fk_model_aliases_name_model_versions"),
        ),
        sa.PrimaryKeyConstraint("name", "alias", name=op.f("pk_model_aliases")),
    )
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.create_index("ix_model_aliases_name_version", ["name", "version"],
                              unique=False)

    op.create_table(
        "model_trust_decisions",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("decided_by", sa.String(length=256), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["name", "version"],
            ["model_versions.name", "model_versions.version"],
            name=op.f("fk_model_trust_decisions_name_model_versions"),
        ),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_model_trust_decisions")),
    )


def downgrade() -> None:
    op.drop_table("model_trust_decisions")
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_model_aliases_name_version")

    op.drop_table("model_aliases")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_model_versions_run_id")
        batch_op.drop_index("ix_model_versions_status")

    op.drop_table("model_versions")
    op.drop_table("registered_models")
