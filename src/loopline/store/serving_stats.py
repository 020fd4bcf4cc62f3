"""What servers answered, per time bucket, for the rollout analysis (the SQL side of it).

A row of ``serving_stats`` is keyed by (deployment, model version, server instance, bucket
start) and holds that instance's request and error counts for the bucket and a latency
sketch (``data.quantile_sketch.QuantileSketch.to_dict()``, milliseconds).

The writing contract (for ``serving.stats_recorder``): each instance owns its rows, and
``add_stats`` is an upsert that *replaces* a row with the caller's **cumulative** state for
that key: all requests and errors the instance counted in the bucket so far, and the sketch
of all their latencies. So a flush repeated after a lost acknowledgement, or replayed, counts
nothing twice. A row never moves backwards: a write whose ``requests`` is below the stored
value (a stale flush) leaves the row as it is. An instance name must therefore be unique per
process (a restarted server starts new rows rather than resetting old ones).

The store cannot merge sketches (``data`` sits above it); ``window_rows`` returns the rows of
a window and ``data.serving_windows`` merges them across instances and buckets.

The bucket grid: a bucket starts at a whole multiple of ``BUCKET_SECONDS`` since the epoch
(UTC), and a server writes a bucket's final state within ``FLUSH_SECONDS`` of its end (the
defaults of ``serving.stats_recorder.StatsRecorder``). A window read for a verdict must cover
whole buckets (start and end on the grid) and be read only once its last bucket's final
flush has landed, so that reading it again later gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from loopline.core.errors import InvalidArgumentError
from loopline.core.names import validate_name
from loopline.store.errors import translated
from loopline.store.metadata_store import MetadataStore
from loopline.store.models import ROLLOUT_VERDICTS, SERVING_STATS

__all__ = ["BUCKET_SECONDS", "FLUSH_SECONDS", "STATS_ACTOR", "StatsRow", "add_stats",
           "latest_verdict_end", "prune_stats", "window_rows"]

BUCKET_SECONDS = 10  # the servers' stats bucket length (``StatsRecorder`` default)
FLUSH_SECONDS = 5  # how often servers flush their stats (``StatsRecorder`` default)
STATS_ACTOR = "loopline-serving"
MAX_MODEL_VERSION = 256
MAX_INSTANCE = 128
MAX_ROWS_PER_WRITE = 10_000
_KEY = ("deployment", "model_version", "instance", "bucket_start")


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One instance's cumulative counts and latency sketch for one version and bucket.

    ``model_version`` is the route URI, ``models:/NAME/VERSION``; ``bucket_start`` is aware.
    """

    deployment: str
    model_version: str
    instance: str
    bucket_start: datetime
    requests: int
    errors: int
    latency_sketch: Mapping[str, Any]


def _count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(field, f"{value!r} must be a whole number >= 0")
    return value


def _text(value: object, field: str, max_length: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidArgumentError(field, f"must be 1-{max_length} characters")
    return value


def _check(row: StatsRow, field: str) -> dict[str, Any]:
    """Return the row's column values.

    Raises:
        InvalidArgumentError: naming ``field.<attribute>`` for a bad value.
    """
    validate_name(row.deployment, f"{field}.deployment")
    _text(row.model_version, f"{field}.model_version", MAX_MODEL_VERSION)
    _text(row.instance, f"{field}.instance", MAX_INSTANCE)
    if not isinstance(row.bucket_start, datetime) or row.bucket_start.tzinfo is None:
        raise InvalidArgumentError(f"{field}.bucket_start", "must be an aware datetime")
    requests = _count(row.requests, f"{field}.requests")
    errors = _count(row.errors, f"{field}.errors")
    if errors > requests:
        raise InvalidArgumentError(f"{field}.errors", f"{errors} is more than the {requests} "
                                                      "requests")
    if not isinstance(row.latency_sketch, Mapping):
        raise InvalidArgumentError(f"{field}.latency_sketch", "must be a sketch dict")
    return {"deployment": row.deployment, "model_version": row.model_version,
            "instance": row.instance, "bucket_start": row.bucket_start,
            "requests": requests, "errors": errors,
            "latency_sketch": dict(row.latency_sketch)}


def _upsert(connection: Connection) -> Any:
    """Return the dialect's INSERT ... ON CONFLICT that replaces a row unless it is newer."""
    insert = (postgresql.insert(SERVING_STATS) if connection.dialect.name == "postgresql"
              else sqlite.insert(SERVING_STATS))
    return insert.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={"requests": insert.excluded.requests, "errors": insert.excluded.errors,
              "latency_sketch": insert.excluded.latency_sketch},
        where=insert.excluded.requests >= SERVING_STATS.c.requests)


