"""Loopline's pipeline runs, task runs and dataset snapshots as OpenLineage ``RunEvent``s.

Builds event dicts only (``openlineage_export`` sends them). A pipeline run is a job named
after its pipeline; each task run is a job ``<pipeline>.<task>`` whose ``parent`` facet names
the pipeline run. Every run gets a START event and, once it ended, one COMPLETE, FAIL or
ABORT (cancelled, or never started because an upstream task failed). A task's inputs are
the data-like nodes it read per the lineage graph (dataset snapshots, partitions, model
versions; not code or environment), its outputs what it produced (artifacts); a pipeline
run's own inputs and outputs are those linked to it directly (a model version registered
from the run). A dataset snapshot's creation is its own small job: its source and parent
snapshots in, the snapshot out. Run ids, job names and dataset names come from
``loopline.data.lineage`` (the one mapping every export shares).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.events import Event, EventType
from loopline.core.lineage import Direction, EdgeKind, LineageEdge, NodeKind, NodeRef
from loopline.core.runs import PipelineRun, RunState, TaskRun, TaskState
from loopline.data.lineage import (
    PRODUCER,
    RUN_KINDS,
    LineageService,
    openlineage_dataset,
    openlineage_event,
    openlineage_run_id,
)
from loopline.governance.openlineage_facets import DatasetFacets, error_facet, parent_facet
from loopline.store import MetadataStore
from loopline.store.run_queries import RunQueries

DEFAULT_NAMESPACE = "loopline"
PAGE = 500  # events read from the log at a time: what bounds openlineage_all_events' memory
RECENT_RUNS = 10_000  # run ids remembered to skip a run that ended twice (a failed resume)
NOT_DATA = RUN_KINDS | {NodeKind.CODE_VERSION, NodeKind.ENVIRONMENT}
RUN_TERMINAL = {RunState.SUCCEEDED: "COMPLETE", RunState.FAILED: "FAIL",
                RunState.CANCELLED: "ABORT"}
TASK_TERMINAL = {TaskState.SUCCEEDED: "COMPLETE", TaskState.CACHED: "COMPLETE",
                 TaskState.FAILED: "FAIL", TaskState.UPSTREAM_FAILED: "ABORT",
                 TaskState.CANCELLED: "ABORT"}


@dataclass(frozen=True, slots=True)
class _Export:
    """What one export reads from and how it names things."""

    namespace: str
    producer: str
    runs: RunQueries
    lineage: LineageService
    facets: DatasetFacets

    @classmethod
    def open(cls, store: MetadataStore, namespace: str, producer: str) -> _Export:
        return cls(_checked_namespace(namespace), producer, RunQueries(store.engine),
                   LineageService(store), DatasetFacets(store, producer))

    def job(self, name: str) -> dict[str, str]:
        return {"namespace": self.namespace, "name": name}

    def edges(self, node: NodeRef) -> list[LineageEdge]:
        try:
            return self.lineage.neighbours(node, Direction.BOTH)
        except NotFoundError:
            return []  # lineage is written when a run ends: a running one has none yet

    def datasets(self, node: NodeRef) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the (inputs, outputs) of the run ``node`` per its lineage edges."""
        inputs: dict[str, NodeRef] = {}
        outputs: dict[str, NodeRef] = {}
        for edge in self.edges(node):
            if edge.target == node and edge.source.kind not in NOT_DATA:
                inputs[edge.source.id] = edge.source
            elif (edge.source == node and edge.kind == EdgeKind.PRODUCED
                  and edge.target.kind not in NOT_DATA):
                outputs[edge.target.id] = edge.target
        return ([self.dataset(ref) for _, ref in sorted(inputs.items())],
                [self.dataset(ref) for _, ref in sorted(outputs.items())])

    def dataset(self, ref: NodeRef) -> dict[str, Any]:
        return openlineage_dataset(ref.id, self.namespace, self.facets.of(ref))


def _checked_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not namespace.strip() or len(namespace) > 256:
        raise InvalidArgumentError("namespace", "must be 1-256 characters")
    if not namespace.isprintable() or namespace != namespace.strip():
        raise InvalidArgumentError(
            "namespace", f"{namespace!r} must be printable, without padding spaces")
    return namespace


