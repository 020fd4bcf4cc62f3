"""The metadata store's tables as SQLAlchemy 2 typed models (and their Core tables).

Tables are created only by the Alembic revisions in ``migrations/``; a test checks that
upgrading an empty database yields exactly these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loopline.store.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class EventRow(Base):
    """The transactional outbox: one row per event, ``seq`` increasing in commit order."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_type_seq", "type", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    type: Mapped[str] = mapped_column(sa.String(128))
    subject: Mapped[str] = mapped_column(sa.String(512))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    actor: Mapped[str] = mapped_column(sa.String(256))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventCursorRow(Base):
    """A durable subscriber's position in the event log."""

    __tablename__ = "event_cursors"

    subscriber: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    position: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntryRow(Base):
    """One audit entry; ``hash`` chains over the canonical JSON of the fields and ``prev_hash``.

    ``before`` and ``after`` are kept as canonical JSON text so they read back byte-for-byte
    and the hash recomputes exactly on every backend.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        sa.Index("ix_audit_entries_subject", "subject"),
        sa.Index("ix_audit_entries_actor", "actor"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(256))
    action: Mapped[str] = mapped_column(sa.String(128))
    subject: Mapped[str] = mapped_column(sa.String(512))
    before: Mapped[str | None] = mapped_column(sa.Text)
    after: Mapped[str | None] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditHeadRow(Base):
    """The single row naming the chain's last entry; also the lock appenders serialise on."""

    __tablename__ = "audit_head"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))



class ArtifactRow(Base):
    """The catalogue of artifacts the workspace has recorded (the bytes live in the blob store).

    Whether a put is new is decided here, in the same transaction as its audit entry and
    event, so a put whose metadata write failed is recorded when it is retried.
    """

    __tablename__ = "artifacts"

    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))


