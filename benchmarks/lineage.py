"""Benchmark lineage walks on a 100k-node graph against an in-memory BFS in the same run.

Prints one JSON document on stdout (progress goes to stderr). A seeded graph shaped like a
real loop (sources → snapshots → runs → model versions → deployments → prediction
segments, with code versions and environments feeding runs and snapshots derived from
parent snapshots) is recorded through ``LineageService`` on SQLite and, when a URL is
given, PostgreSQL (in a private schema ``lb_<hex>``, dropped afterwards). Upstream and
downstream walks (depth 50) from the same random nodes are timed through the service, and
beside them a breadth-first search over adjacency dicts loaded from the same rows, which
returns the same nodes, depths and edges. ``vs_bfs`` is loopline's time / the BFS's time.
``ANALYZE`` runs after the load (autovacuum would do it on PostgreSQL): without planner
statistics PostgreSQL hash-joins whole tables and a walk takes ~30 ms instead of ~4 ms.
Nothing here asserts a timing.

Run ``.venv/bin/python benchmarks/lineage.py --help``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    POSTGRES_ENV,
    add_common_arguments,
    check,
    elapsed,
    machine,
    postgres_schema,
    progress,
    public_settings,
    summary,
)
from loopline.core.errors import LooplineError
from loopline.core.lineage import Direction, LineageEdge, LineageGraphView, LineageNode, NodeRef
from loopline.data.lineage import LineageService
from loopline.store import MetadataStore
from loopline.store.lineage import MAX_LIMIT

DEPTH = 50
BATCH = 20_000  # nodes per recording transaction
# Share of the nodes per kind; prediction segments take the rest.
SHAPE = {"source": 0.005, "code_version": 0.005, "environment": 0.001,
         "dataset_snapshot": 0.1, "pipeline_run": 0.1, "model_version": 0.1, "deployment": 0.02}

Graph = tuple[list[LineageNode], list[LineageEdge]]
Adjacency = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Settings:
    """How big a graph and how many walks."""

    nodes: int
    queries: int
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool


# -- the graph -----------------------------------------------------------------------------


def build_graph(total: int, seed: int) -> Graph:
    """Return a seeded graph of ``total`` nodes shaped like the loop loopline automates."""
    rng = random.Random(seed)
    counts = {kind: max(1, int(total * share)) for kind, share in SHAPE.items()}
    counts["prediction_segment"] = total - sum(counts.values())
    refs = {kind: [NodeRef(kind, f"{kind[:4]}-{i}") for i in range(n)]
            for kind, n in counts.items()}
    edges: list[LineageEdge] = []

    def link(source: NodeRef, target: NodeRef, kind: str) -> None:
        edges.append(LineageEdge(source, target, kind))

    for i, snap in enumerate(refs["dataset_snapshot"]):
        link(rng.choice(refs["source"]), snap, "derived_from")
        if i and rng.random() < 0.3:  # a derived snapshot: filtered, joined, appended
            link(refs["dataset_snapshot"][rng.randrange(i)], snap, "derived_from")
    for run in refs["pipeline_run"]:
        for snap in rng.sample(refs["dataset_snapshot"], rng.randint(1, 3)):
            link(snap, run, "consumed")
        link(rng.choice(refs["code_version"]), run, "used")
        link(rng.choice(refs["environment"]), run, "used")
    for model, run in zip(refs["model_version"], rng.sample(refs["pipeline_run"],
                                                            counts["model_version"]),
                          strict=False):
        link(run, model, "produced")
    for deployment in refs["deployment"]:  # a champion, sometimes a canary or a shadow
        for model in rng.sample(refs["model_version"], rng.randint(1, 3)):
            link(model, deployment, "deployed_as")
    for segment in refs["prediction_segment"]:
        link(rng.choice(refs["deployment"]), segment, "served_by")
    nodes = [LineageNode(ref, attributes={"i": i})
             for kind_refs in refs.values() for i, ref in enumerate(kind_refs)]
    return nodes, edges


def record(service: LineageService, graph: Graph) -> float:
    """Record the graph in batches of ``BATCH`` nodes (each with their incoming edges)."""
    nodes, edges = graph
    into: dict[str, list[LineageEdge]] = {}
    for edge in edges:
        into.setdefault(edge.target.id, []).append(edge)
    start = time.perf_counter()
    for first in range(0, len(nodes), BATCH):
        batch = nodes[first:first + BATCH]
        service.record(batch, [e for n in batch for e in into.get(n.id, [])], actor="bench")
    return time.perf_counter() - start


# -- the baseline --------------------------------------------------------------------------


def adjacency(edges: list[LineageEdge]) -> tuple[Adjacency, Adjacency]:
    """Return (parents, children) adjacency dicts of node ids."""
    parents: Adjacency = {}
    children: Adjacency = {}
    for edge in edges:
        parents.setdefault(edge.target.id, []).append(edge.source.id)
        children.setdefault(edge.source.id, []).append(edge.target.id)
    return parents, children


def bfs(links: Adjacency, root: str, max_depth: int) -> tuple[dict[str, int], int]:
    """Return min depths within ``max_depth`` of ``root``, and the count of edges among them."""
    depths, queue = {root: 0}, deque([root])
    while queue:
        node = queue.popleft()
        if depths[node] == max_depth:
            continue
        for far in links.get(node, ()):
            if far not in depths:
                depths[far] = depths[node] + 1
                queue.append(far)
    among = sum(1 for node in depths for far in links.get(node, ()) if far in depths)
    return depths, among


# -- timing --------------------------------------------------------------------------------


def time_walks(service: LineageService, links: Adjacency, roots: list[NodeRef],
               direction: Direction) -> dict[str, Any]:
    """Time the service and the BFS from each root; check they found the same graph."""
    walk: Callable[[NodeRef, int, int], LineageGraphView] = (
        service.upstream if direction is Direction.UPSTREAM else service.downstream)
    ours: list[float] = []
    baseline: list[float] = []
    sizes: list[int] = []
    for root in roots:
        start = time.perf_counter()
        view = walk(root, DEPTH, MAX_LIMIT)  # no node limit: compare whole answers
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        depths, among = bfs(links, root.id, DEPTH)
        baseline.append(time.perf_counter() - start)
        check(dict(view.depths) == depths and len(view.edges) == among,
              f"{direction} walk from {root.id} differs from the BFS")
        sizes.append(len(depths))
    loopline_figures, bfs_figures = summary(ours), summary(baseline)
    return {"walks": len(roots), "nodes_reached": {"median": statistics.median(sizes),
                                                   "max": max(sizes)},
            "loopline": loopline_figures, "bfs_in_memory": bfs_figures,
            "vs_bfs": {"median": _ratio(loopline_figures["median_ms"],
                                        bfs_figures["median_ms"]),
                       "p95": _ratio(loopline_figures["p95_ms"], bfs_figures["p95_ms"])}}


def _ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 1) if baseline > 0 else 0.0


def bench_backend(url: str, graph: Graph, settings: Settings) -> dict[str, Any]:
    """Record the graph into a fresh database at ``url`` and time walks on it."""
    store = MetadataStore.open(url, check_schema=False)
    try:
        store.upgrade()
        service = LineageService(store)
        progress(f"{store.backend}: recording {len(graph[0])} nodes, {len(graph[1])} edges")
        build_s = record(service, graph)
        start = time.perf_counter()
        with store.engine.begin() as connection:  # fresh planner statistics, as autovacuum
            connection.exec_driver_sql("ANALYZE")  # would gather shortly after a bulk load
        analyze_s = time.perf_counter() - start
        count = service.count()
        check(count.nodes == len(graph[0]) and count.edges == len(graph[1]), "stored counts")
        start = time.perf_counter()
        parents, children = adjacency(graph[1])
        load_s = time.perf_counter() - start
        rng = random.Random(settings.seed + 1)
        nodes = [n.ref for n in graph[0]]
        by_kind = {kind: [r for r in nodes if r.kind == kind]
                   for kind in ("prediction_segment", "source")}
        figures: dict[str, Any] = {
            "build_s": round(build_s, 2),
            "build_nodes_per_s": round(len(graph[0]) / build_s),
            "analyze_s": round(analyze_s, 2),
            "baseline_adjacency_build_s": round(load_s, 3),
        }
        progress(f"{store.backend}: {settings.queries} walks each way from random nodes")
        sample = rng.sample(nodes, settings.queries)
        figures["upstream_random"] = time_walks(service, parents, sample, Direction.UPSTREAM)
        figures["downstream_random"] = time_walks(service, children, sample,
                                                  Direction.DOWNSTREAM)
        progress(f"{store.backend}: walks from predictions back and from sources forward")
        few = max(5, settings.queries // 4)
        figures["upstream_from_predictions"] = time_walks(
            service, parents, rng.sample(by_kind["prediction_segment"], few),
            Direction.UPSTREAM)
        figures["downstream_from_sources"] = time_walks(
            service, children, rng.sample(by_kind["source"], min(few, len(by_kind["source"]))),
            Direction.DOWNSTREAM)
        return figures
    finally:
        store.close()


def bench_postgres(graph: Graph, settings: Settings) -> dict[str, Any]:
    """Measure on PostgreSQL in a private schema, or say why it was not measured."""
    if not settings.postgres_url:
        return {"skipped": f"no PostgreSQL URL (pass --postgres-url or set {POSTGRES_ENV})"}
    try:
        import psycopg
    except ImportError:
        return {"skipped": "psycopg is not installed (pip install 'loopline[postgres]')"}
    try:
        with postgres_schema(settings.postgres_url) as (url, schema):
            return {"schema": schema, **bench_backend(url, graph, settings)}
    except (psycopg.Error, LooplineError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- command line --------------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` shrinks the graph and the number of walks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, help="nodes in the graph (100000; quick 3000)")
    parser.add_argument("--queries", type=int, help="random roots per direction (200; 20)")
    add_common_arguments(parser, "folder for the SQLite file (default: system temp)")
    parser.add_argument("--quick", action="store_true", help="a small graph, for a smoke test")
    args = parser.parse_args(argv)
    nodes = args.nodes or (3_000 if args.quick else 100_000)
    queries = args.queries or (20 if args.quick else 200)
    if nodes < 1_000 or not 1 <= queries <= nodes // 10:
        parser.error("--nodes must be at least 1000 and --queries 1..nodes/10")
    return Settings(nodes=nodes, queries=queries, seed=args.seed, tmpdir=args.tmpdir,
                    quick=args.quick,
                    postgres_url=None if args.no_postgres else args.postgres_url)


def main(argv: list[str] | None = None) -> int:
    """Build the graph, measure each backend, print the JSON report; exit 1 on an error."""
    settings = parse_settings(argv)
    progress(f"building a {settings.nodes}-node graph (seed {settings.seed})")
    graph = build_graph(settings.nodes, settings.seed)
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        sqlite = bench_backend(f"sqlite:///{Path(tmp) / 'lineage.db'}", graph, settings)
    postgres = bench_postgres(graph, settings)
    shown = public_settings(settings)
    report = {
        "benchmark": "loopline lineage walks",
        "machine": machine(),
        "settings": {**shown, "depth": DEPTH},
        "graph": {"nodes": len(graph[0]), "edges": len(graph[1]),
                  "kinds": {kind: sum(1 for n in graph[0] if n.ref.kind == kind)
                            for kind in [*SHAPE, "prediction_segment"]}},
        "note": "vs_bfs = loopline walk time / in-memory BFS time over the same graph "
                "(lower is better); loopline times include SQL, row mapping and the edges",
        "sqlite": sqlite, "postgresql": postgres,
        "elapsed_s": elapsed(),
    }
    print(json.dumps(report, indent=2))
    progress("done")
    return 1 if "error" in postgres else 0


if __name__ == "__main__":
    sys.exit(main())
