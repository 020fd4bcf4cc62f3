"""The prediction log: append-only Parquet segments of predictions and feedback, and reads.

Each append validates the whole batch first, writes one Parquet segment to the blob store,
then indexes it and emits ``prediction.segment_written`` in one metadata transaction: a
crash leaves at worst an unreferenced blob, never an index row naming missing bytes. Reads
ask the index for the segments overlapping a window and filter their rows exactly.
Retention removes whole segments older than a cut-off (audited) and then their blobs;
``delete_before`` keeps what governance retention keeps, by running the same store-level
decision (``store.retention_records.decide_segments``): segments under an active legal hold
and segments the lineage of a served model version reaches stay.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loopline.core.clock import Clock
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.governance import Permission
from loopline.core.ids import new_id
from loopline.core.ports import Authorizer, BlobStore, authorize_if_wired
from loopline.core.predictions import (
    KIND_FEEDBACK,
    KIND_PREDICTIONS,
    RETENTION_ACTION,
    RETENTION_APPLIED,
    SEGMENT_WRITTEN,
    PredictionWindow,
    SegmentInfo,
)
from loopline.data.prediction_rows import (
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    TIME_TYPE,
    PreparedBatch,
    Records,
    prepare_feedback,
    prepare_predictions,
)
from loopline.store import MetadataStore, blob_references
from loopline.store import retention_records as records
from loopline.store.predictions import (
    SegmentQuery,
    find_segments,
    insert_segment,
    segment_exists,
)

MAX_READ_LAST = 1_000_000
LABEL_COLUMNS = ("label", "label_time")


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to shape a read: join the newest feedback label, keep only some columns."""

    with_feedback: bool = False
    columns: tuple[str, ...] | None = None