class DatasetVersionRow(Base):
    """One immutable version of a named dataset: a snapshot or an appended partition set.

    ``content_hash`` is the identity (a hash of the normalised rows, whatever the file was
    called); ``blob_digest`` names the Parquet bytes in the artifact store.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (
        sa.UniqueConstraint("dataset", "version", name="uq_dataset_versions_dataset_version"),
        sa.Index("ix_dataset_versions_dataset_content", "dataset", "content_hash"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.String(128))
    version: Mapped[int] = mapped_column(sa.Integer)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    blob_digest: Mapped[str] = mapped_column(sa.String(64))
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    columns: Mapped[list[Any]] = mapped_column(sa.JSON)
    profile: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    source_uri: Mapped[str | None] = mapped_column(sa.String(2048))
    source_hash: Mapped[str | None] = mapped_column(sa.String(64))
    parents: Mapped[list[Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))
    # Set when retention deleted the version's data: the record stays as evidence.
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DatasetPartitionRow(Base):
    """One appended batch of an incremental dataset, stored as its own Parquet object."""

    __tablename__ = "dataset_partitions"
    __table_args__ = (
        sa.UniqueConstraint("dataset", "seq", name="uq_dataset_partitions_dataset_seq"),
        sa.Index("ix_dataset_partitions_dataset_max_time", "dataset", "max_time"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.String(128))
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    blob_digest: Mapped[str] = mapped_column(sa.String(64))
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    time_column: Mapped[str | None] = mapped_column(sa.String(128))
    min_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ValidationRunRow(Base):
    """One evaluation of an expectation suite against a dataset version."""

    __tablename__ = "validation_runs"
    __table_args__ = (sa.Index("ix_validation_runs_version", "dataset_version_id"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    dataset_version_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    suite: Mapped[str] = mapped_column(sa.String(128))
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))


class ValidationResultRow(Base):
    """The outcome of one expectation: what was expected, what was observed, pass or fail."""

    __tablename__ = "validation_results"

    run_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("validation_runs.id", ondelete="CASCADE"),
        primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    expectation: Mapped[str] = mapped_column(sa.String(128))
    column_name: Mapped[str | None] = mapped_column(sa.String(256))
    arguments: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    observed: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    message: Mapped[str] = mapped_column(sa.Text)


class PredictionSegmentRow(Base):
    """One Parquet segment of the prediction log (or of feedback labels), indexed for windows."""

    __tablename__ = "prediction_segments"
    __table_args__ = (
        sa.Index("ix_prediction_segments_deployment_max_time", "deployment", "max_time"),
        sa.Index("ix_prediction_segments_kind_max_time", "kind", "max_time"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    deployment: Mapped[str | None] = mapped_column(sa.String(128))
    model_versions: Mapped[list[Any]] = mapped_column(sa.JSON)
    blob_digest: Mapped[str] = mapped_column(sa.String(64))
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    min_time: Mapped[datetime] = mapped_column(UTCDateTime)
    max_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LineageNodeRow(Base):
    """A node of the one lineage graph: ``<kind>:<ref>`` (source, snapshot, run, model, ...)."""

    __tablename__ = "lineage_nodes"
    __table_args__ = (sa.Index("ix_lineage_nodes_kind", "kind"),)

    id: Mapped[str] = mapped_column(sa.String(600), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(64))
    ref: Mapped[str] = mapped_column(sa.String(512))
    label: Mapped[str | None] = mapped_column(sa.String(512))
    attributes: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LineageEdgeRow(Base):
    """A directed edge ``source → target`` (from what, to what it produced or influenced)."""

    __tablename__ = "lineage_edges"
    __table_args__ = (sa.Index("ix_lineage_edges_target", "target"),)

    source: Mapped[str] = mapped_column(
        sa.String(600), sa.ForeignKey("lineage_nodes.id", ondelete="CASCADE"), primary_key=True)
    target: Mapped[str] = mapped_column(
        sa.String(600), sa.ForeignKey("lineage_nodes.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PipelineRunRow(Base):
    """One execution of a pipeline: its parameters, state and the root cause of a failure."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        sa.Index("ix_pipeline_runs_pipeline_created_at", "pipeline", "created_at"),
        sa.Index("ix_pipeline_runs_trigger_name_scheduled_for", "trigger_name", "scheduled_for"),
        sa.UniqueConstraint("trigger_key", name="uq_pipeline_runs_trigger_key"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(sa.String(128))
    state: Mapped[str] = mapped_column(sa.String(16))
    parameters: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[str] = mapped_column(sa.String(256))
    # The runner executing the run, so a second runner (a concurrent resume) is refused.
    owner: Mapped[str | None] = mapped_column(sa.String(256))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What started the run (a schedule slot, an event): unique, so each fires at most once.
    trigger_key: Mapped[str | None] = mapped_column(sa.String(512))
    trigger_name: Mapped[str | None] = mapped_column(sa.String(256))
    trigger: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_version: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    environment: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TaskRunRow(Base):
    """One task of a pipeline run; every state change is its own committed transaction."""

    __tablename__ = "task_runs"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "task_key", name="uq_task_runs_run_id_task_key"),
        sa.Index("ix_task_runs_cache_key", "cache_key"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    task_key: Mapped[str] = mapped_column(sa.String(256))
    state: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    cache_key: Mapped[str | None] = mapped_column(sa.String(64))
    outputs: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    error: Mapped[str | None] = mapped_column(sa.Text)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(256))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TaskAttemptRow(Base):
    """One attempt at a task run, kept so every retry's error stays on record."""

    __tablename__ = "task_attempts"

    task_run_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("task_runs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(sa.Text)
    retry_delay: Mapped[float | None] = mapped_column(sa.Float)
    logs: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)  # stream -> digest, tail
    traceback: Mapped[str | None] = mapped_column(sa.Text)


