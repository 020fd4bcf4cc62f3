"""Lineage writes and walks for every layer, and their export as OpenLineage run events.

Other services record their nodes and edges with ``record_in`` inside their own unit of
work, so a snapshot, a run or a deployment and its lineage commit together. The export
(``to_openlineage``) only builds the event dicts; sending them is left to the caller. The
OpenLineage basics here (``openlineage_run_id``, ``openlineage_event``) are the one mapping
of runs, jobs and datasets that every export shares, this generic one and the richer run
export in ``loopline.governance.openlineage``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from loopline._version import __version__
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.governance import Permission
from loopline.core.lineage import (
    Direction,
    LineageCount,
    LineageEdge,
    LineageGraphView,
    LineageNode,
    NodeKind,
    NodeRef,
    merge_views,
)
from loopline.core.ports import Authorizer, authorize_if_wired
from loopline.store import MetadataStore, UnitOfWork
from loopline.store.lineage import LineageQueries
from loopline.store.lineage import record as record_rows

DEFAULT_DEPTH = 50
DEFAULT_LIMIT = 10_000
# The core spec version the events follow; tests validate against this version's schema
# (tests/fixtures/openlineage).
OPENLINEAGE_SPEC = "https://openlineage.io/spec/1-0-2/OpenLineage.json"
OPENLINEAGE_SCHEMA_URL = f"{OPENLINEAGE_SPEC}#/$defs/RunEvent"
OPENLINEAGE_EVENT_TYPES = frozenset({"START", "COMPLETE", "ABORT", "FAIL", "OTHER"})
PRODUCER = f"https://github.com/loopline/loopline/tree/v{__version__}"
RUN_KINDS = frozenset({NodeKind.PIPELINE_RUN, NodeKind.TASK_RUN, NodeKind.VALIDATION,
                       NodeKind.EVALUATION, NodeKind.PLAYBOOK_RUN})
_RUN_NAMESPACE = uuid.UUID("6f1c1e9a-4d0b-5b8e-9a53-6c1f0c8d7e21")


def _as_ref(node: NodeRef | str, field: str = "node") -> NodeRef:
    return node if isinstance(node, NodeRef) else NodeRef.parse(node, field)


class LineageService:
    """Record lineage and walk it upstream (where from) or downstream (what it influenced).

    With an ``authorizer``, ``record`` needs ``write`` for the actor it is given; a bare
    service checks no roles. ``record_in`` checks nothing: it writes inside a unit of work
    of a service that already authorised its own actor.
    """

    def __init__(self, store: MetadataStore, authorizer: Authorizer | None = None) -> None:
        self._store = store
        self._authorizer = authorizer
        self.queries = LineageQueries(store.engine)

    def record(self, nodes: Iterable[LineageNode], edges: Iterable[LineageEdge], *,
               actor: str) -> LineageCount:
        """Record nodes and edges in their own transaction, audited as ``lineage.record``.

        Idempotent; see ``record_in``. Returns how many nodes and edges were given.

        Raises:
            AccessDeniedError: when ``actor`` lacks ``write``; nothing is recorded.
            InvalidArgumentError: when the audit actor is empty or too long.
        """
        authorize_if_wired(self._authorizer, actor, Permission.WRITE)
        node_list, edge_list = list(nodes), list(edges)
        with self._store.write(actor) as uow:
            self.record_in(uow, node_list, edge_list)
            uow.audit("lineage.record", "lineage", None,
                      {"nodes": len(node_list), "edges": len(edge_list)})
        return LineageCount(len(node_list), len(edge_list))

    def record_in(self, uow: UnitOfWork, nodes: Iterable[LineageNode],
                  edges: Iterable[LineageEdge]) -> None:
        """Record nodes and edges inside the caller's unit of work (no audit entry of its own).

        Recording the same nodes and edges again changes nothing; an existing node keeps its
        label and attributes (missing ones are filled in, none overwritten), and an edge
        endpoint not recorded before is created bare.
        """
        record_rows(uow.session, nodes, edges, self._store.clock.now())

    def node(self, node: NodeRef | str) -> LineageNode:
        """Return the stored node.

        Raises:
            InvalidArgumentError: when ``node`` is not ``<kind>:<ref>``.
            NotFoundError: when no such node is recorded.
        """
        ref = _as_ref(node)
        found = self.queries.node(ref.id)
        if found is None:
            raise NotFoundError("lineage node", ref.id)
        return found

    def neighbours(self, node: NodeRef | str, direction: Direction = Direction.BOTH,
                   ) -> list[LineageEdge]:
        """Return the edges into, out of, or (``BOTH``) touching ``node``.

        Raises:
            InvalidArgumentError: when ``node`` is not ``<kind>:<ref>``.
            NotFoundError: when no such node is recorded.
        """
        return self.queries.neighbours(_as_ref(node).id, Direction(direction))

    def upstream(self, node: NodeRef | str, depth: int = DEFAULT_DEPTH,
                 limit: int = DEFAULT_LIMIT) -> LineageGraphView:
        """Return ``node`` and what it was made from, up to ``depth`` hops back.

        Raises:
            InvalidArgumentError: for a malformed node, or depth/limit out of range.
            NotFoundError: when no such node is recorded.
        """
        return self.queries.upstream(_as_ref(node).id, depth, limit)

    def downstream(self, node: NodeRef | str, depth: int = DEFAULT_DEPTH,
                   limit: int = DEFAULT_LIMIT) -> LineageGraphView:
        """Return ``node`` and everything it influenced, up to ``depth`` hops on.

        Raises:
            InvalidArgumentError: for a malformed node, or depth/limit out of range.
            NotFoundError: when no such node is recorded.
        """
        return self.queries.downstream(_as_ref(node).id, depth, limit)

    def show(self, node: NodeRef | str, direction: Direction = Direction.BOTH,
             depth: int = DEFAULT_DEPTH, limit: int = DEFAULT_LIMIT) -> LineageGraphView:
        """Return the view of ``node`` one way or (``BOTH``) both ways.

        Raises:
            InvalidArgumentError: for a malformed node or direction, or depth/limit out of
                range.
            NotFoundError: when no such node is recorded.
        """
        ref, way = _as_ref(node), Direction(direction)
        if way is Direction.BOTH:
            return merge_views(self.queries.upstream(ref.id, depth, limit),
                               self.queries.downstream(ref.id, depth, limit))
        return self.queries.walk(ref.id, way, depth, limit)

    def count(self) -> LineageCount:
        """Return how many nodes and edges are recorded."""
        return self.queries.count()

    def to_openlineage(self, view: LineageGraphView, namespace: str = "loopline",
                       producer: str = PRODUCER) -> list[dict[str, Any]]:
        """Export ``view`` as OpenLineage ``RunEvent`` dicts; see ``openlineage_events``."""
        return openlineage_events(view, namespace, producer)


def openlineage_run_id(node_id: str) -> str:
    """Return a run node's OpenLineage ``runId``.

    That is the ref itself when it is a UUID (a pipeline run's UUIDv7 hex, as canonical
    text), else a stable UUID5 of the node id, so every export names a run the same way.
    """
    ref = node_id.partition(":")[2]
    try:
        return str(uuid.UUID(hex=ref))
    except ValueError:
        return str(uuid.uuid5(_RUN_NAMESPACE, node_id))


def openlineage_dataset(node_id: str, namespace: str,
                        facets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the OpenLineage dataset for a node: named by its ``<kind>:<ref>``."""
    dataset: dict[str, Any] = {"namespace": namespace, "name": node_id}
    if facets:
        dataset["facets"] = dict(facets)
    return dataset


