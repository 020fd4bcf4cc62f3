"""The reference profile recorded at registration: the training inputs' and outputs' profiles.

Given ``reference=`` (the training inputs, a DataFrame or a pyarrow Table), registration
profiles it with the data layer's ``Profiler``, ``BATCH_ROWS`` rows at a time, and keeps no
rows: only the signature's input columns are profiled (all columns without a signature), so
the profile is of exactly what the model reads. The outputs' profile is of the model's
``predict`` on a deterministic sample of at most ``MAX_SCORED`` rows (all of them when there
are no more, else a seeded random choice, as the holdout sample is chosen), scored
``SCORE_ROWS`` at a time, as one column ``prediction`` (a 2-D output row, or an output that is
not a scalar, as JSON text written by ``data.json_text``), the way monitoring reads the
prediction log, so identical outputs compare equal. Both go into one JSON payload in the
artifact store::

    {"format": 1, "rows": N, "inputs": Profile.to_dict(), "outputs": Profile.to_dict(),
     "scored": {"rows": M, "of_rows": N, "selection": "all" | "random(seed=0)"}}

(Python's JSON, which writes a column's infinities as ``Infinity``.) The version keeps
``extra["reference_profile"]``: ``{"digest", "rows", "columns", "scored_rows", "selection"}``.
An ``input_example`` is never taken as the reference: it is too small to stand for the
training data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from loopline.core.canonical import sha256_hex
from loopline.core.errors import InvalidArgumentError, LooplineError, UserCodeError
from loopline.data.json_text import json_column, json_text
from loopline.data.parquet_io import ARROW_ERRORS
from loopline.data.profiling import Profile, Profiler
from loopline.registry.flavors import LoadedModel
from loopline.registry.holdout import select_rows

FORMAT = 1
FIELD = "reference"
OUTPUT = "prediction"
MAX_SCORED = 100_000
BATCH_ROWS = 65_536
SCORE_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class PreparedReference:
    """A reference profile ready to store: its record for ``extra`` and the JSON bytes."""

    record: dict[str, Any]
    payload: bytes


class _Source:
    """The reference's columns as Arrow batches and as pandas rows, without copying it whole."""

    def __init__(self, data: Any, names: Sequence[str] | None) -> None:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            columns = list(data.columns)
            if not all(isinstance(n, str) for n in columns) or len(set(columns)) != len(columns):
                raise InvalidArgumentError(FIELD, "a DataFrame's column names must be distinct "
                                                  "strings")
        elif not isinstance(data, pa.Table):
            raise InvalidArgumentError(FIELD, f"must be a pandas DataFrame or a pyarrow Table "
                                              f"of the training inputs, not a "
                                              f"{type(data).__name__}")
        else:
            columns = list(data.column_names)
        self.names = list(names) if names is not None else columns
        missing = [name for name in self.names if name not in columns]
        if missing:
            raise InvalidArgumentError(FIELD, f"lacks the signature's input column "
                                              f"{missing[0]!r} (it has {columns})")
        if len(data) == 0:
            raise InvalidArgumentError(FIELD, "has no rows; pass the training inputs")
        self.data = data
        self.rows = len(data)

    def batches(self) -> Iterator[pa.RecordBatch | pa.Table]:
        """Yield the profiled columns, ``BATCH_ROWS`` rows at a time."""
        if isinstance(self.data, pa.Table):
            yield from self.data.select(self.names).to_batches(max_chunksize=BATCH_ROWS)
            return
        frame = self.data[self.names]
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        for start in range(0, self.rows, BATCH_ROWS):
            yield pa.RecordBatch.from_pandas(frame.iloc[start:start + BATCH_ROWS], schema=schema,
                                             preserve_index=False)

    def rows_at(self, positions: Any) -> Any:
        """Return the rows at ``positions`` as a DataFrame of the profiled columns."""
        if isinstance(self.data, pa.Table):
            return self.data.select(self.names).take(pa.array(positions)).to_pandas()
        return self.data.iloc[positions][self.names].reset_index(drop=True)


def _output_column(values: Any) -> pa.Array:
    """Return predictions as one Arrow column; a 2-D row becomes JSON text."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.ravel()
    if array.ndim == 1:
        return json_column(array.tolist()) if array.dtype == object else pa.array(array)
    if array.ndim == 2:
        return pa.array([json_text(row) for row in array.tolist()], pa.string())
    raise InvalidArgumentError(FIELD, f"the model's predict returned a {array.ndim}-D result; "
                                      "only 1-D and 2-D outputs can be profiled")


def _outputs(scorer: LoadedModel, source: _Source) -> tuple[Profile, int, str]:
    positions, selection = select_rows(source.rows, MAX_SCORED)
    profiler = Profiler()
    for start in range(0, len(positions), SCORE_ROWS):
        chunk = source.rows_at(positions[start:start + SCORE_ROWS])
        try:
            predicted = scorer.predict(chunk)
        except LooplineError:
            raise
        except Exception as exc:  # the user's model: any failure is theirs, kept as the cause
            raise UserCodeError(f"the model raised while scoring the reference: "
                                f"{type(exc).__name__}: {exc}") from exc
        column = _output_column(predicted)
        if len(column) != len(chunk):
            raise UserCodeError(f"the model returned {len(column)} predictions for "
                                f"{len(chunk)} reference rows")
        profiler.update(pa.table({OUTPUT: column}))
    return profiler.result(), len(positions), selection


def prepare_reference(scorer: LoadedModel, data: Any, names: Sequence[str] | None,
                      ) -> PreparedReference:
    """Return the reference profile of ``data`` and of ``scorer``'s outputs on it.

    ``names`` are the signature's input columns (None: every column of ``data``).

    Raises:
        InvalidArgumentError: naming ``reference`` when it is not a DataFrame or Table, has
            no rows, lacks one of ``names``, or its values or the model's outputs cannot be
            profiled.
        UserCodeError: when the model raises while scoring the reference.
    """
    source = _Source(data, names)
    profiler = Profiler()
    try:
        for batch in source.batches():
            profiler.update(batch)
        inputs = profiler.result()
        outputs, scored, selection = _outputs(scorer, source)
    except InvalidArgumentError as exc:
        if exc.field == FIELD:
            raise
        raise InvalidArgumentError(FIELD, f"{exc.field}: {exc.problem}") from exc
    except ARROW_ERRORS as exc:
        raise InvalidArgumentError(FIELD, f"cannot be profiled: {exc}") from exc
    document = {"format": FORMAT, "rows": source.rows, "inputs": inputs.to_dict(),
                "outputs": outputs.to_dict(),
                "scored": {"rows": scored, "of_rows": source.rows, "selection": selection}}
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")  # columns in order
    record = {"digest": sha256_hex(payload), "rows": source.rows,
              "columns": list(source.names), "scored_rows": scored, "selection": selection}
    return PreparedReference(record, payload)