EVENTS = cast(sa.Table, EventRow.__table__)
AUDIT_ENTRIES = cast(sa.Table, AuditEntryRow.__table__)
AUDIT_HEAD = cast(sa.Table, AuditHeadRow.__table__)
PIPELINE_RUNS = cast(sa.Table, PipelineRunRow.__table__)
TASK_RUNS = cast(sa.Table, TaskRunRow.__table__)
TASK_ATTEMPTS = cast(sa.Table, TaskAttemptRow.__table__)


class RegisteredModelRow(Base):
    """A registered model; ``latest_version`` allocates version numbers.

    A registration increments ``latest_version`` with one ``UPDATE ... RETURNING``, so the row
    lock (PostgreSQL) or the database write lock (SQLite) hands out each number exactly once.
    """

    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    tags: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    latest_version: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))


class ModelVersionRow(Base):
    """One registered version of a model; ``extra`` holds later fields without a migration."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.Index("ix_model_versions_status", "status"),
        sa.Index("ix_model_versions_run_id", "run_id"),
    )

    name: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("registered_models.name"), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    artifact_digest: Mapped[str] = mapped_column(sa.String(64))
    flavor: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    signature: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    tags: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    run_id: Mapped[str | None] = mapped_column(sa.String(512))
    datasets: Mapped[list[Any]] = mapped_column(sa.JSON)
    code_version: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    environment: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    description: Mapped[str | None] = mapped_column(sa.Text)
    extra: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))


class ModelAliasRow(Base):
    """A mutable alias pointing at one existing version; moved by one upsert."""

    __tablename__ = "model_aliases"
    __table_args__ = (
        sa.ForeignKeyConstraint(["name", "version"],
                                ["model_versions.name", "model_versions.version"]),
        sa.Index("ix_model_aliases_name_version", "name", "version"),
    )

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(sa.String(256))


class ModelTrustDecisionRow(Base):
    """An audited decision that a version's artifact may be loaded although it can run code."""

    __tablename__ = "model_trust_decisions"
    __table_args__ = (
        sa.ForeignKeyConstraint(["name", "version"],
                                ["model_versions.name", "model_versions.version"]),
    )

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    decided_by: Mapped[str] = mapped_column(sa.String(256))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(sa.Text)


REGISTERED_MODELS = cast(sa.Table, RegisteredModelRow.__table__)
MODEL_VERSIONS = cast(sa.Table, ModelVersionRow.__table__)
MODEL_ALIASES = cast(sa.Table, ModelAliasRow.__table__)
MODEL_TRUST_DECISIONS = cast(sa.Table, ModelTrustDecisionRow.__table__)


class IdentityRow(Base):
    """A user or service account loopline knows (made on first grant, or explicitly)."""

    __tablename__ = "identities"

    name: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    description: Mapped[str | None] = mapped_column(sa.Text)
    disabled: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))


class RoleBindingRow(Base):
    """``subject`` holds ``role`` on the models matching the glob ``models`` (``*``: all)."""

    __tablename__ = "role_bindings"
    __table_args__ = (
        sa.ForeignKeyConstraint(["subject"], ["identities.name"], ondelete="CASCADE"),
    )

    subject: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    models: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))


