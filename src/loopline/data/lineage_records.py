"""The lineage a data-layer change writes: which nodes and edges a snapshot adds to the graph."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from loopline.core.datasets import DatasetVersion
from loopline.core.lineage import MAX_REF as MAX_NODE_REF
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeKind, NodeRef
from loopline.core.redaction import redact_text


def snapshot_node(version: DatasetVersion) -> NodeRef:
    """Return the lineage node of a dataset version: ``dataset_snapshot:<name>@<version>``."""
    return NodeRef(NodeKind.DATASET_SNAPSHOT, version.ref)


def source_ref(uri: str) -> str:
    """Return a node ref for a source URI: printable, unpadded, at most 512 characters.

    A longer URI keeps its start and ends in a hash of the whole, so distinct sources stay
    distinct nodes.
    """
    clean = "".join(c if c.isprintable() else "?" for c in redact_text(uri)).strip() or "?"
    if len(clean) <= MAX_NODE_REF:
        return clean
    digest = hashlib.sha256(clean.encode()).hexdigest()[:16]
    return f"{clean[:MAX_NODE_REF - 18].rstrip()}…{digest}"


def snapshot_lineage(version: DatasetVersion, parents: Sequence[DatasetVersion],
                     ) -> tuple[list[LineageNode], list[LineageEdge]]:
    """Nodes and edges for a new snapshot: its source file(s) and parent versions → it."""
    node = snapshot_node(version)
    nodes = [LineageNode(node, version.ref, {"id": version.id, "rows": version.rows,
                                             "content_hash": version.content_hash})]
    edges: list[LineageEdge] = []
    if version.source_uri:
        ref = source_ref(version.source_uri)
        source = NodeRef(NodeKind.SOURCE, ref)
        nodes.append(LineageNode(source, ref, {"sha256": version.source_hash,
                                               "uri": version.source_uri}))
        edges.append(LineageEdge(source, node, EdgeKind.DERIVED_FROM))
    for parent in parents:
        parent_node = snapshot_node(parent)
        nodes.append(LineageNode(parent_node, parent.ref, {"id": parent.id}))
        edges.append(LineageEdge(parent_node, node, EdgeKind.DERIVED_FROM))
    return nodes, edges
