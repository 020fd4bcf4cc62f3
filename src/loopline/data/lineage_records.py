"""The lineage a data-layer change writes: which nodes and edges a snapshot adds to the graph."""

from __future__ import annotations

from collections.abc import Sequence

from loopline.core.datasets import DatasetVersion
from loopline.core.lineage import MAX_REF as MAX_NODE_REF
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeKind, NodeRef


def snapshot_node(version: DatasetVersion) -> NodeRef:
    """Return the lineage node of a dataset version: ``dataset_snapshot:<name>@<version>``."""
    return NodeRef(NodeKind.DATASET_SNAPSHOT, version.ref)


def snapshot_lineage(version: DatasetVersion, parents: Sequence[DatasetVersion],
                     ) -> tuple[list[LineageNode], list[LineageEdge]]:
    """Nodes and edges for a new snapshot: its source file(s) and parent versions → it."""
    node = snapshot_node(version)
    nodes = [LineageNode(node, version.ref, {"id": version.id, "rows": version.rows,
                                             "content_hash": version.content_hash})]
    edges: list[LineageEdge] = []
    if version.source_uri:
        source = NodeRef(NodeKind.SOURCE, version.source_uri[:MAX_NODE_REF])
        nodes.append(LineageNode(source, version.source_uri[:MAX_NODE_REF],
                                 {"sha256": version.source_hash}))
        edges.append(LineageEdge(source, node, EdgeKind.DERIVED_FROM))
    for parent in parents:
        parent_node = snapshot_node(parent)
        nodes.append(LineageNode(parent_node, parent.ref, {"id": parent.id}))
        edges.append(LineageEdge(parent_node, node, EdgeKind.DERIVED_FROM))
    return nodes, edges
