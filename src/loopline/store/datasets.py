"""Dataset versions and partitions in the metadata store (the SQLAlchemy side of ``data``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from loopline.core.datasets import ColumnSchema, DatasetPartition, DatasetVersion
from loopline.store.models import DatasetPartitionRow, DatasetVersionRow


def _version(row: DatasetVersionRow) -> DatasetVersion:
    return DatasetVersion(
        id=row.id, dataset=row.dataset, version=row.version, content_hash=row.content_hash,
        blob_digest=row.blob_digest, rows=row.rows,
        columns=tuple(ColumnSchema(c["name"], c["type"]) for c in row.columns),
        profile=row.profile, source_uri=row.source_uri, source_hash=row.source_hash,
        parents=tuple(row.parents), created_at=row.created_at, created_by=row.created_by,
    )


def _partition(row: DatasetPartitionRow) -> DatasetPartition:
    return DatasetPartition(
        id=row.id, dataset=row.dataset, seq=row.seq, blob_digest=row.blob_digest,
        content_hash=row.content_hash, rows=row.rows, time_column=row.time_column,
        min_time=row.min_time, max_time=row.max_time, created_at=row.created_at,
    )


def add_version(session: Session, version: DatasetVersion) -> None:
    """Insert ``version`` in the caller's write transaction."""
    session.add(DatasetVersionRow(
        id=version.id, dataset=version.dataset, version=version.version,
        content_hash=version.content_hash, blob_digest=version.blob_digest, rows=version.rows,
        columns=[{"name": c.name, "type": c.type} for c in version.columns],
        profile=dict(version.profile), source_uri=version.source_uri,
        source_hash=version.source_hash, parents=list(version.parents),
        created_at=version.created_at, created_by=version.created_by,
    ))
    session.flush()


def next_version_number(session: Session, dataset: str) -> int:
    """Return the number the next version of ``dataset`` gets (under the writer's lock)."""
    latest = session.scalar(sa.select(sa.func.max(DatasetVersionRow.version))
                            .where(DatasetVersionRow.dataset == dataset))
    return int(latest or 0) + 1


def latest_version(session: Session, dataset: str) -> DatasetVersion | None:
    """Return the newest version of ``dataset`` (read in the caller's transaction), if any."""
    row = session.scalars(
        sa.select(DatasetVersionRow).where(DatasetVersionRow.dataset == dataset)
        .order_by(DatasetVersionRow.version.desc()).limit(1)).first()
    return _version(row) if row else None


def add_partition(session: Session, partition: DatasetPartition) -> None:
    """Insert ``partition`` in the caller's write transaction."""
    session.add(DatasetPartitionRow(
        id=partition.id, dataset=partition.dataset, seq=partition.seq,
        blob_digest=partition.blob_digest, content_hash=partition.content_hash,
        rows=partition.rows, time_column=partition.time_column, min_time=partition.min_time,
        max_time=partition.max_time, created_at=partition.created_at,
    ))
    session.flush()


def next_partition_seq(session: Session, dataset: str) -> int:
    """Return the sequence number the next partition of ``dataset`` gets."""
    latest = session.scalar(sa.select(sa.func.max(DatasetPartitionRow.seq))
                            .where(DatasetPartitionRow.dataset == dataset))
    return int(latest or 0) + 1


class DatasetQueries:
    """Reads of dataset versions and partitions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def version(self, dataset: str, number: int | None) -> DatasetVersion | None:
        """Return version ``number`` of ``dataset`` (the latest when None), or None."""
        query = sa.select(DatasetVersionRow).where(DatasetVersionRow.dataset == dataset)
        if number is None:
            query = query.order_by(DatasetVersionRow.version.desc()).limit(1)
        else:
            query = query.where(DatasetVersionRow.version == number)
        with Session(self._engine) as session:
            row = session.scalars(query).first()
            return _version(row) if row else None

    def by_id(self, version_id: str) -> DatasetVersion | None:
        """Return the version with this id, or None."""
        with Session(self._engine) as session:
            row = session.get(DatasetVersionRow, version_id)
            return _version(row) if row else None

    def purged_at(self, version_id: str) -> datetime | None:
        """Return when retention deleted the data of version ``version_id`` (None: it did not)."""
        query = sa.select(DatasetVersionRow.purged_at).where(DatasetVersionRow.id == version_id)
        with Session(self._engine) as session:
            return session.scalar(query)

    def versions(self, dataset: str | None = None, limit: int = 100) -> list[DatasetVersion]:
        """List versions (of one dataset, or all), newest first."""
        query = sa.select(DatasetVersionRow)
        if dataset is not None:
            query = query.where(DatasetVersionRow.dataset == dataset)
        query = query.order_by(DatasetVersionRow.created_at.desc(),
                               DatasetVersionRow.version.desc()).limit(limit)
        with Session(self._engine) as session:
            return [_version(row) for row in session.scalars(query)]

    def datasets(self) -> list[tuple[str, int, int]]:
        """List (name, versions, partitions) for every dataset, by name."""
        versions = sa.select(DatasetVersionRow.dataset.label("name"),
                             sa.func.count().label("versions"),
                             sa.literal(0).label("partitions")).group_by(DatasetVersionRow.dataset)
        partitions = sa.select(DatasetPartitionRow.dataset.label("name"),
                               sa.literal(0).label("versions"),
                               sa.func.count().label("partitions")
                               ).group_by(DatasetPartitionRow.dataset)
        both = sa.union_all(versions, partitions).subquery()
        query = (sa.select(both.c.name, sa.func.sum(both.c.versions),
                           sa.func.sum(both.c.partitions))
                 .group_by(both.c.name).order_by(both.c.name))
        with Session(self._engine) as session:
            return [(name, int(v or 0), int(p or 0)) for name, v, p in session.execute(query)]

    def partitions(self, dataset: str, start: datetime | None = None,
                   end: datetime | None = None) -> Sequence[DatasetPartition]:
        """List partitions of ``dataset`` in seq order whose time range overlaps [start, end).

        Partitions without a time column always overlap.
        """
        query = sa.select(DatasetPartitionRow).where(DatasetPartitionRow.dataset == dataset)
        if start is not None:
            query = query.where(sa.or_(DatasetPartitionRow.max_time.is_(None),
                                       DatasetPartitionRow.max_time >= start))
        if end is not None:
            query = query.where(sa.or_(DatasetPartitionRow.min_time.is_(None),
                                       DatasetPartitionRow.min_time < end))
        query = query.order_by(DatasetPartitionRow.seq)
        with Session(self._engine) as session:
            return [_partition(row) for row in session.scalars(query)]
