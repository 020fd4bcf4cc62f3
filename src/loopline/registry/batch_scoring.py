"""Batch scoring: one model version over a Parquet/CSV dataset, chunk by chunk, to one file.

The input (a DataFrame or Arrow table, a CSV/Parquet file, glob, folder or fsspec URL, or a
snapshot ``dataset:NAME@N``) is read as a stream of Arrow batches and cut into chunks of
exactly ``chunk_rows`` rows (the last may be shorter), so memory is bounded by the chunks in
flight, never by the input. Each chunk is checked against the version's signature (an error
stops the run with ``InvalidArgumentError`` naming the column and the chunk's first row;
range and category warnings are counted into the report), scored, and written in input
order with the ``keep`` columns passed through and a ``prediction`` column (``proba_<class>``
columns too with ``proba``).

Executors: ``inline`` scores in the calling thread, ``thread`` in a small pool, ``ray`` in
Ray tasks: the artifact's verified bytes go to the object store once, and each worker loads
the model once (cached by digest). Chunks travel as Arrow tables; workers return outputs and
problems as data, so no exception has to survive pickling. Results are always written in
order by the driver. The output goes to a temporary file beside it, fsynced and renamed at
the end: a failed or interrupted run leaves no output. The scoring run is recorded in
lineage (input → run ← model version; run → output file) with an audit entry.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from loopline.core.errors import InvalidArgumentError, UserCodeError
from loopline.core.ids import new_id
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeRef
from loopline.core.models import ModelVersion, model_version_node
from loopline.core.ports import BlobStore
from loopline.data.lineage_records import source_ref
from loopline.registry.batch_chunks import (
    PREDICTION,
    PROBA_PREFIX,
    Backend,
    ChunkOutput,
    ChunkSpec,
    Inline,
    Pending,
    Threads,
)
from loopline.registry.batch_input import ScoreInput, named_input, open_input, rechunk
from loopline.registry.batch_output import AtomicOutput, output_format
from loopline.registry.flavors import LoadedModel, TrustContext
from loopline.registry.signatures import Signature
from loopline.store import MetadataStore
from loopline.store.lineage import record

CHUNK_ROWS = 65_536
MAX_CHUNK_ROWS = 10_000_000
EXECUTORS = ("inline", "thread", "ray")
Progress = Callable[[int, int | None], None]  # (rows written, total rows when known)


@dataclass(frozen=True, slots=True)
class ScoreOptions:
    """How to score: executor, chunk size, columns passed through and fed, outputs, target.

    ``columns`` are the model's input columns (default: the signature's, else every input
    column not in ``keep``). ``ray_address`` names a cluster to join when Ray is not running
    in this process (None: start a local one). ``progress`` hears of every chunk written.

    Raises:
        InvalidArgumentError: naming the option that is invalid.
    """

    executor: str = "inline"
    chunk_rows: int = CHUNK_ROWS
    keep: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None
    proba: bool = False
    overwrite: bool = False
    workers: int = 4
    ray_address: str | None = None
    progress: Progress | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise InvalidArgumentError("executor", f"{self.executor!r} is not one of "
                                                   f"{', '.join(EXECUTORS)}")
        for name, value, top in (("chunk_rows", self.chunk_rows, MAX_CHUNK_ROWS),
                                 ("workers", self.workers, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise InvalidArgumentError(name, f"{value!r} must be an integer 1..{top}")
        for option, names in (("keep", self.keep), ("columns", self.columns or ())):
            if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
                raise InvalidArgumentError(option, "must be a tuple of column names")
            if len(set(names)) != len(names):
                raise InvalidArgumentError(option, "names a column twice")
        if self.columns == ():
            raise InvalidArgumentError("columns", "name at least one column, or leave it out")


@dataclass(frozen=True, slots=True)
class ScoreReport:
    """What a scoring run did: rows and chunks written, seconds taken, where, with what."""

    rows: int
    chunks: int
    seconds: float
    output: str
    model_uri: str
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScoreJob:
    """The model version to score with, and where it and its lineage live."""

    store: MetadataStore
    blobs: BlobStore
    actor: str
    version: ModelVersion
    model: LoadedModel
    trust: TrustContext


# -- the plan --------------------------------------------------------------------------------

def plan(job: ScoreJob, names: tuple[str, ...], options: ScoreOptions) -> ChunkSpec:
    """Return what each chunk is scored with, after checking the options against the input.

    Raises:
        InvalidArgumentError: naming ``keep``, ``columns`` or ``proba`` when a column is not
            in the input, an output name is taken, or the model gives no probabilities.
    """
    signature = None if job.version.signature is None else Signature.from_dict(
        job.version.signature)
    present = set(names)
    for option, wanted in (("keep", options.keep), ("columns", options.columns or ())):
        if missing := [n for n in wanted if n not in present]:
            raise InvalidArgumentError(option, f"the input has no column {missing}; it has "
                                               f"{list(names)}")
    features = options.columns or (signature.names if signature is not None else tuple(
        n for n in names if n not in options.keep))
    labels = None
    if options.proba:
        if not job.model.has_proba:
            raise InvalidArgumentError("proba", f"{job.version.uri} gives no probabilities")
        classes = job.model.classes or (signature.output.classes if signature else None)
        labels = None if classes is None else tuple(f"{PROBA_PREFIX}{c}" for c in classes)
        if labels is None:
            raise InvalidArgumentError("proba", f"{job.version.uri} does not name its classes")
    outputs = {PREDICTION, *(labels or ())}
    if taken := sorted(outputs & set(options.keep)):
        raise InvalidArgumentError("keep", f"{taken} would clash with the output columns")
    return ChunkSpec(tuple(features), signature, options.proba, labels)


@dataclass(slots=True)
class _Tally:
    """Rows and chunks written so far, and the signature warnings counted on the way."""

    total: int | None
    rows: int = 0
    chunks: int = 0
    # (column, kind) → [rows, first row of the first chunk that had it]
    warnings: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, output: ChunkOutput, start: int) -> None:
        for column, kind, rows in output.warnings:
            self.warnings.setdefault((column, kind), [0, start])[0] += rows

    def messages(self, signature: Signature | None) -> tuple[str, ...]:
        found = [] if signature is not None else [
            "the version has no signature: inputs were not checked"]
        for (column, kind), (rows, first) in sorted(self.warnings.items()):
            seen = "categories" if kind == "category" else "range"
            found.append(f"column {column!r}: {rows} values outside the {seen} seen in "
                         f"training (first in the chunk starting at row {first})")
        return tuple(found)


def _backend(job: ScoreJob, spec: ChunkSpec, options: ScoreOptions) -> Backend:
    if options.executor == "thread":
        return Threads(job.model, spec, options.workers)
    if options.executor == "ray":
        from loopline.registry.batch_ray import RayScorer  # ray is an optional extra

        return RayScorer(job.version, job.blobs, job.trust, spec, options.ray_address)
    return Inline(job.model, spec)


def score(job: ScoreJob, source: Any, output: str | Path, options: ScoreOptions
          ) -> ScoreReport:
    """Score ``source`` with ``job``'s version into ``output`` (``.parquet`` or ``.csv``).

    Raises:
        InvalidArgumentError: naming ``input``, ``output``, an option, or (field ``input``)
            the column and the first row of the chunk that fails the signature; no output
            is left behind.
        NotFoundError: when a snapshot input does not exist.
        UserCodeError: when the model raises while scoring a chunk.
        ConfigurationError: when ``executor="ray"`` and ray is not installed.
    """
    began = time.perf_counter()
    target, fmt = output_format(output, options.overwrite)
    opened = open_input(job.store, job.blobs, source, options.chunk_rows)
    if opened.lineage_node == ("source", str(target)):
        raise InvalidArgumentError("output", "is the input file; write somewhere else")
    spec = plan(job, opened.names, options)
    tally = _Tally(opened.total)
    backend = _backend(job, spec, options)
    sink = AtomicOutput(target, fmt, options.overwrite)
    try:
        _run(opened, spec, options, backend, sink, tally)
        if tally.rows == 0:
            raise InvalidArgumentError("input", f"{opened.described} has no rows to score")
        digest = sink.commit()
    finally:
        sink.discard()
        backend.close()
    report = ScoreReport(tally.rows, tally.chunks, time.perf_counter() - began, str(target),
                         job.version.uri, tally.messages(spec.signature))
    _record_lineage(job, opened, report, digest)
    return report


def _run(opened: ScoreInput, spec: ChunkSpec, options: ScoreOptions, backend: Backend,
         sink: AtomicOutput, tally: _Tally) -> None:
    present = set(opened.names)
    inflight: deque[tuple[pa.Table, int, Pending]] = deque()
    start = 0
    for chunk in rechunk(named_input(opened.batches), options.chunk_rows):
        features = chunk.select([n for n in spec.features if n in present])
        inflight.append((chunk.select(list(options.keep)), start, backend.submit(features)))
        start += chunk.num_rows
        del chunk  # only the columns in use stay referenced while the chunk is in flight
        while len(inflight) >= backend.window:
            _finish(*inflight.popleft(), sink, tally, options)
    while inflight:
        _finish(*inflight.popleft(), sink, tally, options)


def _finish(kept: pa.Table, start: int, pending: Pending, sink: AtomicOutput, tally: _Tally,
            options: ScoreOptions) -> None:
    output = pending()
    tally.add(output, start)
    where = f"the chunk starting at row {start} ({kept.num_rows} rows)"
    if output.errors:
        raise InvalidArgumentError("input", f"{where}: {'; '.join(output.errors)}")
    if output.failure is not None or output.outputs is None:
        if output.refused:
            raise InvalidArgumentError("input", f"{where}: {output.failure}")
        raise UserCodeError(f"the model raised while scoring {where}: {output.failure}")
    try:
        columns = {**{n: kept.column(n) for n in kept.column_names},
                   **{n: pa.array(v) for n, v in output.outputs.items()}}
        sink.write(pa.table(columns))
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InvalidArgumentError("output", f"cannot write {where}: {exc}") from exc
    tally.rows += kept.num_rows
    tally.chunks += 1
    if options.progress is not None:
        options.progress(tally.rows, tally.total)


# -- lineage ---------------------------------------------------------------------------------

def _record_lineage(job: ScoreJob, opened: ScoreInput, report: ScoreReport,
                    digest: str) -> None:
    """Record input → scoring run ← model version, run → output file, and an audit entry."""
    run = NodeRef("custom.batch_score", new_id())
    produced = NodeRef("source", source_ref(report.output))
    model = model_version_node(job.version.name, job.version.version)
    details = {"input": opened.described, "output": report.output, "rows": report.rows,
               "chunks": report.chunks, "output_sha256": digest, "model": job.version.uri}
    nodes = [LineageNode(run, f"batch score {job.version.uri}", details),
             LineageNode(produced, report.output, {"sha256": digest, "uri": report.output})]
    edges = [LineageEdge(model, run, EdgeKind.USED), LineageEdge(run, produced,
                                                                  EdgeKind.PRODUCED)]
    if opened.lineage_node is not None:
        kind, ref = opened.lineage_node
        read = NodeRef(kind, source_ref(ref) if kind == "source" else ref)
        edges.append(LineageEdge(read, run, EdgeKind.CONSUMED))
    with job.store.write(job.actor) as uow:
        record(uow.session, nodes, edges, uow.now())
        uow.audit("model.batch_scored", job.version.uri, None, {**details, "run": run.id})

