"""A pipeline run's lineage, recorded and walked on SQLite and PostgreSQL; resumes add no copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeKind, NodeRef
from loopline.data.lineage import LineageService
from loopline.data.provenance import CodeVersion
from loopline.pipelines.run_lineage import (
    RunLineage,
    TaskLineage,
    artifact_node,
    code_version_ref,
    environment_node,
    pipeline_run_node,
    record_run_lineage,
    run_lineage_graph,
    task_run_node,
)
from loopline.store import MetadataStore

RUN_ID = "0190f3a1b2c34d5e8f6a7b8c9d0e1f2a"
COMMIT = "3f2a9c1" + "0" * 33
ENV_DIGEST = "e" * 64
FEATURES, MODEL, REPORT = "a" * 64, "b" * 64, "c" * 64
SNAP = NodeRef(NodeKind.DATASET_SNAPSHOT, "customers@3")
CODE = CodeVersion(Path("/src/churn"), COMMIT, "main")
CODE_NODE = NodeRef(NodeKind.CODE_VERSION, COMMIT)
ENV_NODE = environment_node(ENV_DIGEST)
RUN_NODE = pipeline_run_node(RUN_ID)
LOAD, TRAIN, REPORT_TASK = (task_run_node(RUN_ID, key) for key in ("load", "train", "report"))


def churn_run(report_state: str = "upstream_failed",
              report_output: str | None = None) -> RunLineage:
    """Load reads a snapshot and writes features; train turns them into a model; report last."""
    return RunLineage(RUN_ID, "churn", CODE, ENV_DIGEST, [
        TaskLineage("load", "succeeded", [], FEATURES, [SNAP]),
        TaskLineage("train", "succeeded", ["load"], MODEL),
        TaskLineage("report", report_state, ["train"], report_output),
    ])


@pytest.fixture
def lineage(store: MetadataStore) -> LineageService:
    service = LineageService(store)
    service.record([LineageNode(SNAP, "customers v3", {"rows": 120})], [], actor="tester")
    with store.write("tester") as uow:
        record_run_lineage(uow, churn_run())
    return service


def test_upstream_of_an_artifact_reaches_its_task_upstream_task_code_environment_and_data(
        lineage: LineageService) -> None:
    view = lineage.upstream(artifact_node(MODEL))
    assert dict(view.depths) == {artifact_node(MODEL).id: 0, TRAIN.id: 1, CODE_NODE.id: 2,
                                 ENV_NODE.id: 2, LOAD.id: 2, SNAP.id: 3}
    assert {LineageEdge(TRAIN, artifact_node(MODEL), EdgeKind.PRODUCED),
            LineageEdge(LOAD, TRAIN, EdgeKind.CONSUMED),
            LineageEdge(CODE_NODE, TRAIN, EdgeKind.USED),
            LineageEdge(ENV_NODE, LOAD, EdgeKind.USED),
            LineageEdge(SNAP, LOAD, EdgeKind.CONSUMED)} <= set(view.edges)
    code = view.node(CODE_NODE.id)
    assert code is not None and code.attributes == {"commit": COMMIT, "dirty": False,
                                                     "diff_sha256": None}


def test_upstream_of_the_run_reaches_every_task_its_data_code_and_environment(
        lineage: LineageService) -> None:
    view = lineage.upstream(RUN_NODE)
    assert view.ids() == {RUN_NODE.id, LOAD.id, TRAIN.id, REPORT_TASK.id, CODE_NODE.id,
                          ENV_NODE.id, SNAP.id}
    assert LineageEdge(CODE_NODE, RUN_NODE, EdgeKind.USED) in view.edges
    assert LineageEdge(TRAIN, RUN_NODE, EdgeKind.PART_OF) in view.edges


def test_downstream_of_a_consumed_snapshot_reaches_both_artifacts_but_not_unstarted_tasks(
        lineage: LineageService) -> None:
    view = lineage.downstream(SNAP)
    assert view.ids() == {SNAP.id, LOAD.id, artifact_node(FEATURES).id, TRAIN.id,
                          artifact_node(MODEL).id, RUN_NODE.id}
    assert view.depths[artifact_node(MODEL).id] == 3
    assert lineage.neighbours(REPORT_TASK) == [
        LineageEdge(REPORT_TASK, RUN_NODE, EdgeKind.PART_OF)]


def test_recording_the_same_run_again_adds_nothing(
        store: MetadataStore, lineage: LineageService) -> None:
    before = lineage.count()
    assert before.nodes == 9 and before.edges == 13
    with store.write("tester") as uow:
        record_run_lineage(uow, churn_run())
    assert lineage.count() == before
    snapshot = lineage.node(SNAP)
    assert snapshot.label == "customers v3" and snapshot.attributes == {"rows": 120}


def test_recording_a_resumed_run_adds_only_what_the_resume_did(
        store: MetadataStore, lineage: LineageService) -> None:
    before = lineage.count()
    resumed = churn_run(report_state="succeeded", report_output=REPORT)
    with store.write("tester") as uow:
        record_run_lineage(uow, resumed)
    with store.write("tester") as uow:
        record_run_lineage(uow, resumed)
    after = lineage.count()
    assert (after.nodes - before.nodes, after.edges - before.edges) == (1, 4)
    assert lineage.upstream(artifact_node(REPORT)).ids() >= {TRAIN.id, LOAD.id, SNAP.id,
                                                             CODE_NODE.id}


def test_run_outside_git_records_no_code_version(store: MetadataStore) -> None:
    run = RunLineage("r-2", "churn", CodeVersion(None, reason="not a git work tree"), None,
                     [TaskLineage("only", "succeeded", output_digest=FEATURES)])
    with store.write("tester") as uow:
        record_run_lineage(uow, run)
    view = LineageService(store).upstream(artifact_node(FEATURES))
    assert view.ids() == {artifact_node(FEATURES).id, task_run_node("r-2", "only").id}


def test_dirty_code_is_named_by_commit_and_change_hash() -> None:
    dirty = CodeVersion(Path("/src"), COMMIT, None, dirty=True, diff_sha256="d" * 64)
    assert code_version_ref(dirty) == f"{COMMIT}+{'d' * 64}"
    assert code_version_ref(CodeVersion(Path("/src"), None, "main", True, "d" * 64)) == (
        f"none+{'d' * 64}")
    assert code_version_ref(CodeVersion(Path("/src"), COMMIT, dirty=True,
                                        reason="git diff timed out")) is None
    nodes, _ = run_lineage_graph(RunLineage("r", "p", dirty, None, []))
    assert [n.ref for n in nodes if n.ref.kind == NodeKind.CODE_VERSION] == [
        NodeRef(NodeKind.CODE_VERSION, f"{COMMIT}+{'d' * 64}")]


@pytest.mark.parametrize("tasks", [
    [TaskLineage("a", "succeeded"), TaskLineage("a", "succeeded")],
    [TaskLineage("a", "succeeded", ["missing"])],
    [TaskLineage("a", "succeeded", ["a"])],
])
def test_inconsistent_tasks_are_refused(tasks: list[TaskLineage]) -> None:
    with pytest.raises(InvalidArgumentError):
        RunLineage("r", "p", None, None, tasks)


def test_output_digest_must_be_a_sha256() -> None:
    with pytest.raises(InvalidArgumentError, match="output_digest"):
        TaskLineage("a", "succeeded", output_digest="not-a-digest")
