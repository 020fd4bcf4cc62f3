"""Records of the one lineage graph: typed node references, nodes, edges and query views.

Pure: no I/O. A node is named ``<kind>:<ref>`` (``dataset_snapshot:iris@3``,
``model_version:churn@7``); an edge ``source → target`` points from what was used to what it
produced or influenced, so *upstream* of a prediction segment is the model version, the run,
its code and environment and the data snapshots, and *downstream* of a snapshot is every
model and prediction it influenced. Kinds come from ``NodeKind`` and ``EdgeKind``; other
layers and plugins may add their own under the ``custom.`` prefix (``custom.report``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from loopline.core.canonical import canonical_json
from loopline.core.errors import InvalidArgumentError

CUSTOM_PREFIX = "custom."
MAX_KIND = 64
MAX_REF = 512
_CUSTOM_KIND = re.compile(r"^custom\.[a-z0-9][a-z0-9._-]{0,56}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NodeKind(StrEnum):
    """What a lineage node stands for."""

    SOURCE = "source"
    DATASET = "dataset"
    DATASET_SNAPSHOT = "dataset_snapshot"
    DATASET_PARTITION = "dataset_partition"
    VALIDATION = "validation"
    PIPELINE_RUN = "pipeline_run"
    TASK_RUN = "task_run"
    CODE_VERSION = "code_version"
    ENVIRONMENT = "environment"
    MODEL = "model"
    MODEL_VERSION = "model_version"
    DEPLOYMENT = "deployment"
    PREDICTION_SEGMENT = "prediction_segment"
    ALERT = "alert"
    PLAYBOOK_RUN = "playbook_run"
    FEATURE_VIEW = "feature_view"
    EVALUATION = "evaluation"
    ARTIFACT = "artifact"


class EdgeKind(StrEnum):
    """How the target of an edge relates to its source (``source → target``)."""

    DERIVED_FROM = "derived_from"  # snapshot ← source, snapshot ← parent snapshot
    PART_OF = "part_of"  # dataset ← partition or snapshot
    PRODUCED = "produced"  # run → snapshot, model version, evaluation
    CONSUMED = "consumed"  # snapshot → run that read it
    USED = "used"  # code version, environment → run
    TRAINED_ON = "trained_on"  # snapshot → model version
    REGISTERED_AS = "registered_as"  # model → model version
    DEPLOYED_AS = "deployed_as"  # model version → deployment
    SERVED_BY = "served_by"  # deployment → prediction segment
    VALIDATED_BY = "validated_by"  # snapshot → validation
    EVALUATED_ON = "evaluated_on"  # snapshot → evaluation, model version → evaluation
    TRIGGERED = "triggered"  # alert → playbook run, playbook run → pipeline run
    DETECTED = "detected"  # deployment or prediction segment → alert


class Direction(StrEnum):
    """Which way a query walks from its root."""

    UPSTREAM = "upstream"  # towards what the root was made from
    DOWNSTREAM = "downstream"  # towards what the root influenced
    BOTH = "both"


NODE_KINDS = frozenset(NodeKind)
EDGE_KINDS = frozenset(EdgeKind)


def validate_kind(value: str, known: frozenset[str], field: str) -> str:
    """Return ``value`` when it is a known kind or a ``custom.`` kind.

    Raises:
        InvalidArgumentError: naming ``field`` when the kind is neither.
    """
    if not isinstance(value, str) or not (value in known or _CUSTOM_KIND.fullmatch(value)):
        choices = ", ".join(sorted(known))
        raise InvalidArgumentError(
            field, f"{value!r} is not a known kind ({choices}) nor a custom kind "
                   f"'{CUSTOM_PREFIX}<name>' of lowercase letters, digits, '.', '_' or '-'")
    return value


def validate_ref(value: str, field: str) -> str:
    """Return ``value`` when it is a usable node reference (1-512 printable characters).

    Raises:
        InvalidArgumentError: naming ``field`` when it is empty, too long, padded with
            spaces or holds control characters.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_REF:
        raise InvalidArgumentError(field, f"must be 1-{MAX_REF} characters")
    if value != value.strip() or _CONTROL.search(value):
        raise InvalidArgumentError(
            field, f"{value!r} must not start or end with spaces nor hold control characters")
    return value


