"""Event records and the catalogue of event types that subsystems exchange through the outbox.

Pure: no I/O. An event is written in the same transaction as the state change it reports;
subscribers read it later with a durable cursor, at least once, so handlers are idempotent.
Types are dotted ``<area>.<what happened>`` names; later areas (feature store, evaluation,
dashboard, privacy) add their own under their prefix without touching the ones here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Event types loopline itself emits. User code may emit others under ``custom.``."""

    WORKSPACE_INITIALISED = "workspace.initialised"
    SCHEMA_UPGRADED = "store.schema_upgraded"
    ARTIFACT_STORED = "artifact.stored"
    ARTIFACT_KEY_ROTATED = "artifact.key_rotated"
    DATASET_SNAPSHOT_CREATED = "dataset.snapshot_created"
    DATASET_VALIDATED = "dataset.validated"
    DATASET_PARTITION_APPENDED = "dataset.partition_appended"
    PREDICTION_SEGMENT_WRITTEN = "prediction.segment_written"
    PREDICTION_RETENTION_APPLIED = "prediction.retention_applied"
    PIPELINE_RUN_CHANGED = "pipeline.run_changed"
    MODEL_VERSION_REGISTERED = "model.version_registered"
    MODEL_ALIAS_MOVED = "model.alias_moved"
    MODEL_STATUS_CHANGED = "model.status_changed"
    DEPLOYMENT_CHANGED = "deployment.changed"
    ALERT_FIRED = "monitoring.alert_fired"
    PLAYBOOK_ACTION = "loop.playbook_action"
    APPROVAL_CHANGED = "governance.approval_changed"
    ROLES_CHANGED = "governance.roles_changed"
    TOKENS_CHANGED = "governance.tokens_changed"
    POLICY_APPLIED = "governance.policy_applied"
    LEGAL_HOLD_CHANGED = "governance.legal_hold_changed"
    RETENTION_APPLIED = "governance.retention_applied"
    FEATURE_VIEW_CHANGED = "feature.view_changed"
    EVALUATION_COMPLETED = "evaluation.completed"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: what happened, to what, with which details."""

    type: str
    subject: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """An event as stored: ``seq`` is its position in the log, increasing in commit order."""

    seq: int
    id: str
    type: str
    subject: str
    payload: Mapping[str, Any]
    actor: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class CursorPosition:
    """Where a durable subscriber stands in the event log."""

    subscriber: str
    position: int
    updated_at: datetime