def _store_run_id(run_id: str) -> str:
    """Return the store's id of a run given as its hex id or as canonical UUID text."""
    try:
        return uuid.UUID(run_id.strip()).hex
    except (ValueError, AttributeError):
        return run_id  # not a UUID at all: the lookup says it is not found


@dataclass(frozen=True, slots=True)
class _Subject:
    """One run as OpenLineage sees it: its node, job, times, end state and run facets."""

    node: NodeRef
    job: Mapping[str, str]
    start: datetime
    end: datetime
    terminal: str | None  # COMPLETE, FAIL or ABORT; None while it runs
    error: str | None = None
    facets: Mapping[str, Any] | None = None  # carried by both events


def _run_pair(export: _Export, subject: _Subject, datasets: tuple[list[Any], list[Any]],
              ) -> list[dict[str, Any]]:
    """Return START and (when ended) the terminal event of one run."""
    run: dict[str, Any] = {"runId": openlineage_run_id(subject.node.id)}
    if subject.facets:
        run["facets"] = dict(subject.facets)
    inputs, outputs = datasets
    events = [openlineage_event("START", subject.start, run, subject.job, (inputs, []),
                                export.producer)]
    if subject.terminal is not None:
        facets = dict(subject.facets or {})
        if subject.terminal == "FAIL":
            facets["errorMessage"] = error_facet(subject.error or "failed", export.producer)
        ended = {**run, "facets": facets} if facets else run
        events.append(openlineage_event(subject.terminal, subject.end, ended, subject.job,
                                        (inputs, outputs), export.producer))
    return events


def _task_events(export: _Export, run: PipelineRun, task: TaskRun,
                 parent: Mapping[str, Any]) -> list[dict[str, Any]]:
    node = NodeRef(NodeKind.TASK_RUN, f"{run.id}/{task.task_key}")  # pipelines.run_lineage
    terminal = TASK_TERMINAL.get(task.state)
    # A task that never started (its upstream failed, or the run was cancelled first) gets
    # START and ABORT at the moment it was given up, so every task run has both events.
    fallback = task.finished_at or run.finished_at or run.created_at
    subject = _Subject(node, export.job(f"{run.pipeline}.{task.task_key}"),
                       task.started_at or fallback, task.finished_at or fallback, terminal,
                       task.error, {"parent": parent})
    return _run_pair(export, subject, export.datasets(node))


def _events_of_run(export: _Export, run: PipelineRun) -> list[dict[str, Any]]:
    node = NodeRef(NodeKind.PIPELINE_RUN, run.id)
    job = export.job(run.pipeline)
    subject = _Subject(node, job, run.started_at or run.created_at,
                       run.finished_at or run.created_at, RUN_TERMINAL.get(run.state),
                       run.error)
    pipeline_events = _run_pair(export, subject, export.datasets(node))
    parent = parent_facet(openlineage_run_id(node.id), job, export.producer)
    ranked = [(0, pipeline_events[0])]
    for task in export.runs.tasks(run.id):
        start, *end = _task_events(export, run, task, parent)
        ranked.append((1, start))
        ranked.extend((2, event) for event in end)
    ranked.extend((3, event) for event in pipeline_events[1:])
    # The rank keeps the pipeline's START first and its end last, and each task's START
    # before its end, when a clock gives equal times.
    ranked.sort(key=lambda item: (datetime.fromisoformat(item[1]["eventTime"]), item[0]))
    return [event for _, event in ranked]


def openlineage_run_events(store: MetadataStore, run_id: str,
                           namespace: str = DEFAULT_NAMESPACE,
                           producer: str = PRODUCER) -> list[dict[str, Any]]:
    """Return the OpenLineage events of one pipeline run and its task runs, in time order.

    ``run_id`` is the run's id as loopline shows it (32 hex digits) or as canonical UUID
    text. A run still going has START events and the ends of tasks already finished.

    Raises:
        InvalidArgumentError: when ``namespace`` is empty, too long or not printable.
        NotFoundError: when there is no such run.
    """
    export = _Export.open(store, namespace, producer)
    return _events_of_run(export, export.runs.run(_store_run_id(run_id)))


