"""``/lineage``: read the lineage graph — a node, its edges, walks, counts, OpenLineage events.

Every route reads (``read``). A node is named in the ``node`` query parameter as
``<kind>:<ref>`` (``dataset_snapshot:iris@3``), because a ref may hold any printable
character, ``/`` included. Walks are bounded: ``depth`` by the store's maximum and ``limit``
by the service's default, so one answer stays a reasonable size.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from loopline.api.auth import Reader
from loopline.api.pagination import Page, Paging, paginate
from loopline.api.params import FilterText
from loopline.core.lineage import (
    MAX_KIND,
    MAX_REF,
    Direction,
    LineageCount,
    LineageEdge,
    LineageGraphView,
    LineageNode,
)
from loopline.data.lineage import DEFAULT_DEPTH, DEFAULT_LIMIT
from loopline.store.lineage import MAX_DEPTH

router = APIRouter(prefix="/lineage", tags=["lineage"])

NodeId = Annotated[FilterText, Query(min_length=3, max_length=MAX_KIND + 1 + MAX_REF,
                              description="The node as `<kind>:<ref>`, e.g. "
                                          "`dataset_snapshot:iris@3`.")]
Depth = Annotated[int, Query(ge=0, le=MAX_DEPTH, description="Hops to walk at most.")]
Limit = Annotated[int, Query(ge=1, le=DEFAULT_LIMIT, description="Nodes to return at most.")]
Namespace = Annotated[FilterText, Query(min_length=1, max_length=256,
                                 description="The OpenLineage namespace of jobs and datasets.")]


@router.get("/count", response_model=LineageCount)
def count(ws: Reader) -> LineageCount:
    """Return how many nodes and edges the graph holds."""
    return ws.lineage.count()


@router.get("/node", response_model=LineageNode)
def node(ws: Reader, node: NodeId) -> LineageNode:
    """Return one node: its label, attributes and when it was recorded."""
    return ws.lineage.node(node)


@router.get("/neighbours", response_model=Page[LineageEdge])
def neighbours(ws: Reader, paging: Paging, node: NodeId,
               direction: Direction = Direction.BOTH) -> Page[LineageEdge]:
    """List the edges into (upstream), out of (downstream) or touching (both) a node."""
    return paginate(ws.lineage.neighbours(node, direction), paging)


@router.get("/upstream", response_model=LineageGraphView)
def upstream(ws: Reader, node: NodeId, depth: Depth = DEFAULT_DEPTH,
             limit: Limit = DEFAULT_LIMIT) -> LineageGraphView:
    """Return a node and what it was made from, nearest first."""
    return ws.lineage.upstream(node, depth, limit)


@router.get("/downstream", response_model=LineageGraphView)
def downstream(ws: Reader, node: NodeId, depth: Depth = DEFAULT_DEPTH,
               limit: Limit = DEFAULT_LIMIT) -> LineageGraphView:
    """Return a node and everything it influenced, nearest first."""
    return ws.lineage.downstream(node, depth, limit)


@router.get("/graph", response_model=LineageGraphView)
def show(ws: Reader, node: NodeId, direction: Direction = Direction.BOTH,
         depth: Depth = DEFAULT_DEPTH, limit: Limit = DEFAULT_LIMIT) -> LineageGraphView:
    """Return the view of a node one way, or both ways (``LineageService.show``)."""
    return ws.lineage.show(node, direction, depth, limit)


@router.get("/openlineage", response_model=list[dict[str, Any]])
def openlineage(ws: Reader, node: NodeId, direction: Direction = Direction.BOTH,
                depth: Depth = DEFAULT_DEPTH, limit: Limit = DEFAULT_LIMIT,
                namespace: Namespace = "loopline") -> list[dict[str, Any]]:
    """Return the view of a node as OpenLineage ``RunEvent`` objects (nothing is sent)."""
    return ws.lineage.to_openlineage(ws.lineage.show(node, direction, depth, limit), namespace)
