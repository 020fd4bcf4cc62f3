"""The lineage graph contract, run on SQLite and PostgreSQL: writes, walks, limits, cycles."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopline.core.errors import AccessDeniedError, InvalidArgumentError, NotFoundError
from loopline.core.lineage import (
    Direction,
    EdgeKind,
    LineageEdge,
    LineageGraphView,
    LineageNode,
    NodeKind,
    NodeRef,
)
from loopline.data.lineage import LineageService, openlineage_events
from loopline.governance.access import AccessControl
from loopline.store import MetadataStore

SRC = NodeRef(NodeKind.SOURCE, "s3://bucket/raw.csv")
SNAP = NodeRef(NodeKind.DATASET_SNAPSHOT, "customers@1")
CODE = NodeRef(NodeKind.CODE_VERSION, "git:3f2a9c1")
ENV = NodeRef(NodeKind.ENVIRONMENT, "sha256:ab12")
RUN = NodeRef(NodeKind.PIPELINE_RUN, "0190f3a1b2c34d5e8f6a7b8c9d0e1f2a")
MODEL = NodeRef(NodeKind.MODEL_VERSION, "churn@7")
DEPLOY = NodeRef(NodeKind.DEPLOYMENT, "churn-prod")
SEG_A = NodeRef(NodeKind.PREDICTION_SEGMENT, "seg-a")
SEG_B = NodeRef(NodeKind.PREDICTION_SEGMENT, "seg-b")

# source → snapshot → run → model → deployment → two segments; code and env feed the run;
# the snapshot also feeds the model directly (a second, shorter path: a diamond).
DAG = [
    LineageEdge(SRC, SNAP, EdgeKind.DERIVED_FROM),
    LineageEdge(SNAP, RUN, EdgeKind.CONSUMED),
    LineageEdge(CODE, RUN, EdgeKind.USED),
    LineageEdge(ENV, RUN, EdgeKind.USED),
    LineageEdge(RUN, MODEL, EdgeKind.PRODUCED),
    LineageEdge(SNAP, MODEL, EdgeKind.TRAINED_ON),
    LineageEdge(MODEL, DEPLOY, EdgeKind.DEPLOYED_AS),
    LineageEdge(DEPLOY, SEG_A, EdgeKind.SERVED_BY),
    LineageEdge(DEPLOY, SEG_B, EdgeKind.SERVED_BY),
]


@pytest.fixture
def lineage(store: MetadataStore) -> LineageService:
    service = LineageService(store)
    service.record([LineageNode(SRC, "raw customers", {"rows": 10})], DAG, actor="tester")
    return service


def _depths(view: LineageGraphView) -> dict[str, int]:
    assert {n.id for n in view.nodes} == set(view.depths)
    return dict(view.depths)


def test_upstream_of_a_prediction_reaches_model_run_code_environment_and_data(
        lineage: LineageService) -> None:
    view = lineage.upstream(SEG_A)
    assert _depths(view) == {SEG_A.id: 0, DEPLOY.id: 1, MODEL.id: 2, RUN.id: 3, SNAP.id: 3,
                             CODE.id: 4, ENV.id: 4, SRC.id: 4}
    assert view.root == SEG_A and view.direction is Direction.UPSTREAM
    assert view.depth_reached == 4 and not view.truncated
    assert set(view.edges) == set(DAG) - {DAG[-1]}
    source = view.node(SRC.id)
    assert source is not None and source.label == "raw customers"


def test_downstream_of_a_snapshot_reaches_every_model_and_prediction_once(
        lineage: LineageService) -> None:
    view = lineage.downstream(SNAP)
    assert _depths(view) == {SNAP.id: 0, RUN.id: 1, MODEL.id: 1, DEPLOY.id: 2, SEG_A.id: 3,
                             SEG_B.id: 3}
    assert len(view.nodes) == len({n.id for n in view.nodes}) == 6
    assert view.nodes[0].id == SNAP.id
    assert set(view.edges) == {e for e in DAG if e.source not in (SRC, CODE, ENV)}


def test_a_depth_limit_stops_the_walk_and_says_it_was_truncated(
        lineage: LineageService) -> None:
    view = lineage.upstream(SEG_A, depth=2)
    assert _depths(view) == {SEG_A.id: 0, DEPLOY.id: 1, MODEL.id: 2}
    assert view.truncated and view.depth_reached == 2
    assert all(e.source.id in view.depths and e.target.id in view.depths for e in view.edges)
    whole = lineage.upstream(SEG_A, depth=4)
    assert not whole.truncated and len(whole.nodes) == 8
    only_root = lineage.downstream(SNAP, depth=0)
    assert _depths(only_root) == {SNAP.id: 0} and only_root.truncated and not only_root.edges


def test_a_node_limit_keeps_the_nearest_nodes_and_says_it_was_truncated(
        lineage: LineageService) -> None:
    view = lineage.upstream(SEG_A, limit=3)
    assert _depths(view) == {SEG_A.id: 0, DEPLOY.id: 1, MODEL.id: 2} and view.truncated
    exact = lineage.downstream(SNAP, limit=6)
    assert len(exact.nodes) == 6 and not exact.truncated


def test_both_directions_merge_upstream_and_downstream(lineage: LineageService) -> None:
    view = lineage.show(RUN)
    assert view.direction is Direction.BOTH
    assert _depths(view) == {RUN.id: 0, SNAP.id: 1, CODE.id: 1, ENV.id: 1, SRC.id: 2,
                             MODEL.id: 1, DEPLOY.id: 2, SEG_A.id: 3, SEG_B.id: 3}
    assert lineage.show(RUN, Direction.UPSTREAM).depths == lineage.upstream(RUN).depths


def test_a_cycle_terminates_and_reports_each_node_at_its_minimal_depth(
        store: MetadataStore) -> None:
    service = LineageService(store)
    a, b, c = (NodeRef(NodeKind.DATASET_SNAPSHOT, f"loop@{i}") for i in range(3))
    d = NodeRef(NodeKind.MODEL_VERSION, "m@1")
    service.record([], [LineageEdge(a, b, "derived_from"), LineageEdge(b, c, "derived_from"),
                        LineageEdge(c, a, "derived_from"), LineageEdge(a, c, "custom.shortcut"),
                        LineageEdge(c, d, "trained_on"), LineageEdge(d, d, "custom.self")],
                   actor="tester")
    down = service.downstream(a, depth=100)
    assert _depths(down) == {a.id: 0, b.id: 1, c.id: 1, d.id: 2} and not down.truncated
    up = service.upstream(a, depth=100)
    assert _depths(up) == {a.id: 0, c.id: 1, b.id: 2}
    assert len(up.edges) == 4  # a→b, b→c, c→a, a→c: every edge among the three


def test_recording_twice_changes_nothing_and_never_overwrites_attributes(
        store: MetadataStore) -> None:
    service = LineageService(store)
    node = LineageNode(SNAP, "first", {"rows": 3})
    service.record([node], [LineageEdge(SRC, SNAP, EdgeKind.DERIVED_FROM)], actor="tester")
    service.record([node, node], [LineageEdge(SRC, SNAP, EdgeKind.DERIVED_FROM)] * 2,
                   actor="tester")
    assert (service.count().nodes, service.count().edges) == (2, 1)
    service.record([LineageNode(SNAP, "second", {"rows": 99, "cols": 4})], [], actor="tester")
    stored = service.node(SNAP)
    assert stored.label == "first" and dict(stored.attributes) == {"rows": 3, "cols": 4}
    assert stored.created_at is not None
    # an endpoint first created bare is filled in by a later record of that node
    assert service.node(SRC).label is None
    service.record([LineageNode(SRC, "raw", {"uri": "s3://x"})], [], actor="tester")
    assert service.node(SRC).label == "raw"
    service.record([], [LineageEdge(SRC, SNAP, EdgeKind.PART_OF)], actor="tester")
    assert service.count().edges == 2  # another kind between the same nodes is another edge


def test_record_in_commits_with_the_callers_unit_of_work_or_not_at_all(
        store: MetadataStore) -> None:
    service = LineageService(store)
    with pytest.raises(RuntimeError), store.write("tester") as uow:
        service.record_in(uow, [LineageNode(SNAP)], [LineageEdge(SRC, SNAP, "derived_from")])
        raise RuntimeError("the caller's write failed")
    assert service.count().nodes == 0
    with store.write("tester") as uow:
        service.record_in(uow, [LineageNode(SNAP)], [LineageEdge(SRC, SNAP, "derived_from")])
    assert (service.count().nodes, service.count().edges) == (2, 1)


def test_recording_lineage_needs_write_for_the_actor_and_a_refusal_records_nothing(
        store: MetadataStore) -> None:
    access = AccessControl(store)
    access.grant("root", "root", "admin")
    access.grant("root", "val", "viewer")
    access.grant("root", "dev", "developer")
    service = LineageService(store, access)
    with pytest.raises(AccessDeniedError, match="val"):
        service.record([LineageNode(SRC)], [LineageEdge(SRC, SNAP, EdgeKind.DERIVED_FROM)],
                       actor="val")
    assert (service.count().nodes, service.count().edges) == (0, 0)
    with pytest.raises(AccessDeniedError, match="stranger"):
        service.record([LineageNode(SRC)], [], actor="stranger")
    service.record([LineageNode(SRC)], [LineageEdge(SRC, SNAP, EdgeKind.DERIVED_FROM)],
                   actor="dev")
    assert (service.count().nodes, service.count().edges) == (2, 1)


def test_neighbours_list_the_edges_on_each_side(lineage: LineageService) -> None:
    assert {e.source for e in lineage.neighbours(RUN, Direction.UPSTREAM)} == {SNAP, CODE, ENV}
    assert [e.target for e in lineage.neighbours(RUN, Direction.DOWNSTREAM)] == [MODEL]
    assert len(lineage.neighbours(RUN)) == 4


def test_an_unknown_node_is_not_found(lineage: LineageService) -> None:
    for call in (lineage.upstream, lineage.downstream, lineage.show, lineage.node,
                 lineage.neighbours):
        with pytest.raises(NotFoundError, match="model_version:nope@1"):
            call("model_version:nope@1")


@pytest.mark.parametrize(("text", "field"), [
    ("no-colon", "node"), ("unknown_kind:x", "node"), ("dataset:", "node"),
    ("dataset: padded", "node"), ("dataset:a\nb", "node"), (f"dataset:{'x' * 513}", "node"),
    ("Custom.Thing:x", "node"),
])
def test_a_malformed_node_is_refused_naming_the_field(lineage: LineageService, text: str,
                                                      field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        lineage.upstream(text)
    assert caught.value.field == field


def test_bad_kinds_depths_and_limits_are_refused(lineage: LineageService) -> None:
    with pytest.raises(InvalidArgumentError, match=r"edge\.kind"):
        LineageEdge(SRC, SNAP, "influenced_somehow")
    with pytest.raises(InvalidArgumentError, match=r"node\.kind"):
        NodeRef("bogus", "x")
    with pytest.raises(InvalidArgumentError, match=r"node\.attributes"):
        LineageNode(SNAP, attributes={"when": object()})
    with pytest.raises(InvalidArgumentError, match=r"node\.label"):
        LineageNode(SNAP, "x" * 513)
    assert NodeRef("custom.report", "q3").id == "custom.report:q3"
    assert NodeRef.parse("dataset_snapshot:s3://b/k:1") == NodeRef("dataset_snapshot",
                                                                   "s3://b/k:1")
    with pytest.raises(InvalidArgumentError, match="depth"):
        lineage.upstream(SEG_A, depth=-1)
    with pytest.raises(InvalidArgumentError, match="limit"):
        lineage.downstream(SNAP, limit=0)


def test_openlineage_export_has_runs_with_inputs_and_outputs(lineage: LineageService) -> None:
    events = lineage.to_openlineage(lineage.show(RUN, depth=1))
    run = next(e for e in events if e["job"]["name"] == RUN.id)
    assert run["run"]["runId"] == str(uuid.UUID(RUN.ref))
    assert {d["name"] for d in run["inputs"]} == {SNAP.id, CODE.id, ENV.id}
    assert [d["name"] for d in run["outputs"]] == [MODEL.id]
    assert set(run) == {"eventType", "eventTime", "run", "job", "inputs", "outputs",
                        "producer", "schemaURL"}
    assert run["eventType"] == "COMPLETE" and run["schemaURL"].endswith("#/$defs/RunEvent")
    derived = openlineage_events(lineage.upstream(SNAP))
    assert [(e["job"]["name"], [d["name"] for d in e["inputs"]]) for e in derived] == [
        (SNAP.id, [SRC.id])]


# -- the CTE agrees with a breadth-first search in Python on random graphs -----------------


def _bfs(edges: Iterable[tuple[int, int]], root: int, upstream: bool,
         max_depth: int) -> dict[int, int]:
    links: dict[int, set[int]] = {}
    for source, target in edges:
        near, far = (target, source) if upstream else (source, target)
        links.setdefault(near, set()).add(far)
    depths, queue = {root: 0}, deque([root])
    while queue:
        node = queue.popleft()
        if depths[node] == max_depth:
            continue
        for far in links.get(node, ()):
            if far not in depths:
                depths[far] = depths[node] + 1
                queue.append(far)
    return depths


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], bool]:
    size = draw(st.integers(1, 14))
    acyclic = draw(st.booleans())
    pairs = st.tuples(st.integers(0, size - 1), st.integers(0, size - 1))
    if acyclic:
        pairs = pairs.filter(lambda p: p[0] < p[1])
    edges = draw(st.lists(pairs, max_size=3 * size, unique=True))
    return size, edges, acyclic


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs(), root=st.integers(0, 13), upstream=st.booleans(),
       max_depth=st.integers(0, 16))
def test_walks_equal_a_python_bfs_on_random_graphs(
        store: MetadataStore, graph: tuple[int, list[tuple[int, int]], bool], root: int,
        upstream: bool, max_depth: int) -> None:
    size, edges, _ = graph
    root %= size
    prefix = uuid.uuid4().hex[:8]  # examples share one database: keep their graphs apart

    def ref(i: int) -> NodeRef:
        return NodeRef(NodeKind.DATASET, f"{prefix}-{i}")

    service = LineageService(store)
    service.record([LineageNode(ref(i)) for i in range(size)],
                   [LineageEdge(ref(s), ref(t), EdgeKind.DERIVED_FROM) for s, t in edges],
                   actor="tester")
    way = Direction.UPSTREAM if upstream else Direction.DOWNSTREAM
    view = service.show(ref(root), way, depth=max_depth)
    expected = _bfs(edges, root, upstream, max_depth)
    assert dict(view.depths) == {ref(i).id: d for i, d in expected.items()}
    assert {(e.source.id, e.target.id) for e in view.edges} == {
        (ref(s).id, ref(t).id) for s, t in edges if s in expected and t in expected}
    assert view.truncated == (_bfs(edges, root, upstream, max_depth + 1) != expected)
