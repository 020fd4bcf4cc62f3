"""``client.lineage``: the workspace's ``LineageService`` over HTTP (reads only).

``record`` is left out: over the API a change is made by the token's user, never by an
``actor`` the caller names. ``to_openlineage`` turns a view into events here, with the same
function the server uses (``GET /lineage/openlineage`` serves them too).
"""

from __future__ import annotations

from typing import Any

from loopline.client.transport import Transport, decode
from loopline.core.lineage import (
    Direction,
    LineageCount,
    LineageEdge,
    LineageGraphView,
    LineageNode,
    NodeRef,
)
from loopline.data.lineage import DEFAULT_DEPTH, DEFAULT_LIMIT, PRODUCER, openlineage_events

__all__ = ["RemoteLineage"]


def _node_id(node: NodeRef | str) -> str:
    # Parsed here as the local service parses it, so a malformed node fails the same way.
    return (node if isinstance(node, NodeRef) else NodeRef.parse(node, "node")).id


class RemoteLineage:
    """Walk the lineage graph upstream and downstream, as ``Workspace.lineage`` does."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def node(self, node: NodeRef | str) -> LineageNode:
        """Return the stored node. See ``LineageService.node``."""
        return decode(LineageNode, self._http.get("/lineage/node", {"node": _node_id(node)}))

    def neighbours(self, node: NodeRef | str, direction: Direction = Direction.BOTH,
                   ) -> list[LineageEdge]:
        """Return the edges into, out of, or touching ``node``. See ``LineageService``."""
        return [decode(LineageEdge, item) for item in self._http.items(
            "/lineage/neighbours", {"node": _node_id(node), "direction": str(direction)})]

    def _view(self, path: str, node: NodeRef | str, params: dict[str, Any]) -> LineageGraphView:
        return decode(LineageGraphView,
                      self._http.get(path, {"node": _node_id(node), **params}))

    def upstream(self, node: NodeRef | str, depth: int = DEFAULT_DEPTH,
                 limit: int = DEFAULT_LIMIT) -> LineageGraphView:
        """Return ``node`` and what it was made from. See ``LineageService.upstream``."""
        return self._view("/lineage/upstream", node, {"depth": depth, "limit": limit})

    def downstream(self, node: NodeRef | str, depth: int = DEFAULT_DEPTH,
                   limit: int = DEFAULT_LIMIT) -> LineageGraphView:
        """Return ``node`` and everything it influenced. See ``LineageService.downstream``."""
        return self._view("/lineage/downstream", node, {"depth": depth, "limit": limit})

    def show(self, node: NodeRef | str, direction: Direction = Direction.BOTH,
             depth: int = DEFAULT_DEPTH, limit: int = DEFAULT_LIMIT) -> LineageGraphView:
        """Return the view of ``node`` one way or both. See ``LineageService.show``."""
        return self._view("/lineage/graph", node, {"direction": str(Direction(direction)),
                                                   "depth": depth, "limit": limit})

    def count(self) -> LineageCount:
        """Return how many nodes and edges are recorded."""
        return decode(LineageCount, self._http.get("/lineage/count"))

    def to_openlineage(self, view: LineageGraphView, namespace: str = "loopline",
                       producer: str = PRODUCER) -> list[dict[str, Any]]:
        """Export ``view`` as OpenLineage ``RunEvent`` dicts (computed here; nothing is sent)."""
        return openlineage_events(view, namespace, producer)
