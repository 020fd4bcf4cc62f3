"""The lineage graph in SQL: idempotent bulk writes, and walks by one recursive CTE.

Writes go through ``record`` inside a caller's write transaction. A walk is one recursive
CTE over ``lineage_edges`` (by the primary key's ``source`` prefix downstream, by
``ix_lineage_edges_target`` upstream) that is the same SQL on SQLite and PostgreSQL. It is
cycle-safe because ``UNION`` drops repeated ``(node, depth)`` rows and the depth is bounded;
each node is reported at its minimal depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.lineage import (
    Direction,
    LineageCount,
    LineageEdge,
    LineageGraphView,
    LineageNode,
    NodeRef,
)
from loopline.store.models import LineageEdgeRow, LineageNodeRow

NODES = cast(sa.Table, LineageNodeRow.__table__)
EDGES = cast(sa.Table, LineageEdgeRow.__table__)
CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit
MAX_DEPTH = 100  # a UNION walk's work grows with depth on dense graphs; bounded here
MAX_LIMIT = 100_000
BULK_ANALYZE_ROWS = 5_000


# -- writes --------------------------------------------------------------------------------


def record(session: Session, nodes: Iterable[LineageNode], edges: Iterable[LineageEdge],
           at: datetime | None = None) -> None:
    """Add ``nodes`` and ``edges`` in the session's transaction; repeating it changes nothing.

    An existing node keeps its label and attributes: a label is only set where there was
    none, and attribute keys it lacks are added, never overwritten. An edge endpoint that is
    not among ``nodes`` and not yet stored is created bare (no label, no attributes), so a
    later ``record`` of that node fills it in. ``at`` (default: now) stamps new rows whose
    node has no ``created_at``.
    """
    now = at or datetime.now(UTC)
    given: dict[str, LineageNode] = {}
    for node in nodes:
        given[node.id] = _merged(given[node.id], node) if node.id in given else node
    unique_edges = {(e.source.id, e.target.id, e.kind): e for e in edges}
    for edge in unique_edges.values():
        for end in (edge.source, edge.target):
            given.setdefault(end.id, LineageNode(end))
    connection = session.connection()
    existing = _existing(connection, list(given))
    fresh = [_node_row(n, now) for node_id, n in given.items() if node_id not in existing]
    _insert_ignoring_duplicates(connection, NODES, fresh)
    _fill_in(connection, [(existing[i], given[i]) for i in existing])
    _insert_ignoring_duplicates(connection, EDGES, [
        {"source": s, "target": t, "kind": k, "created_at": now} for s, t, k in unique_edges])
    if connection.dialect.name == "postgresql" and len(fresh) >= BULK_ANALYZE_ROWS:
        # After a bulk load, fresh statistics keep PostgreSQL's foreign-key checks and walks on
        # index scans; plans made while the tables were small would scan them whole.
        connection.execute(sa.text("ANALYZE lineage_nodes, lineage_edges"))


def _merged(old: LineageNode, new: LineageNode) -> LineageNode:
    label = old.label if old.label is not None else new.label
    return LineageNode(old.ref, label, {**new.attributes, **old.attributes}, old.created_at)


def _node_row(node: LineageNode, now: datetime) -> dict[str, Any]:
    return {"id": node.id, "kind": node.ref.kind, "ref": node.ref.ref, "label": node.label,
            "attributes": dict(node.attributes), "created_at": node.created_at or now}


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _existing(connection: Connection, ids: Sequence[str]) -> dict[str, tuple[str | None, Any]]:
    found: dict[str, tuple[str | None, Any]] = {}
    postgres = connection.dialect.name == "postgresql"
    for chunk in _chunks(ids):
        # On PostgreSQL one array parameter (= ANY) keeps the primary-key index in use even
        # before the table was ever analysed; a 500-item IN list made it scan the table.
        condition = (NODES.c.id == sa.any_(sa.bindparam("ids", list(chunk),
                                                        type_=ARRAY(sa.String)))
                     if postgres else NODES.c.id.in_(chunk))
        query = sa.select(NODES.c.id, NODES.c.label, NODES.c.attributes).where(condition)
        found.update((row.id, (row.label, row.attributes)) for row in connection.execute(query))
    return found


def _fill_in(connection: Connection,
             pairs: Sequence[tuple[tuple[str | None, Any], LineageNode]]) -> None:
    """Set missing labels and add missing attribute keys to nodes that already exist."""
    for (label, attributes), node in pairs:
        stored = dict(attributes or {})
        merged = {**node.attributes, **stored}
        new_label = label if label is not None else node.label
        if merged != stored or new_label != label:
            connection.execute(sa.update(NODES).where(NODES.c.id == node.id)
                               .values(label=new_label, attributes=merged))


def _insert_ignoring_duplicates(connection: Connection, table: sa.Table,
                                rows: list[dict[str, Any]]) -> None:
    """Bulk-insert ``rows``, skipping any whose primary key exists (a concurrent writer's)."""
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(postgresql.insert(table).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        connection.execute(sqlite.insert(table).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - loopline runs on SQLite and PostgreSQL only
        raise InvalidArgumentError("db_url", f"lineage does not support {dialect!r}")


# -- reads ---------------------------------------------------------------------------------


def _walk(direction: Direction) -> sa.CTE:
    """Build the recursive CTE ``walk(id, depth)``: every node within ``:max_depth`` hops.

    ``UNION`` (not ``UNION ALL``) drops repeated ``(id, depth)`` rows, so even a cycle adds
    at most one row per node and depth, and the depth bound ends the recursion.
    """
    start = sa.select(sa.cast(sa.bindparam("root"), NODES.c.id.type).label("id"),
                      sa.cast(sa.literal(0), sa.Integer).label("depth"))
    walk = start.cte("walk", recursive=True)
    near, far = ((EDGES.c.target, EDGES.c.source) if direction is Direction.UPSTREAM
                 else (EDGES.c.source, EDGES.c.target))
    step = (sa.select(far.label("id"), sa.cast(walk.c.depth + 1, sa.Integer).label("depth"))
            .select_from(EDGES.join(walk, near == walk.c.id))
            .where(walk.c.depth < sa.bindparam("max_depth", type_=sa.Integer)))
    return walk.union(step)


@cache
def _statements(direction: Direction) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Build (once per direction) the nodes and edges queries of a walk.

    Both take ``:root``, ``:max_depth`` and ``:limit``; the nodes come nearest first, each
    at its minimal depth, and the edges are those whose two ends were both reached.
    """
    walk = _walk(direction)
    depth = sa.func.min(walk.c.depth)
    reached = (sa.select(walk.c.id, depth.label("depth")).group_by(walk.c.id)
               .order_by(depth, walk.c.id).limit(sa.bindparam("limit", type_=sa.Integer))
               .cte("reached"))
    nodes = (sa.select(NODES, reached.c.depth)
             .select_from(reached.join(NODES, NODES.c.id == reached.c.id))
             .order_by(reached.c.depth, reached.c.id))
    near, far = reached.alias("near"), reached.alias("far")
    edges = (sa.select(EDGES.c.source, EDGES.c.target, EDGES.c.kind)
             .select_from(EDGES.join(near, EDGES.c.source == near.c.id)
                          .join(far, EDGES.c.target == far.c.id)))
    return nodes, edges


def _to_node(row: sa.Row[Any]) -> LineageNode:
    return LineageNode(NodeRef(row.kind, row.ref), row.label, row.attributes or {},
                       row.created_at)


def _check_bounds(max_depth: int, limit: int) -> None:
    if not 0 <= max_depth <= MAX_DEPTH:
        raise InvalidArgumentError("depth", f"must be between 0 and {MAX_DEPTH}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError("limit", f"must be between 1 and {MAX_LIMIT}")


class LineageQueries:
    """Reads of the lineage graph: nodes, neighbours, and upstream/downstream walks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        if engine.dialect.name == "postgresql":
            # Both statements of a walk see one snapshot, so nodes and edges agree.
            self._engine = engine.execution_options(isolation_level="REPEATABLE READ")

    def node(self, node_id: str) -> LineageNode | None:
        """Return the node stored as ``node_id``, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(NODES).where(NODES.c.id == node_id)).first()
        return _to_node(row) if row is not None else None

    def count(self) -> LineageCount:
        """Return how many nodes and edges are stored."""
        with self._engine.connect() as connection:
            nodes = connection.execute(sa.select(sa.func.count()).select_from(NODES)).scalar()
            edges = connection.execute(sa.select(sa.func.count()).select_from(EDGES)).scalar()
        return LineageCount(int(nodes or 0), int(edges or 0))

    def neighbours(self, node_id: str, direction: Direction = Direction.BOTH,
                   ) -> list[LineageEdge]:
        """Return the edges into (upstream), out of (downstream) or touching ``node_id``.

        Raises:
            NotFoundError: when no node is stored as ``node_id``.
        """
        source, target = NODES.alias("s"), NODES.alias("t")
        query = (sa.select(source.c.kind, source.c.ref, target.c.kind.label("t_kind"),
                           target.c.ref.label("t_ref"), EDGES.c.kind.label("e_kind"))
                 .select_from(EDGES.join(source, EDGES.c.source == source.c.id)
                              .join(target, EDGES.c.target == target.c.id)))
        sides = {Direction.UPSTREAM: EDGES.c.target == node_id,
                 Direction.DOWNSTREAM: EDGES.c.source == node_id}
        wanted = ([sides[direction]] if direction in sides else list(sides.values()))
        with self._engine.connect() as connection:
            self._require(connection, node_id)
            rows = connection.execute(query.where(sa.or_(*wanted))).all()
        return sorted(LineageEdge(NodeRef(r.kind, r.ref), NodeRef(r.t_kind, r.t_ref), r.e_kind)
                      for r in rows)

    def upstream(self, node_id: str, max_depth: int = 50, limit: int = 10_000,
                 ) -> LineageGraphView:
        """Return ``node_id`` and every node it came from, within ``max_depth`` hops.

        Raises:
            NotFoundError: when no node is stored as ``node_id``.
            InvalidArgumentError: when ``max_depth`` or ``limit`` is out of range.
        """
        return self.walk(node_id, Direction.UPSTREAM, max_depth, limit)

    def downstream(self, node_id: str, max_depth: int = 50, limit: int = 10_000,
                   ) -> LineageGraphView:
        """Return ``node_id`` and every node it influenced, within ``max_depth`` hops.

        Raises:
            NotFoundError: when no node is stored as ``node_id``.
            InvalidArgumentError: when ``max_depth`` or ``limit`` is out of range.
        """
        return self.walk(node_id, Direction.DOWNSTREAM, max_depth, limit)

    def walk(self, node_id: str, direction: Direction, max_depth: int, limit: int,
             ) -> LineageGraphView:
        """Walk one way from ``node_id``; at most ``limit`` nodes, nearest first.

        The CTE walks one hop further than ``max_depth``: a node found only there proves
        the depth limit cut something off, and sets ``truncated``.

        Raises:
            NotFoundError: when no node is stored as ``node_id``.
            InvalidArgumentError: for ``Direction.BOTH`` or a depth or limit out of range.
        """
        _check_bounds(max_depth, limit)
        if direction is Direction.BOTH:
            raise InvalidArgumentError("direction", "walk one way at a time: upstream or "
                                                    "downstream")
        nodes_query, edges_query = _statements(direction)
        # One hop beyond max_depth, and one node beyond limit, to tell whether anything
        # was left out.
        bounds = {"root": node_id, "max_depth": max_depth + 1, "limit": limit + 1}
        with self._engine.connect() as connection:
            rows = connection.execute(nodes_query, bounds).all()
            if not rows or rows[0].id != node_id:
                raise NotFoundError("lineage node", node_id)
            edge_rows = [(r.source, r.target, r.kind)
                         for r in connection.execute(edges_query, bounds)]
        return _view(node_id, direction, rows, edge_rows, (max_depth, limit))

    def _require(self, connection: Connection, node_id: str) -> None:
        found = connection.execute(sa.select(NODES.c.id).where(NODES.c.id == node_id)).first()
        if found is None:
            raise NotFoundError("lineage node", node_id)


def _view(root_id: str, direction: Direction, rows: Sequence[sa.Row[Any]],
          edge_rows: Sequence[tuple[str, str, str]], bounds: tuple[int, int]) -> LineageGraphView:
    max_depth, limit = bounds
    kept = [row for row in rows if row.depth <= max_depth][:limit]
    nodes = {row.id: _to_node(row) for row in kept}
    depths = {row.id: int(row.depth) for row in kept}
    edges = sorted(LineageEdge(nodes[s].ref, nodes[t].ref, kind) for s, t, kind in edge_rows
                   if s in nodes and t in nodes)
    return LineageGraphView(
        root=nodes[root_id].ref, direction=direction, nodes=tuple(nodes.values()),
        edges=tuple(edges), depths=depths, depth_reached=max(depths.values()),
        truncated=len(kept) < len(rows))
