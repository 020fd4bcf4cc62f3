"""Reads governance needs from the data tables: whether snapshots exist and passed validation.

Two queries for any number of snapshot refs (``NAME@VERSION``): the snapshots, then their
validation runs. A purged snapshot (its data deleted by retention) counts as absent: what a
model was trained on can no longer be checked or reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loopline.store.errors import translated
from loopline.store.models import DatasetVersionRow, ValidationRunRow


@dataclass(frozen=True, slots=True)
class SnapshotState:
    """One snapshot ref: whether it exists, and how its newest validation run ended.

    ``validated`` is None when the snapshot was never validated (or does not exist);
    ``suites`` are the suites ever run on it, by name.
    """

    ref: str
    exists: bool
    validated: bool | None
    suites: tuple[str, ...] = ()


def _split(ref: str) -> tuple[str, int] | None:
    name, at, number = ref.rpartition("@")
    if not at or not name or not number.isdigit():
        return None
    return name, int(number)


class GovernanceQueries:
    """Reads of snapshot existence and validation outcomes for governance facts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated
    def snapshot_states(self, refs: Sequence[str]) -> list[SnapshotState]:
        """Describe each ref in order; a ref that is malformed or not stored is absent."""
        keys = {ref: key for ref in refs if (key := _split(ref)) is not None}
        if not keys:
            return [SnapshotState(ref, False, None) for ref in refs]
        table = DatasetVersionRow
        match = sa.or_(*(sa.and_(table.dataset == name, table.version == number)
                         for name, number in set(keys.values())))
        with self._engine.connect() as connection:
            found = {(row.dataset, row.version): row.id for row in connection.execute(
                sa.select(table.id, table.dataset, table.version)
                .where(match, table.purged_at.is_(None)))}
            runs = connection.execute(
                sa.select(ValidationRunRow.dataset_version_id, ValidationRunRow.suite,
                          ValidationRunRow.passed)
                .where(ValidationRunRow.dataset_version_id.in_(list(found.values())))
                .order_by(ValidationRunRow.created_at.desc(),
                          ValidationRunRow.id.desc())).all() if found else []
        newest: dict[str, bool] = {}
        suites: dict[str, set[str]] = {}
        for run_of, suite, passed in runs:
            newest.setdefault(run_of, bool(passed))  # rows come newest first
            suites.setdefault(run_of, set()).add(suite)
        states = []
        for ref in refs:
            version_id: str | None = found.get(keys[ref]) if ref in keys else None
            if version_id is None:
                states.append(SnapshotState(ref, False, None))
            else:
                states.append(SnapshotState(ref, True, newest.get(version_id),
                                            tuple(sorted(suites.get(version_id, ())))))
        return states
