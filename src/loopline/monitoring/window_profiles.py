"""A window's rows profiled batch by batch against a version's reference, in bounded memory.

Pure: no I/O. ``WindowProfiler(reference_inputs, reference_outputs)`` takes the expanded rows
of one served version a batch at a time (``window_rows.expand_predictions`` of a slice of the
log) and keeps only the data layer's ``Profiler`` sketches: the reference's input columns,
and the window's predictions as the column ``prediction`` (the name the reference's output
profile uses). Each batch is first put in the reference's shape, so the batches merge
whatever each one held:

- a column a batch lacks, or holds only nulls of (Arrow's null type), adds nulls of the
  reference's kind; ``present`` names the columns some batch held, so a column the window
  never had is told from one it held only nulls of;
- a column whose values are of another kind than the reference's (text where numbers were)
  is not profiled from then on and is named in ``skipped`` with the reason (``prediction``'s
  reason is ``outputs_skipped``); drift leaves such columns out, as it leaves out a
  reference column of a kind with no drift test (``other``), also named there.

Memory is one batch of rows plus the sketches, whatever the window's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from loopline.data.column_profile import ColumnProfile, Family
from loopline.data.column_scan import family_of
from loopline.data.profiling import Profile, Profiler
from loopline.monitoring.config_yaml import PREDICTION_COLUMN
from loopline.monitoring.window_rows import PREDICTION

__all__ = ["WindowProfile", "WindowProfiler"]

_NULL_TYPES = {Family.NUMERIC: pa.float64(), Family.BOOLEAN: pa.bool_(),
               Family.STRING: pa.large_string()}


def _null_type(reference: ColumnProfile) -> pa.DataType | None:
    """Return the Arrow type of a null cell of ``reference``'s kind; None: not profiled."""
    if reference.family is Family.DATETIME:
        return pa.timestamp("us", reference.timezone)
    return _NULL_TYPES.get(reference.family)


@dataclass(frozen=True, slots=True)
class WindowProfile:
    """What a window's rows of one version look like, next to its reference.

    ``inputs`` holds the reference's profiled input columns (None when it has none),
    ``outputs`` the predictions as ``prediction`` (None without an output reference).
    """

    rows: int
    inputs: Profile | None
    outputs: Profile | None
    present: frozenset[str] = frozenset()
    skipped: dict[str, str] = field(default_factory=dict)
    outputs_skipped: str | None = None


class _Columns:
    """One ``Profiler`` over some reference columns, each read from a column of the rows."""

    def __init__(self, wanted: dict[str, tuple[str, ColumnProfile]]) -> None:
        self.wanted = wanted  # profiled name -> (the rows' column, the reference's profile)
        self.present: set[str] = set()
        self.skipped: dict[str, str] = {}
        self._profiler = Profiler() if wanted else None

    def update(self, rows: pa.Table) -> None:
        if self._profiler is None:
            return
        self._profiler.update(pa.table({name: self._column(rows, name, source, reference)
                                        for name, (source, reference) in self.wanted.items()}))

    def _column(self, rows: pa.Table, name: str, source: str,
                reference: ColumnProfile) -> pa.Array | pa.ChunkedArray:
        empty = pa.nulls(rows.num_rows, _null_type(reference))
        if source not in rows.column_names:
            return empty
        self.present.add(name)
        values = rows.column(source)
        if pa.types.is_null(values.type) or name in self.skipped:
            return empty
        found = family_of(values.type)
        if found is not reference.family:
            self.skipped[name] = (f"kinds differ: the reference is {reference.kind.value}, "
                                  f"the current window {found.value}")
            return empty
        return values

    def result(self) -> Profile | None:
        return None if self._profiler is None else self._profiler.result()


class WindowProfiler:
    """Profiles one version's window rows against its reference (see the module docstring)."""

    def __init__(self, reference_inputs: Profile, reference_outputs: Profile | None) -> None:
        self.rows = 0
        wanted: dict[str, tuple[str, ColumnProfile]] = {}
        self._unprofiled: dict[str, str] = {}
        for column in reference_inputs.columns:
            if _null_type(column) is None:
                self._unprofiled[column.name] = f"{column.kind.value} columns have no drift test"
            else:
                wanted[column.name] = (column.name, column)
        self._inputs = _Columns(wanted)
        outputs: dict[str, tuple[str, ColumnProfile]] = {}
        self._outputs_skipped: str | None = None
        if reference_outputs is not None and PREDICTION_COLUMN in reference_outputs.names:
            column = reference_outputs.column(PREDICTION_COLUMN)
            if _null_type(column) is None:
                self._outputs_skipped = f"{column.kind.value} columns have no drift test"
            else:
                outputs[PREDICTION_COLUMN] = (PREDICTION, column)
        self._outputs = _Columns(outputs)

    def update(self, rows: pa.Table) -> None:
        """Add one batch of the version's expanded rows."""
        self.rows += rows.num_rows
        self._inputs.update(rows)
        self._outputs.update(rows)

    def result(self) -> WindowProfile:
        """Return the profile of every row added so far."""
        outputs_skipped = self._outputs_skipped or self._outputs.skipped.get(PREDICTION_COLUMN)
        return WindowProfile(
            rows=self.rows, inputs=self._inputs.result(),
            outputs=None if outputs_skipped else self._outputs.result(),
            present=frozenset(self._inputs.present),
            skipped={**self._unprofiled, **self._inputs.skipped},
            outputs_skipped=outputs_skipped)