class PolicySetRow(Base):
    """One applied set of policy files; the newest row is the set the gates evaluate."""

    __tablename__ = "policy_sets"
    __table_args__ = (sa.Index("ix_policy_sets_applied_at", "applied_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(sa.String(64))
    files: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_by: Mapped[str] = mapped_column(sa.String(256))


class ApprovalRequestRow(Base):
    """A request that a governed action on a model version be approved."""

    __tablename__ = "approval_requests"
    __table_args__ = (
        sa.Index("ix_approval_requests_model_version_gate", "model", "version", "gate"),
        sa.Index("ix_approval_requests_status", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(128))
    version: Mapped[int] = mapped_column(sa.Integer)
    gate: Mapped[str] = mapped_column(sa.String(32))
    target: Mapped[str | None] = mapped_column(sa.String(128))
    requester: Mapped[str] = mapped_column(sa.String(256))
    reason: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    required: Mapped[int] = mapped_column(sa.Integer)
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApprovalVoteRow(Base):
    """One approver's verdict on a request (one per approver)."""

    __tablename__ = "approval_votes"
    __table_args__ = (
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"], ondelete="CASCADE"),
    )

    request_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    approver: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    verdict: Mapped[str] = mapped_column(sa.String(16))
    role: Mapped[str] = mapped_column(sa.String(16))
    comment: Mapped[str] = mapped_column(sa.Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LegalHoldRow(Base):
    """Retention must not delete what an active hold covers."""

    __tablename__ = "legal_holds"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    data_class: Mapped[str] = mapped_column(sa.String(64))
    ref: Mapped[str] = mapped_column(sa.String(512))
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_by: Mapped[str | None] = mapped_column(sa.String(256))


IDENTITIES = cast(sa.Table, IdentityRow.__table__)
ROLE_BINDINGS = cast(sa.Table, RoleBindingRow.__table__)
POLICY_SETS = cast(sa.Table, PolicySetRow.__table__)
APPROVAL_REQUESTS = cast(sa.Table, ApprovalRequestRow.__table__)
APPROVAL_VOTES = cast(sa.Table, ApprovalVoteRow.__table__)
LEGAL_HOLDS = cast(sa.Table, LegalHoldRow.__table__)


class DeploymentRow(Base):
    """A deployment: its strategy, current routes and rollout position (one row per name)."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    strategy: Mapped[str] = mapped_column(sa.String(16))
    routes: Mapped[list[Any]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(16))
    revision: Mapped[int] = mapped_column(sa.Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)  # canary plan, sticky key, description
    step: Mapped[int] = mapped_column(sa.Integer)
    step_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    passes: Mapped[int] = mapped_column(sa.Integer)
    failures: Mapped[int] = mapped_column(sa.Integer)
    last_good: Mapped[list[Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(sa.String(256))


class DeploymentHistoryRow(Base):
    """One revision of a deployment: the routes and state it set, who, when and why."""

    __tablename__ = "deployment_history"
    __table_args__ = (
        sa.ForeignKeyConstraint(["name"], ["deployments.name"], ondelete="CASCADE"),
    )

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    routes: Mapped[list[Any]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str] = mapped_column(sa.String(256))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    gate: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class RolloutVerdictRow(Base):
    """One canary analysis with the numbers it used."""

    __tablename__ = "rollout_verdicts"
    __table_args__ = (
        sa.Index("ix_rollout_verdicts_deployment_decided_at", "deployment", "decided_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    deployment: Mapped[str] = mapped_column(sa.String(128))
    revision: Mapped[int] = mapped_column(sa.Integer)
    step: Mapped[int] = mapped_column(sa.Integer)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    verdict: Mapped[str] = mapped_column(sa.String(16))
    numbers: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServingStatsRow(Base):
    """What one server instance answered for one version in one time bucket.

    Servers add to their own rows (requests, errors, a mergeable latency sketch); the
    rollout analysis merges the rows of a window across instances.
    """

    __tablename__ = "serving_stats"
    __table_args__ = (
        sa.Index("ix_serving_stats_deployment_bucket", "deployment", "bucket_start"),
    )

    deployment: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    model_version: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    instance: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    requests: Mapped[int] = mapped_column(sa.BigInteger)
    errors: Mapped[int] = mapped_column(sa.BigInteger)
    latency_sketch: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


DEPLOYMENTS = cast(sa.Table, DeploymentRow.__table__)
DEPLOYMENT_HISTORY = cast(sa.Table, DeploymentHistoryRow.__table__)
ROLLOUT_VERDICTS = cast(sa.Table, RolloutVerdictRow.__table__)
SERVING_STATS = cast(sa.Table, ServingStatsRow.__table__)


class MonitorConfigRow(Base):
    """A monitoring configuration as applied (the latest is in force)."""

    __tablename__ = "monitor_configs"
    __table_args__ = (sa.Index("ix_monitor_configs_applied_at", "applied_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(sa.String(64))
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    source: Mapped[str | None] = mapped_column(sa.String(1024), nullable=True)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_by: Mapped[str] = mapped_column(sa.String(256))


class MonitorEvaluationRow(Base):
    """One evaluation of one alert rule in one scope, with the rule and the numbers it saw."""

    __tablename__ = "monitor_evaluations"
    __table_args__ = (
        sa.UniqueConstraint("rule", "scope_key", "window_end",
                            name="uq_monitor_evaluations_rule_scope_window"),
        sa.Index("ix_monitor_evaluations_deployment_evaluated_at", "deployment",
                 "evaluated_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(sa.String(128))
    scope_key: Mapped[str] = mapped_column(sa.String(800))
    deployment: Mapped[str] = mapped_column(sa.String(128))
    signal: Mapped[str] = mapped_column(sa.String(32))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    samples: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))
    streak: Mapped[int] = mapped_column(sa.Integer)
    alert_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    rule_record: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    numbers: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    config_digest: Mapped[str] = mapped_column(sa.String(64))
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertRow(Base):
    """An alert: a rule that breached ``for`` times in a row in one scope."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index("ix_alerts_rule_scope_state", "rule", "scope_key", "state"),
        sa.Index("ix_alerts_deployment_opened_at", "deployment", "opened_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(sa.String(128))
    scope_key: Mapped[str] = mapped_column(sa.String(800))
    deployment: Mapped[str] = mapped_column(sa.String(128))
    severity: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16))
    playbook: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    evaluation_id: Mapped[str] = mapped_column(sa.String(32))
    numbers: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


class PlaybookActionRow(Base):
    """One step of one alert's playbook; ``(alert_id, step)`` is unique (exactly once)."""

    __tablename__ = "playbook_actions"
    __table_args__ = (
        sa.UniqueConstraint("alert_id", "step", name="uq_playbook_actions_alert_step"),
        sa.Index("ix_playbook_actions_deployment_kind", "deployment", "kind", "updated_at"),
        sa.Index("ix_playbook_actions_state", "state"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(sa.String(32))
    deployment: Mapped[str] = mapped_column(sa.String(128))
    playbook: Mapped[str] = mapped_column(sa.String(128))
    step: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.String(16))
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(24))
    requires_approval: Mapped[bool] = mapped_column(sa.Boolean)
    attempts: Mapped[int] = mapped_column(sa.Integer)
    approval_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


MONITOR_CONFIGS = cast(sa.Table, MonitorConfigRow.__table__)
MONITOR_EVALUATIONS = cast(sa.Table, MonitorEvaluationRow.__table__)
ALERTS = cast(sa.Table, AlertRow.__table__)
PLAYBOOK_ACTIONS = cast(sa.Table, PlaybookActionRow.__table__)


class ApiTokenRow(Base):
    """One API token; only the SHA-256 of its secret is kept (``secret_hash`` is unique)."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        sa.UniqueConstraint("secret_hash", name="uq_api_tokens_secret_hash"),
        sa.Index("ix_api_tokens_user", "user_name"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    user_name: Mapped[str] = mapped_column(sa.String(256))
    role: Mapped[str] = mapped_column(sa.String(16))
    description: Mapped[str | None] = mapped_column(sa.String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(sa.String(256))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaseRow(Base):
    """A named lease on background work: one holder at a time until ``expires_at``."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(128))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdempotencyKeyRow(Base):
    """A creating API call made with an ``Idempotency-Key``, and the answer it got.

    ``scope`` is the hash of the token that made it (keys are per caller); ``status`` is null
    while the first request is in flight.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.Index("ix_idempotency_keys_created_at", "created_at"),)

    scope: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    content_type: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    body: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


API_TOKENS = cast(sa.Table, ApiTokenRow.__table__)
IDEMPOTENCY_KEYS = cast(sa.Table, IdempotencyKeyRow.__table__)
LEASES = cast(sa.Table, LeaseRow.__table__)
