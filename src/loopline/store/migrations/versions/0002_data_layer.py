"""Data layer: datasets, partitions, validation results, prediction log segments, lineage.

Revision ID: 0002_data_layer
Revises: 0001_foundation
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_data_layer"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_partitions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("blob_digest", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("time_column", sa.String(length=128), nullable=True),
        sa.Column("min_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_partitions")),
        sa.UniqueConstraint("dataset", "seq", name="uq_dataset_partitions_dataset_seq"),
    )
    with op.batch_alter_table("dataset_partitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dataset_partitions_dataset_max_time", ["dataset", "max_time"], unique=False
        )

    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("blob_digest", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("source_uri", sa.String(length=2048), nullable=True),
        sa.Column("source_hash", sa.String(length=64), nullable=True),
        sa.Column("parents", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("dataset", "version", name="uq_dataset_versions_dataset_version"),
    )
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dataset_versions_dataset_content", ["dataset", "content_hash"], unique=False
        )

    op.create_table(
        "lineage_nodes",
        sa.Column("id", sa.String(length=600), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("ref", sa.String(length=512), nullable=False),
        sa.Column("label", sa.String(length=512), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lineage_nodes")),
    )
    with op.batch_alter_table("lineage_nodes", schema=None) as batch_op:
        batch_op.create_index("ix_lineage_nodes_kind", ["kind"], unique=False)

    op.create_table(
        "prediction_segments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=True),
        sa.Column("model_versions", sa.JSON(), nullable=False),
        sa.Column("blob_digest", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("min_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_segments")),
    )
    with op.batch_alter_table("prediction_segments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_prediction_segments_deployment_max_time", ["deployment", "max_time"], unique=False
        )
        batch_op.create_index(
            "ix_prediction_segments_kind_max_time", ["kind", "max_time"], unique=False
        )

    op.create_table(
        "lineage_edges",
        sa.Column("source", sa.String(length=600), nullable=False),
        sa.Column("target", sa.String(length=600), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["source"],
            ["lineage_nodes.id"],
            name=op.f("fk_lineage_edges_source_lineage_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target"],
            ["lineage_nodes.id"],
            name=op.f("fk_lineage_edges_target_lineage_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source", "target", "kind", name=op.f("pk_lineage_edges")),
    )
    with op.batch_alter_table("lineage_edges", schema=None) as batch_op:
        batch_op.create_index("ix_lineage_edges_target", ["target"], unique=False)

    op.create_table(
        "validation_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset_version_id", sa.String(length=32), nullable=False),
        sa.Column("suite", sa.String(length=128), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_validation_runs_dataset_version_id_dataset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_runs")),
    )
    with op.batch_alter_table("validation_runs", schema=None) as batch_op:
        batch_op.create_index("ix_validation_runs_version", ["dataset_version_id"], unique=False)

    op.create_table(
        "validation_results",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("expectation", sa.String(length=128), nullable=False),
        sa.Column("column_name", sa.String(length=256), nullable=True),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("observed", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["validation_runs.id"],
            name=op.f("fk_validation_results_run_id_validation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_validation_results")),
    )


def downgrade() -> None:
    op.drop_table("validation_results")
    with op.batch_alter_table("validation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_validation_runs_version")

    op.drop_table("validation_runs")
    with op.batch_alter_table("lineage_edges", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_edges_target")

    op.drop_table("lineage_edges")
    with op.batch_alter_table("prediction_segments", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_segments_kind_max_time")
        batch_op.drop_index("ix_prediction_segments_deployment_max_time")

    op.drop_table("prediction_segments")
    with op.batch_alter_table("lineage_nodes", schema=None) as batch_op:
        batch_op.drop_index("ix_lineage_nodes_kind")

    op.drop_table("lineage_nodes")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_versions_dataset_content")

    op.drop_table("dataset_versions")
    with op.batch_alter_table("dataset_partitions", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_partitions_dataset_max_time")

    op.drop_table("dataset_partitions")
