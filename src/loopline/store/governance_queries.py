"""Reads governance needs from the data tables: whether snapshots exist and passed validation.

Two queries for any number of snapshot refs (``NAME@VERSION``): the snapshots, then their
validation runs; a snapshot is validated when the newest run of each suite ever run on it
passed. A purged snapshot (its data deleted by retention) counts as absent: what a
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
    """One snapshot ref: whether it exists, and whether every suite run on it passes now.

    ``validated`` is None when the snapshot was never validated (or does not exist), True
    when the newest run of every suite ever run on it passed, and False otherwise;
    ``suites`` are the suites ever run on it and ``failing`` those whose newest run failed,
    by name. Judging each suite by its own newest run means passing a lenient suite later
    does not hide a strict one that still fails.
    """

    ref: str
    exists: bool
    validated: bool | None
    suites: tuple[str, ...] = ()
    failing: tuple[str, ...] = ()


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
        newest: dict[str, dict[str, bool]] = {}
        for run_of, suite, passed in runs:
            # Rows come newest first, so the first row of a suite is its newest run.
            newest.setdefault(run_of, {}).setdefault(suite, bool(passed))
        return [_state(ref, found.get(keys[ref]) if ref in keys else None, newest)
                for ref in refs]


def _state(ref: str, version_id: str | None,
           newest: dict[str, dict[str, bool]]) -> SnapshotState:
    if version_id is None:
        return SnapshotState(ref, False, None)
    suites = newest.get(version_id, {})
    if not suites:
        return SnapshotState(ref, True, None)
    failing = tuple(sorted(suite for suite, passed in suites.items() if not passed))
    return SnapshotState(ref, True, not failing, tuple(sorted(suites)), failing)