@dataclass(frozen=True, slots=True, order=True)
class NodeRef:
    """A lineage node's identity: its kind and a reference unique within that kind.

    Raises:
        InvalidArgumentError: naming ``node.kind`` or ``node.ref`` when either is invalid.
    """

    kind: str
    ref: str

    def __post_init__(self) -> None:
        validate_kind(self.kind, NODE_KINDS, "node.kind")
        validate_ref(self.ref, "node.ref")

    @property
    def id(self) -> str:
        """The stored identifier, ``<kind>:<ref>``."""
        return f"{self.kind}:{self.ref}"

    @classmethod
    def parse(cls, text: str, field: str = "node") -> NodeRef:
        """Parse ``<kind>:<ref>`` (the ref may itself contain ``:``).

        Raises:
            InvalidArgumentError: naming ``field`` when the text has no ``:`` or either part
                is invalid.
        """
        kind, sep, ref = text.partition(":") if isinstance(text, str) else ("", "", "")
        if not sep:
            raise InvalidArgumentError(field, f"{text!r} must look like '<kind>:<ref>', "
                                              "e.g. 'dataset_snapshot:iris@3'")
        try:
            return cls(kind, ref)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(field, f"{text!r}: {exc.problem}") from exc

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class LineageNode:
    """A node with what is shown about it; ``created_at`` is set by the store.

    Raises:
        InvalidArgumentError: naming ``node.label`` or ``node.attributes`` when the label is
            longer than 512 characters or the attributes are not a JSON-serialisable mapping.
    """

    ref: NodeRef
    label: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.label is not None and (not isinstance(self.label, str) or len(self.label) > 512):
            raise InvalidArgumentError("node.label", "must be a string of at most 512 characters")
        if not isinstance(self.attributes, Mapping):
            raise InvalidArgumentError("node.attributes", "must be a mapping")
        try:
            canonical_json(dict(self.attributes))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError("node.attributes",
                                       f"must be JSON-serialisable: {exc}") from exc

    @property
    def id(self) -> str:
        """The stored identifier, ``<kind>:<ref>``."""
        return self.ref.id


@dataclass(frozen=True, slots=True, order=True)
class LineageEdge:
    """A directed edge: ``source`` was used to make, or influenced, ``target``.

    Raises:
        InvalidArgumentError: naming ``edge.kind`` when the kind is unknown.
    """

    source: NodeRef
    target: NodeRef
    kind: str

    def __post_init__(self) -> None:
        validate_kind(self.kind, EDGE_KINDS, "edge.kind")


@dataclass(frozen=True, slots=True)
class LineageCount:
    """How many nodes and edges the graph holds."""

    nodes: int
    edges: int


@dataclass(frozen=True, slots=True)
class LineageGraphView:
    """The part of the graph reached from ``root``: nodes, the edges among them, and depths.

    ``depths`` maps each node id to its minimal number of hops from the root (0 for the
    root). ``truncated`` is true when the depth or node limit left reachable nodes out.
    """

    root: NodeRef
    direction: Direction
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    depths: Mapping[str, int]
    depth_reached: int
    truncated: bool

    def node(self, node_id: str) -> LineageNode | None:
        """Return the node with ``node_id`` in this view, or None."""
        return next((n for n in self.nodes if n.id == node_id), None)

    def ids(self) -> frozenset[str]:
        """Return the ids of every node in the view."""
        return frozenset(n.id for n in self.nodes)


def merge_views(upstream: LineageGraphView, downstream: LineageGraphView) -> LineageGraphView:
    """Combine an upstream and a downstream view of one root into a ``BOTH`` view.

    A node reached both ways (only possible through a cycle) keeps its smaller depth.
    """
    nodes = {n.id: n for n in upstream.nodes}
    nodes.update((n.id, n) for n in downstream.nodes)
    depths = dict(upstream.depths)
    for node_id, depth in downstream.depths.items():
        depths[node_id] = min(depth, depths.get(node_id, depth))
    edges = sorted(set(upstream.edges) | set(downstream.edges))
    ordered = sorted(nodes.values(), key=lambda n: (depths[n.id], n.id))
    return LineageGraphView(
        root=upstream.root, direction=Direction.BOTH, nodes=tuple(ordered), edges=tuple(edges),
        depths=depths, depth_reached=max(upstream.depth_reached, downstream.depth_reached),
        truncated=upstream.truncated or downstream.truncated)