def openlineage_event(event_type: str, event_time: datetime | None, run: Mapping[str, Any],
                      job: Mapping[str, Any], datasets: tuple[Sequence[Mapping[str, Any]],
                                                              Sequence[Mapping[str, Any]]],
                      producer: str = PRODUCER) -> dict[str, Any]:
    """Return one OpenLineage ``RunEvent``: ``datasets`` is (inputs, outputs).

    Raises:
        InvalidArgumentError: when ``event_type`` is not an OpenLineage event type.
    """
    if event_type not in OPENLINEAGE_EVENT_TYPES:
        raise InvalidArgumentError(
            "event_type", f"{event_type!r} is not one of {sorted(OPENLINEAGE_EVENT_TYPES)}")
    inputs, outputs = datasets
    return {
        "eventType": event_type,
        "eventTime": event_time.isoformat() if event_time is not None else None,
        "run": dict(run),
        "job": dict(job),
        "inputs": [dict(d) for d in inputs],
        "outputs": [dict(d) for d in outputs],
        "producer": producer,
        "schemaURL": OPENLINEAGE_SCHEMA_URL,
    }


def _event(job: LineageNode, inputs: Sequence[LineageNode], outputs: Sequence[LineageNode],
           context: tuple[str, str]) -> dict[str, Any]:
    namespace, producer = context
    state = str(job.attributes.get("state", "COMPLETE")).upper()
    return openlineage_event(
        state if state in OPENLINEAGE_EVENT_TYPES else "OTHER", job.created_at,
        {"runId": openlineage_run_id(job.id)},
        {"namespace": namespace, "name": str(job.attributes.get("job", job.id))},
        ([openlineage_dataset(n.id, namespace) for n in inputs],
         [openlineage_dataset(n.id, namespace) for n in outputs]), producer)


def openlineage_events(view: LineageGraphView, namespace: str = "loopline",
                       producer: str = PRODUCER) -> list[dict[str, Any]]:
    """Turn a view into OpenLineage ``RunEvent`` dicts, one per transformation it shows.

    Run-like nodes (pipeline and task runs, validations, evaluations, playbook runs) become
    runs whose inputs are the data-like nodes pointing at them and whose outputs are those
    they point at. A data-like node made directly from others (a snapshot from its source,
    a deployment from a model version) becomes a run of its own, named after that node,
    with those others as inputs. Every node that is not a run appears as a dataset named by
    its ``<kind>:<ref>`` in ``namespace``. ``eventTime`` is the node's creation time;
    ``eventType`` is its ``state`` attribute when that is an OpenLineage state, else
    ``COMPLETE``. Nothing is sent anywhere.
    """
    nodes = {n.id: n for n in view.nodes}
    into: dict[str, list[LineageNode]] = {}
    out_of: dict[str, list[LineageNode]] = {}
    for edge in view.edges:
        into.setdefault(edge.target.id, []).append(nodes[edge.source.id])
        out_of.setdefault(edge.source.id, []).append(nodes[edge.target.id])
    context = (namespace, producer)
    events = []
    for node in sorted(nodes.values(), key=lambda n: n.id):
        if node.ref.kind in RUN_KINDS:
            inputs = [n for n in into.get(node.id, []) if n.ref.kind not in RUN_KINDS]
            outputs = [n for n in out_of.get(node.id, []) if n.ref.kind not in RUN_KINDS]
            events.append(_event(node, _unique(inputs), _unique(outputs), context))
            continue
        sources = [n for n in into.get(node.id, []) if n.ref.kind not in RUN_KINDS]
        if sources:
            events.append(_event(node, _unique(sources), [node], context))
    return events


def _unique(nodes: Sequence[LineageNode]) -> list[LineageNode]:
    return sorted({n.id: n for n in nodes}.values(), key=lambda n: n.id)