class PredictionLog:
    """Append-only prediction and feedback records, in Parquet segments indexed by time.

    With an ``authorizer``, writes need ``write`` and ``delete_before`` needs ``admin``; a
    bare log (no authorizer) checks no roles.
    """

    def __init__(self, store: MetadataStore, blobs: BlobStore, actor: str,
                 clock: Clock, authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._blobs = blobs
        self._actor = actor
        self._clock = clock
        self._authorizer = authorizer

    @property
    def clock(self) -> Clock:
        """The clock that stamps segments (and that writers read for batch ages)."""
        return self._clock

    # ------------------------------------------------------------------------ writes

    def append(self, records: Records | PreparedBatch) -> SegmentInfo:
        """Validate ``records`` and write them as one prediction segment.

        ``records`` is an iterable of ``PredictionRecord``, a pyarrow Table or a DataFrame
        with the columns of ``PREDICTION_SCHEMA`` (string ``inputs``/``outputs`` columns hold
        JSON text), or a batch from ``prepare_predictions``.

        Raises:
            AccessDeniedError: when the actor lacks ``write``.
            InvalidArgumentError: naming the field (and row) that is not acceptable; nothing
                is written.
            BackendError: when the blob store or database fails (the exception of the
                driver may also surface as is).
        """
        batch = records if isinstance(records, PreparedBatch) else prepare_predictions(records)
        if batch.kind != KIND_PREDICTIONS:
            raise InvalidArgumentError("records", "a feedback batch given to append")
        return self._write(batch)

    def log_feedback(self, records: Records | PreparedBatch) -> SegmentInfo:
        """Validate feedback labels and write them as one feedback segment.

        Raises:
            AccessDeniedError: when the actor lacks ``write``.
            InvalidArgumentError: naming the field (and row) that is not acceptable; nothing
                is written.
            BackendError: when the blob store or database fails.
        """
        batch = records if isinstance(records, PreparedBatch) else prepare_feedback(records)
        if batch.kind != KIND_FEEDBACK:
            raise InvalidArgumentError("feedback", "a prediction batch given to log_feedback")
        return self._write(batch)

    def _write(self, batch: PreparedBatch) -> SegmentInfo:
        authorize_if_wired(self._authorizer, self._actor, Permission.WRITE)
        segment_id = new_id()
        bounds = pc.min_max(batch.table["time"]).as_py()
        # The segment id in the file's metadata makes every segment's bytes unique, so no two
        # segments share a blob and retention never deletes bytes a newer segment relies on.
        table = batch.table.replace_schema_metadata(
            {"loopline.segment": segment_id, "loopline.kind": batch.kind})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        blob = self._blobs.put_bytes(buffer.getvalue())
        info = SegmentInfo(
            id=segment_id, kind=batch.kind, deployment=batch.deployment,
            model_versions=batch.model_versions, rows=table.num_rows,
            min_time=bounds["min"].astimezone(UTC), max_time=bounds["max"].astimezone(UTC),
            blob_digest=blob.digest, created_at=self._clock.now())
        with self._store.write(self._actor) as uow:
            insert_segment(uow.session, info)
            uow.emit(SEGMENT_WRITTEN, f"prediction_segment:{info.id}", _describe(info))
        return info

    def delete_before(self, cutoff: datetime) -> int:
        """Delete the segments whose rows all precede ``cutoff``; return how many went.

        Keeps what governance retention keeps, decided by the same store code
        (``decide_segments``): a segment an active legal hold on ``prediction_log`` /
        ``feedback`` covers, and one the lineage of a version in production or staging (or
        named by an alias) reaches. The index rows go in one audited transaction
        (``predictions.retention``, with an event); their blobs are deleted after it
        commits, so a crash in between leaves unreferenced bytes, never an index row naming
        missing ones. Running it again with the same cut-off deletes nothing more, and a
        run that deletes nothing records no audit entry or event.

        Raises:
            AccessDeniedError: when the actor lacks ``admin``.
            InvalidArgumentError: when ``cutoff`` is not a timezone-aware datetime.
        """
        if not isinstance(cutoff, datetime) or cutoff.utcoffset() is None:
            raise InvalidArgumentError("cutoff", "must be a timezone-aware datetime")
        authorize_if_wired(self._authorizer, self._actor, Permission.ADMIN)
        with self._store.write(self._actor) as uow:
            uow.serialise()  # the lock every retention takes: decide and delete race-free
            connection = uow.session.connection()
            scope = records.retention_scope(connection)
            decisions = [records.decide_segments(connection, kind, cutoff, scope)
                         for kind in (KIND_PREDICTIONS, KIND_FEEDBACK)]
            doomed = [segment for decision in decisions for segment in decision.doomed]
            records.delete_segments(connection, [segment.id for segment in doomed])
            if doomed:
                details = {"cutoff": cutoff.astimezone(UTC).isoformat(),
                           "segments": len(doomed),
                           "rows": sum(segment.rows for segment in doomed),
                           "blobs": len({segment.blob_digest for segment in doomed}),
                           "held": sum(len(decision.held) for decision in decisions),
                           "protected": sum(len(decision.protected) for decision in decisions)}
                uow.audit(RETENTION_ACTION, "predictions", None, details)
                uow.emit(RETENTION_APPLIED, "predictions", details)
        self._delete_blobs([segment.blob_digest for segment in doomed])
        return len(doomed)

    def _delete_blobs(self, digests: list[str]) -> None:
        """Delete the blobs of removed segments that no committed record names any more."""
        if not digests:
            return
        with self._store.engine.connect() as connection:
            named = blob_references.directly_referenced(connection, digests)
        for digest in digests:
            if digest in named:
                continue
            with contextlib.suppress(NotFoundError):  # already gone: an earlier run crashed
                self._blobs.delete(digest)

    # ------------------------------------------------------------------------ reads

    def segments(self, window: PredictionWindow | None = None,
                 kind: str = KIND_PREDICTIONS) -> list[SegmentInfo]:
        """List the segments of ``kind`` that may hold rows of ``window``, oldest first.

        Raises:
            InvalidArgumentError: for a bad window or kind.
        """
        query = SegmentQuery(kind, (window or PredictionWindow()).checked())
        with self._store.read() as session:
            return find_segments(session, query)

    def read(self, window: PredictionWindow | None = None,
             options: ReadOptions | None = None) -> pa.Table:
        """Return the predictions inside ``window``, ordered by time.

        Only segments overlapping the window are read; their rows are then filtered exactly
        (``start`` inclusive, ``end`` exclusive). With ``with_feedback`` the newest label of
        each request (by label time, then by write order) is joined as ``label`` (JSON text)
        and ``label_time``, null when there is none. Labels are looked for from the window's
        start on: a label is expected to be logged after the prediction it labels.

        Raises:
            InvalidArgumentError: for a bad window or an unknown column.
        """
        window = (window or PredictionWindow()).checked()
        options = options or ReadOptions()
        columns = _check_columns(options)
        parts = [self._rows_of(info, window) for info in self.segments(window)]
        table = _concat([part for part in parts if part is not None], PREDICTION_SCHEMA)
        table = table.sort_by([("time", "ascending")])
        if options.with_feedback:
            table = self._join_feedback(table, window.start)
        return table.select(list(columns)) if columns else table

    def read_segments(self, window: PredictionWindow | None = None) -> Iterator[pa.Table]:
        """Yield the predictions inside ``window`` one segment at a time, without feedback.

        The same rows as ``read`` (filtered exactly), but only one segment's rows are held at
        a time: segments come oldest first, each one's rows in the order written, not merged
        by time across segments. A segment removed by retention meanwhile is skipped.

        Raises:
            InvalidArgumentError: for a bad window.
        """
        window = (window or PredictionWindow()).checked()
        for info in self.segments(window):
            part = self._rows_of(info, window)
            if part is not None and part.num_rows:
                yield part.cast(PREDICTION_SCHEMA)

    def read_last(self, n: int, deployment: str | None = None) -> pa.Table:
        """Return the ``n`` newest predictions (of ``deployment``), ordered by time.

        Raises:
            InvalidArgumentError: when ``n`` is outside 1..1,000,000 or the name is bad.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_READ_LAST:
            raise InvalidArgumentError("n", f"must be between 1 and {MAX_READ_LAST}")
        window = PredictionWindow(deployment=deployment).checked()
        with self._store.read() as session:
            newest = find_segments(session, SegmentQuery(KIND_PREDICTIONS, window, True))
        parts: list[pa.Table] = []
        count, threshold = 0, None
        for info in newest:
            if threshold is not None and info.max_time < threshold:
                break  # this and every older segment hold only rows older than the n-th
            part = self._rows_of(info, window)
            if part is None:
                continue
            parts.append(part)
            count += part.num_rows
            if count >= n:
                threshold = _nth_newest(parts, n)
        table = _concat(parts, PREDICTION_SCHEMA).sort_by([("time", "descending")]).slice(0, n)
        return table.sort_by([("time", "ascending")])

    def _rows_of(self, info: SegmentInfo, window: PredictionWindow) -> pa.Table | None:
        """Read a segment's rows inside ``window``; None if retention removed it meanwhile."""
        try:
            data = self._blobs.get_bytes(info.blob_digest)
        except NotFoundError:
            with self._store.read() as session:
                if not segment_exists(session, info.id):
                    return None
            raise
        table = pq.read_table(pa.BufferReader(data)).replace_schema_metadata(None)
        condition = _condition(window)
        return table if condition is None else table.filter(condition)

    def _join_feedback(self, table: pa.Table, start: datetime | None) -> pa.Table:
        query = SegmentQuery(KIND_FEEDBACK, PredictionWindow(start=start))
        with self._store.read() as session:
            found = sorted(find_segments(session, query), key=lambda info: info.id)
        wanted = pc.unique(table["request_id"])
        parts = []
        for info in found:  # ids are time-ordered: this is write order
            part = self._rows_of(info, PredictionWindow())
            if part is not None:
                parts.append(part.filter(pc.is_in(part["request_id"], value_set=wanted)))
        labels = _newest_labels(_concat(parts, FEEDBACK_SCHEMA))
        order = pa.array(range(table.num_rows), pa.int64())
        joined = table.append_column("__row", order).join(
            labels, keys="request_id", join_type="left outer")
        return joined.sort_by([("__row", "ascending")]).drop_columns(["__row"])


def _describe(info: SegmentInfo) -> dict[str, Any]:
    return {"id": info.id, "kind": info.kind, "deployment": info.deployment,
            "model_versions": list(info.model_versions), "rows": info.rows,
            "min_time": info.min_time.isoformat(), "max_time": info.max_time.isoformat(),
            "blob_digest": info.blob_digest}


def _check_columns(options: ReadOptions) -> tuple[str, ...] | None:
    if options.columns is None:
        return None
    known = PREDICTION_SCHEMA.names + (list(LABEL_COLUMNS) if options.with_feedback else [])
    for name in options.columns:
        if name not in known:
            raise InvalidArgumentError("columns", f"{name!r} is not one of {', '.join(known)}")
    if not options.columns:
        raise InvalidArgumentError("columns", "name at least one column, or pass None for all")
    return tuple(options.columns)


def _instant(value: datetime) -> pa.Scalar:
    return pa.scalar(value.astimezone(UTC), type=TIME_TYPE)


def _condition(window: PredictionWindow) -> pc.Expression | None:
    terms = []
    if window.deployment is not None:
        terms.append(pc.field("deployment") == window.deployment)
    if window.model_version is not None:
        terms.append(pc.field("model_version") == window.model_version)
    if window.start is not None:
        terms.append(pc.field("time") >= _instant(window.start))
    if window.end is not None:
        terms.append(pc.field("time") < _instant(window.end))
    if not terms:
        return None
    condition = terms[0]
    for term in terms[1:]:
        condition = condition & term
    return condition


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([part.cast(schema) for part in parts])


def _nth_newest(parts: list[pa.Table], n: int) -> datetime:
    times = pa.concat_tables(parts).sort_by([("time", "descending")])["time"]
    result: datetime = times[n - 1].as_py()
    return result


def _newest_labels(feedback: pa.Table) -> pa.Table:
    """Keep, per request id, the label with the newest time (ties: the one written last)."""
    seq = pa.array(range(feedback.num_rows), pa.int64())
    ordered = feedback.append_column("__seq", seq).sort_by(
        [("time", "ascending"), ("__seq", "ascending")])
    newest = ordered.group_by("request_id", use_threads=False).aggregate(
        [("label", "last"), ("time", "last")])
    return newest.rename_columns({"label_last": "label", "time_last": "label_time"})