def _snapshot_events(export: _Export, ref: str, created_at: datetime) -> list[dict[str, Any]]:
    node = NodeRef(NodeKind.DATASET_SNAPSHOT, ref)
    sources = sorted({edge.source.id: edge.source for edge in export.edges(node)
                      if edge.target == node and edge.kind == EdgeKind.DERIVED_FROM}.items())
    name = ref.rpartition("@")[0] or ref
    subject = _Subject(node, export.job(f"snapshot.{name}"), created_at, created_at,
                       "COMPLETE")
    return _run_pair(export, subject, ([export.dataset(s) for _, s in sources],
                                       [export.dataset(node)]))


def openlineage_snapshot_events(store: MetadataStore, ref: str,
                                namespace: str = DEFAULT_NAMESPACE,
                                producer: str = PRODUCER) -> list[dict[str, Any]]:
    """Return START and COMPLETE of the job that made snapshot ``ref`` (``name@N``).

    Its inputs are the source file and parent snapshots it was derived from.

    Raises:
        InvalidArgumentError: for a bad ``namespace``.
        NotFoundError: when no snapshot ``ref`` is recorded.
    """
    export = _Export.open(store, namespace, producer)
    node = export.lineage.node(NodeRef(NodeKind.DATASET_SNAPSHOT, ref))
    return _snapshot_events(export, ref, node.created_at or store.clock.now())


def _ended_run(export: _Export, event: Event, recent: OrderedDict[str, None],
               ) -> PipelineRun | None:
    """Return the run ``event`` reports ended, if this is its last end (else None)."""
    state = str(event.payload.get("state", ""))
    run_id = str(event.payload.get("run_id", ""))
    if state not in {str(s) for s in RUN_TERMINAL} or run_id in recent:
        return None
    try:
        run = export.runs.run(run_id)
    except NotFoundError:
        return None  # deleted since (retention): nothing left to describe
    if str(run.state) != state:
        return None  # resumed after this end: exported at its later end
    recent[run_id] = None
    if len(recent) > RECENT_RUNS:
        recent.popitem(last=False)
    return run


def _page_events(export: _Export, page: Sequence[Event], since: datetime | None,
                 recent: OrderedDict[str, None]) -> Iterator[dict[str, Any]]:
    for event in page:
        if since is not None and event.occurred_at < since:
            continue
        if event.type == EventType.DATASET_SNAPSHOT_CREATED:
            yield from _snapshot_events(export, event.subject, event.occurred_at)
            continue
        run = _ended_run(export, event, recent)
        if run is not None:
            yield from _events_of_run(export, run)


def openlineage_all_events(store: MetadataStore, since: datetime | None = None,
                           namespace: str = DEFAULT_NAMESPACE,
                           producer: str = PRODUCER) -> Iterator[dict[str, Any]]:
    """Yield the events of every ended pipeline run and every snapshot created, oldest first.

    Walks the event log a page at a time (memory stays bounded however long the history):
    a snapshot's events come at its creation, a run's (and its tasks') at its end, each
    run's events in time order. With ``since``, only snapshots created and runs ended at or
    after it. Runs still going are left for a later export, once they end.

    Raises:
        InvalidArgumentError: for a bad ``namespace`` or a naive ``since``.
    """
    if since is not None and since.utcoffset() is None:
        raise InvalidArgumentError("since", "must carry a timezone (e.g. 2026-01-01T00:00Z)")
    # Checked here, not in the generator, so bad arguments fail at the call.
    return _all_events(store, since, _Export.open(store, namespace, producer))


def _all_events(store: MetadataStore, since: datetime | None,
                export: _Export) -> Iterator[dict[str, Any]]:
    types = [EventType.PIPELINE_RUN_CHANGED, EventType.DATASET_SNAPSHOT_CREATED]
    recent: OrderedDict[str, None] = OrderedDict()
    position = 0
    while page := store.events.read_after(position, PAGE, types):
        yield from _page_events(export, page, since, recent)
        position = page[-1].seq
