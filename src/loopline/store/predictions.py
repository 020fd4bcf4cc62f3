"""The prediction log's segment index in the metadata store (the SQLAlchemy side of it).

Writes run inside the caller's write transaction (``MetadataStore.write``); reads take any
session. Core statements on the session's connection, as in ``outbox``: one row per segment
needs no ORM identity map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from loopline.core.errors import InvalidArgumentError
from loopline.core.predictions import SEGMENT_KINDS, PredictionWindow, SegmentInfo
from loopline.store.models import PredictionSegmentRow

SEGMENTS = cast(sa.Table, PredictionSegmentRow.__table__)


@dataclass(frozen=True, slots=True)
class SegmentQuery:
    """Which segments to list: those of ``kind`` that may hold rows of ``window``."""

    kind: str
    window: PredictionWindow = field(default_factory=PredictionWindow)
    newest_first: bool = False


def _check_kind(kind: str) -> None:
    if kind not in SEGMENT_KINDS:
        raise InvalidArgumentError("kind", f"{kind!r} is not one of {', '.join(SEGMENT_KINDS)}")


def _info(row: Any) -> SegmentInfo:
    return SegmentInfo(
        id=row.id, kind=row.kind, deployment=row.deployment,
        model_versions=tuple(row.model_versions), rows=int(row.rows), min_time=row.min_time,
        max_time=row.max_time, blob_digest=row.blob_digest, created_at=row.created_at)


def insert_segment(session: Session, info: SegmentInfo) -> None:
    """Index ``info`` in the caller's write transaction.

    Raises:
        InvalidArgumentError: when the kind is unknown.
    """
    _check_kind(info.kind)
    session.connection().execute(sa.insert(SEGMENTS), {
        "id": info.id, "kind": info.kind, "deployment": info.deployment,
        "model_versions": list(info.model_versions), "blob_digest": info.blob_digest,
        "rows": info.rows, "min_time": info.min_time, "max_time": info.max_time,
        "created_at": info.created_at,
    })


def find_segments(session: Session, query: SegmentQuery) -> list[SegmentInfo]:
    """List the segments of ``query.kind`` overlapping its window, oldest first by default.

    A segment matches a deployment when it is that deployment's or mixes deployments; the
    model version is matched in Python (``model_versions`` is a short JSON list).

    Raises:
        InvalidArgumentError: when the kind is unknown.
    """
    _check_kind(query.kind)
    window = query.window
    statement = sa.select(SEGMENTS).where(SEGMENTS.c.kind == query.kind)
    if window.deployment is not None:
        statement = statement.where(sa.or_(SEGMENTS.c.deployment == window.deployment,
                                           SEGMENTS.c.deployment.is_(None)))
    if window.start is not None:
        statement = statement.where(SEGMENTS.c.max_time >= window.start)
    if window.end is not None:
        statement = statement.where(SEGMENTS.c.min_time < window.end)
    if query.newest_first:
        statement = statement.order_by(SEGMENTS.c.max_time.desc(), SEGMENTS.c.id.desc())
    else:
        statement = statement.order_by(SEGMENTS.c.min_time, SEGMENTS.c.id)
    found = [_info(row) for row in session.connection().execute(statement)]
    if window.model_version is None:
        return found
    return [info for info in found if window.model_version in info.model_versions]


def segment_exists(session: Session, segment_id: str) -> bool:
    """Tell whether the segment ``segment_id`` is still indexed."""
    statement = sa.select(SEGMENTS.c.id).where(SEGMENTS.c.id == segment_id)
    return session.connection().execute(statement).first() is not None
