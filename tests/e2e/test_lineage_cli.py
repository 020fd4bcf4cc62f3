"""``loopline lineage`` end to end. The OpenLineage export runs in subprocesses as a user runs
it; ``lineage show`` in this process (``cli.main.run``), which runs the same code for a
fraction of the cost (see ``cli_runner``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import InProcessCli, run_console

from loopline.app import Workspace
from loopline.core.lineage import EdgeKind, LineageEdge, LineageNode, NodeKind, NodeRef
from loopline.data.lineage import LineageService

SRC = NodeRef(NodeKind.SOURCE, "raw.csv")
SNAP = NodeRef(NodeKind.DATASET_SNAPSHOT, "customers@1")
RUN = NodeRef(NodeKind.PIPELINE_RUN, "train-1")
MODEL = NodeRef(NodeKind.MODEL_VERSION, "churn@1")
SEG = NodeRef(NodeKind.PREDICTION_SEGMENT, "seg-1")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    with Workspace.init(tmp_path) as opened:
        LineageService(opened.store).record(
            [LineageNode(SRC, "raw customers"), LineageNode(MODEL, "churn v1")],
            [LineageEdge(SRC, SNAP, EdgeKind.DERIVED_FROM),
             LineageEdge(SNAP, RUN, EdgeKind.CONSUMED),
             LineageEdge(RUN, MODEL, EdgeKind.PRODUCED),
             LineageEdge(SNAP, MODEL, EdgeKind.TRAINED_ON),
             LineageEdge(MODEL, SEG, EdgeKind.SERVED_BY)],
            actor="cli-tester")
    return tmp_path


def test_show_draws_both_directions_as_a_tree(workspace: Path, run_cli: InProcessCli) -> None:
    done = run_cli(workspace, "lineage", "show", SNAP.id)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "upstream" in out and "downstream" in out
    assert "source:raw.csv" in out and "raw customers" in out
    assert out.count("model_version:churn@1") == 2  # once in the tree, once as "see"
    assert "prediction_segment:seg-1" in out


def test_show_upstream_json_has_nodes_with_depths_and_edges(
        workspace: Path, run_cli: InProcessCli) -> None:
    done = run_cli(workspace, "lineage", "show", SEG.id, "--upstream", "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert set(view) == {"root", "direction", "depth_reached", "truncated", "nodes", "edges"}
    assert view["root"] == SEG.id and view["direction"] == "upstream"
    assert view["truncated"] is False and view["depth_reached"] == 3
    depths = {n["id"]: n["depth"] for n in view["nodes"]}
    assert depths == {SEG.id: 0, MODEL.id: 1, RUN.id: 2, SNAP.id: 2, SRC.id: 3}
    node = next(n for n in view["nodes"] if n["id"] == MODEL.id)
    assert node["kind"] == "model_version" and node["ref"] == "churn@1"
    assert node["label"] == "churn v1" and node["created_at"]
    assert {"source": SNAP.id, "target": MODEL.id, "kind": "trained_on"} in view["edges"]
    assert len(view["edges"]) == 5


def test_show_downstream_with_a_depth_limit_is_truncated(
        workspace: Path, run_cli: InProcessCli) -> None:
    done = run_cli(workspace, "lineage", "show", SRC.id, "--downstream", "--depth", "1", "--json")
    view = json.loads(done.stdout)
    assert [n["id"] for n in view["nodes"]] == [SRC.id, SNAP.id] and view["truncated"] is True
    human = run_cli(workspace, "lineage", "show", SRC.id, "--downstream", "--depth", "1")
    assert human.returncode == 0 and "truncated" in human.stdout


def test_an_unknown_node_exits_3_and_a_malformed_one_exits_5(
        workspace: Path, run_cli: InProcessCli) -> None:
    unknown = run_cli(workspace, "lineage", "show", "model_version:missing@9")
    assert unknown.returncode == 3
    assert "model_version:missing@9" in unknown.stderr and "not found" in unknown.stderr
    for bad in ("no-colon-here", "bogus_kind:x", "dataset:"):
        malformed = run_cli(workspace, "lineage", "show", bad)
        assert malformed.returncode == 5, (bad, malformed.stderr)
        assert "invalid NODE" in malformed.stderr


@pytest.mark.e2e
def test_openlineage_export_writes_a_file_and_a_bad_url_exits_5(workspace: Path) -> None:
    out = workspace / "lineage.jsonl"
    done = run_console(workspace, "lineage", "openlineage", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "OpenLineage events written to" in done.stdout and out.exists()
    refused = run_console(workspace, "lineage", "openlineage", "--url", "ftp://marquez.example/")
    assert refused.returncode == 5 and "http:// or https://" in refused.stderr