def add_stats(store: MetadataStore, rows: Sequence[StatsRow], actor: str = STATS_ACTOR,
              ) -> None:
    """Write each row's cumulative state in one write transaction (see the module docstring).

    Raises:
        InvalidArgumentError: naming ``rows[i].<attribute>`` for a bad value, or ``rows``
            when it holds more than ``MAX_ROWS_PER_WRITE`` rows or one key twice.
        BackendError: when the database fails (nothing is written).
    """
    if len(rows) > MAX_ROWS_PER_WRITE:
        raise InvalidArgumentError("rows", f"{len(rows)} rows; write at most "
                                           f"{MAX_ROWS_PER_WRITE} at once")
    values = [_check(row, f"rows[{index}]") for index, row in enumerate(rows)]
    keys = {tuple(value[k] for k in _KEY) for value in values}
    if len(keys) != len(values):
        raise InvalidArgumentError("rows", "holds one (deployment, model_version, instance, "
                                           "bucket_start) twice")
    if not values:
        return
    values.sort(key=lambda value: tuple(value[k] for k in _KEY))  # one lock order for all
    with store.write(actor) as uow:
        connection = uow.session.connection()
        for value in values:
            connection.execute(_upsert(connection), value)


def _row(mapping: Any) -> StatsRow:
    return StatsRow(deployment=mapping["deployment"], model_version=mapping["model_version"],
                    instance=mapping["instance"], bucket_start=mapping["bucket_start"],
                    requests=int(mapping["requests"]), errors=int(mapping["errors"]),
                    latency_sketch=mapping["latency_sketch"] or {})


@translated
def window_rows(engine: Engine, deployment: str, start: datetime, end: datetime,
                ) -> list[StatsRow]:
    """Return the deployment's rows whose bucket starts in ``[start, end)``, in key order.

    Raises:
        InvalidArgumentError: for a bad deployment name, naive times or ``end < start``.
        BackendError: when the database fails.
    """
    validate_name(deployment, "deployment")
    for field, when in (("start", start), ("end", end)):
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise InvalidArgumentError(field, "must be an aware datetime")
    if end < start:
        raise InvalidArgumentError("end", f"{end.isoformat()} is before the start "
                                          f"{start.isoformat()}")
    statement = (sa.select(SERVING_STATS)
                 .where(SERVING_STATS.c.deployment == deployment,
                        SERVING_STATS.c.bucket_start >= start, SERVING_STATS.c.bucket_start < end)
                 .order_by(*(SERVING_STATS.c[k] for k in _KEY)))
    with engine.connect() as connection:
        return [_row(mapping) for mapping in connection.execute(statement).mappings()]


def prune_stats(store: MetadataStore, deployment: str, before: datetime,
                actor: str = STATS_ACTOR) -> int:
    """Delete the deployment's rows whose bucket starts before ``before``; return how many.

    Uses the (deployment, bucket_start) index; one write transaction.

    Raises:
        InvalidArgumentError: for a bad deployment name or a naive ``before``.
        BackendError: when the database fails (nothing is deleted).
    """
    validate_name(deployment, "deployment")
    if not isinstance(before, datetime) or before.tzinfo is None:
        raise InvalidArgumentError("before", "must be an aware datetime")
    with store.write(actor) as uow:
        result = uow.session.connection().execute(
            sa.delete(SERVING_STATS).where(SERVING_STATS.c.deployment == deployment,
                                           SERVING_STATS.c.bucket_start < before))
        return int(result.rowcount or 0)


@translated
def latest_verdict_end(engine: Engine, deployment: str,
                       verdicts: Sequence[str] | None = None) -> datetime | None:
    """Return where the deployment's latest rollout verdict window ended (None before any).

    ``verdicts`` limits it to verdicts of those kinds (``("pass", "fail")``: the latest
    decisive one). The rollout controller starts the next window at the latest decisive
    verdict's end, and judges no window ending at or before the latest verdict's end, so a
    re-run after a crash judges the same window again.

    Raises:
        BackendError: when the database fails.
    """
    statement = (sa.select(ROLLOUT_VERDICTS.c.window_end)
                 .where(ROLLOUT_VERDICTS.c.deployment == deployment)
                 .order_by(ROLLOUT_VERDICTS.c.window_end.desc()).limit(1))
    if verdicts is not None:
        statement = statement.where(ROLLOUT_VERDICTS.c.verdict.in_(list(verdicts)))
    with engine.connect() as connection:
        value: datetime | None = connection.execute(statement).scalar()
    return value
