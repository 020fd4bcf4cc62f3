"""Records of the prediction log: predictions, feedback labels, segments and read windows.

Pure: no I/O. A prediction is what one request was answered with; feedback is the label
that arrived later for the same request id. Both are stored in batches (segments) of
Parquet, indexed in the metadata store by deployment, model versions and time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.core.events import EventType
from loopline.core.names import validate_name

KIND_PREDICTIONS = "predictions"
KIND_FEEDBACK = "feedback"
SEGMENT_KINDS = (KIND_PREDICTIONS, KIND_FEEDBACK)

# Until ``EventType`` names them, the prediction log's event types and audit action live here.
SEGMENT_WRITTEN = EventType.PREDICTION_SEGMENT_WRITTEN
RETENTION_APPLIED = EventType.PREDICTION_RETENTION_APPLIED
RETENTION_ACTION = "predictions.retention"

MAX_REQUEST_ID = 256
LOG_NAME_LIMIT = 128  # the log's model_version is a plain name of at most this many chars


def log_name_of(model: str, version: int) -> str:
    """Return the prediction log's name for a model version: ``MODEL.vVERSION``.

    The log's ``model_version`` must be a plain name (no ``:`` or ``/``) of at most
    ``LOG_NAME_LIMIT`` characters, so the URI ``models:/MODEL/VERSION`` is written this way;
    a model name too long for that is cut and given a short hash of the whole name, so
    distinct models stay distinct. The server writes it, monitoring reads it back.
    """
    name = f"{model}.v{version}"
    if len(name) <= LOG_NAME_LIMIT:
        return name
    suffix = f"-{hashlib.sha256(model.encode()).hexdigest()[:10]}.v{version}"
    return model[:LOG_NAME_LIMIT - len(suffix)] + suffix


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered request: ``inputs`` and ``outputs`` are JSON values, ``time`` aware UTC."""

    request_id: str
    time: datetime
    deployment: str
    model_version: str
    inputs: Any
    outputs: Any
    latency_ms: float


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A label for an earlier request; the newest label (by ``time``) of a request wins."""

    request_id: str
    time: datetime
    label: Any


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One stored segment: which rows it holds and where its Parquet bytes are.

    ``deployment`` is None when the segment mixes deployments (and for feedback).
    """

    id: str
    kind: str
    deployment: str | None
    model_versions: tuple[str, ...]
    rows: int
    min_time: datetime
    max_time: datetime
    blob_digest: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PredictionWindow:
    """Which predictions to read: every field optional, combined with AND.

    ``start`` is inclusive and ``end`` exclusive.
    """

    deployment: str | None = None
    model_version: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def checked(self) -> PredictionWindow:
        """Return the window when its fields are usable.

        Raises:
            InvalidArgumentError: naming the field for a bad name, a naive datetime, or a
                start after the end.
        """
        if self.deployment is not None:
            validate_name(self.deployment, "deployment")
        if self.model_version is not None:
            validate_name(self.model_version, "model_version")
        for field, value in (("start", self.start), ("end", self.end)):
            if value is not None and (not isinstance(value, datetime)
                                      or value.utcoffset() is None):
                raise InvalidArgumentError(field, "must be a timezone-aware datetime")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise InvalidArgumentError("start", f"{self.start} is after end {self.end}")
        return self
