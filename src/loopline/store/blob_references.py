"""Blob references in SQL: which records name which blob digests, and the artifact catalogue.

Reads only, on the ``Connection`` they are given, so a retention run sees the same state it
deletes from. A *reference* is a record that names a blob digest: the digest columns, and
every 64-hex string in the JSON columns that can hold digests. The artifact catalogue,
events and audit entries are not references: they describe history, and counting them
would keep every blob forever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loopline.store.lineage import NODES
from loopline.store.models import (
    MODEL_VERSIONS,
    PIPELINE_RUNS,
    TASK_ATTEMPTS,
    TASK_RUNS,
    ArtifactRow,
    DatasetPartitionRow,
    DatasetVersionRow,
    PredictionSegmentRow,
)

ARTIFACTS = cast(sa.Table, ArtifactRow.__table__)
VERSIONS = cast(sa.Table, DatasetVersionRow.__table__)
PARTITIONS = cast(sa.Table, DatasetPartitionRow.__table__)
SEGMENTS = cast(sa.Table, PredictionSegmentRow.__table__)
CHUNK = 500  # keys per IN (...) list: well under every backend's bound-parameter limit
_DIGEST = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")

# Who holds a reference; retention removes the references of the holders it deletes.
HOLDER_SEGMENT = "segment"
HOLDER_SNAPSHOT = "snapshot"
HOLDER_RUN_LOGS = "run_logs"


@dataclass(frozen=True, slots=True)
class Reference:
    """``holder`` (``segment``, ``snapshot``, ``model`` ...) ``key`` names blob ``digest``."""

    holder: str
    key: str
    digest: str


def digests_in(value: Any) -> set[str]:
    """Return every 64-hex string inside ``value`` (JSON-able data or text)."""
    if value is None:
        return set()
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return set(_DIGEST.findall(text))


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    # Each store module keeps its own (as ``lineage`` and ``predictions`` do): three lines
    # are cheaper than a shared helper module.
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


def catalogue(connection: Connection) -> dict[str, datetime]:
    """Return when each catalogued artifact was recorded, by digest."""
    query = sa.select(ARTIFACTS.c.digest, ARTIFACTS.c.created_at)
    return {row.digest: row.created_at for row in connection.execute(query)}


def _column_references(connection: Connection) -> Iterator[Reference]:
    for holder, table, key in ((HOLDER_SEGMENT, SEGMENTS, SEGMENTS.c.id),
                               ("partition", PARTITIONS, PARTITIONS.c.id),
                               (HOLDER_SNAPSHOT, VERSIONS, VERSIONS.c.id)):
        query = sa.select(key.label("key"), table.c.blob_digest)
        if table is VERSIONS:  # a purged version's bytes are gone or going: not a reference
            query = query.where(VERSIONS.c.purged_at.is_(None))
        for row in connection.execute(query):
            yield Reference(holder, row.key, row.blob_digest)


def _json_references(connection: Connection) -> Iterator[Reference]:
    model_key = MODEL_VERSIONS.c.name + "@" + sa.cast(MODEL_VERSIONS.c.version, sa.String)
    scans: list[tuple[str, sa.Select[Any]]] = [
        ("model", sa.select(model_key.label("key"), MODEL_VERSIONS.c.artifact_digest,
                            MODEL_VERSIONS.c.signature, MODEL_VERSIONS.c.code_version,
                            MODEL_VERSIONS.c.environment, MODEL_VERSIONS.c.extra)),
        ("task_run", sa.select(TASK_RUNS.c.id.label("key"), TASK_RUNS.c.outputs)),
        ("run", sa.select(PIPELINE_RUNS.c.id.label("key"), PIPELINE_RUNS.c.parameters,
                          PIPELINE_RUNS.c.code_version, PIPELINE_RUNS.c.environment)),
        (HOLDER_RUN_LOGS, sa.select(TASK_RUNS.c.run_id.label("key"), TASK_ATTEMPTS.c.logs)
         .select_from(TASK_ATTEMPTS.join(TASK_RUNS, TASK_RUNS.c.id == TASK_ATTEMPTS.c.task_run_id))
         .where(TASK_ATTEMPTS.c.logs.is_not(None))),
        ("lineage", sa.select(NODES.c.id.label("key"), NODES.c.ref,
                              NODES.c.attributes)),
    ]
    for holder, query in scans:
        for row in connection.execute(query):
            key, *values = row
            for digest in digests_in(values):
                yield Reference(holder, str(key), digest)


def references(connection: Connection) -> list[Reference]:
    """Return every reference to a blob digest that a record holds."""
    return [*_column_references(connection), *_json_references(connection)]


def directly_referenced(connection: Connection, digests: Sequence[str]) -> set[str]:
    """Return those of ``digests`` a segment, partition, unpurged version or model names.

    The cheap recheck before deleting blobs after commit: a snapshot of the same rows made
    meanwhile names the same Parquet bytes.
    """
    found: set[str] = set()
    columns = (SEGMENTS.c.blob_digest, PARTITIONS.c.blob_digest, MODEL_VERSIONS.c.artifact_digest)
    for part in _chunks(sorted(digests)):
        for column in columns:
            found.update(connection.execute(
                sa.select(column).where(column.in_(part)).distinct()).scalars())
        found.update(connection.execute(
            sa.select(VERSIONS.c.blob_digest).where(VERSIONS.c.blob_digest.in_(part),
                                                    VERSIONS.c.purged_at.is_(None))
            .distinct()).scalars())
    return found
