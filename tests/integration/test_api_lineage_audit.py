"""Lineage walks and the audit log over the control plane: the client answers as the local
workspace does, bad input is refused naming the field, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from api_support import ApiServer

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.lineage import Direction, NodeKind, NodeRef
from loopline.store import AuditFilter


def _error(answer: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = answer.json()["error"]
    return error


@pytest.fixture
def graph(api: ApiServer, tmp_path: Path) -> ApiServer:
    """raw@1 snapshotted from a CSV file (a source node whose ref holds '/'), clean@1 from it."""
    csv = tmp_path / "in put" / "rows.csv"
    csv.parent.mkdir()
    pd.DataFrame({"x": [1, 2, 3]}).to_csv(csv, index=False)
    ws = api.workspace.as_actor("dev")
    ws.datasets.snapshot(csv, "raw")
    ws.datasets.snapshot(pd.DataFrame({"x": [1, 2]}), "clean", parents=["raw@1"])
    return api


def _source_id(api: ApiServer) -> str:
    uri = api.workspace.datasets.get("raw@1").source_uri
    assert uri is not None and "/" in uri
    return f"source:{uri}"


# --- lineage --------------------------------------------------------------------------------

def test_client_lineage_equals_the_local_service(graph: ApiServer) -> None:
    remote, local = graph.client("viewer").lineage, graph.workspace.lineage
    raw = "dataset_snapshot:raw@1"

    assert remote.count() == local.count()
    assert remote.node(raw) == local.node(raw)
    assert remote.node(_source_id(graph)) == local.node(_source_id(graph))
    for direction in Direction:
        assert remote.neighbours(raw, direction) == local.neighbours(raw, direction)
        assert remote.show(raw, direction, depth=1) == local.show(raw, direction, depth=1)
    assert remote.upstream("dataset_snapshot:clean@1") == \
        local.upstream("dataset_snapshot:clean@1")
    ref = NodeRef(NodeKind.DATASET_SNAPSHOT, "raw@1")
    assert remote.downstream(ref, limit=2) == local.downstream(ref, limit=2)
    view = remote.show(raw)
    assert remote.to_openlineage(view, "ns") == local.to_openlineage(local.show(raw), "ns")


def test_openlineage_route_answers_the_events_of_the_view(graph: ApiServer) -> None:
    raw = "dataset_snapshot:raw@1"
    answer = graph.http("viewer").get("/api/v1/lineage/openlineage",
                                      params={"node": raw, "namespace": "prod"})
    local = graph.workspace.lineage

    assert answer.status_code == 200
    assert answer.json() == local.to_openlineage(local.show(raw), "prod")
    assert answer.json(), "the snapshot from its source is one transformation"


def test_unknown_node_answers_404_and_a_malformed_one_422(graph: ApiServer) -> None:
    http = graph.http("viewer")
    unknown = http.get("/api/v1/lineage/node", params={"node": "dataset_snapshot:ghost@1"})
    walk_unknown = http.get("/api/v1/lineage/upstream", params={"node": "model:ghost"})
    malformed = http.get("/api/v1/lineage/node", params={"node": "no-colon"})
    bad_kind = http.get("/api/v1/lineage/graph", params={"node": "weird:x"})

    assert unknown.status_code == 404 and walk_unknown.status_code == 404
    assert malformed.status_code == 422 and _error(malformed)["field"] == "node"
    assert bad_kind.status_code == 422 and _error(bad_kind)["field"] == "node"
    with pytest.raises(NotFoundError):
        graph.client("viewer").lineage.node("dataset_snapshot:ghost@1")
    with pytest.raises(InvalidArgumentError) as refused:
        graph.client("viewer").lineage.node("no-colon")
    assert refused.value.field == "node"


def test_walks_refuse_depth_limit_or_direction_out_of_range(graph: ApiServer) -> None:
    http = graph.http("viewer")
    node = {"node": "dataset_snapshot:raw@1"}
    for params, field in (({"depth": 101}, "depth"), ({"depth": -1}, "depth"),
                          ({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"),
                          ({"direction": "sideways"}, "direction")):
        answer = http.get("/api/v1/lineage/graph", params={**node, **params})
        assert answer.status_code == 422, (params, answer.text)
        assert _error(answer)["field"] == field


def test_neighbours_page_through_the_edges(graph: ApiServer) -> None:
    http = graph.http("viewer")
    params = {"node": "dataset_snapshot:raw@1", "limit": 1}
    first = http.get("/api/v1/lineage/neighbours", params=params).json()
    second = http.get("/api/v1/lineage/neighbours",
                      params={**params, "cursor": first["next_cursor"]}).json()

    assert len(first["items"]) == len(second["items"]) == 1
    assert second["next_cursor"] is None


# --- audit ----------------------------------------------------------------------------------

def test_client_audit_equals_the_local_log(graph: ApiServer) -> None:
    remote, local = graph.client("viewer").audit, graph.workspace.audit
    now = datetime.now(UTC)

    for where in (None, AuditFilter(actor="dev"), AuditFilter(action="dataset.snapshot"),
                  AuditFilter(subject="dataset:raw@1"), AuditFilter(limit=2),
                  AuditFilter(newest_first=False, limit=3),
                  AuditFilter(since=now - timedelta(hours=1), until=now + timedelta(hours=1)),
                  AuditFilter(until=now - timedelta(hours=1))):
        assert remote.entries(where) == local.entries(where), where
    assert remote.head() == local.head()
    assert remote.verify() == local.verify() and remote.verify().ok


def test_audit_listing_filters_and_pages(graph: ApiServer) -> None:
    http = graph.http("viewer")
    first = http.get("/api/v1/audit", params={"actor": "dev", "limit": 1}).json()
    rest = http.get("/api/v1/audit", params={"actor": "dev", "limit": 10,
                                             "cursor": first["next_cursor"]}).json()
    entries = first["items"] + rest["items"]

    assert [e["action"] for e in entries] == ["dataset.snapshot", "dataset.snapshot"]
    assert [e["subject"] for e in entries] == ["dataset:clean@1", "dataset:raw@1"]
    assert rest["next_cursor"] is None


def test_audit_time_filters_take_a_time_without_zone_as_utc(graph: ApiServer) -> None:
    http = graph.http("viewer")
    future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()

    later = http.get("/api/v1/audit", params={"since": future}).json()
    before = http.get("/api/v1/audit", params={"until": future}).json()

    assert later["items"] == []
    assert len(before["items"]) == len(graph.workspace.audit.entries())


def test_audit_refuses_malformed_filters_naming_them(graph: ApiServer) -> None:
    http = graph.http("viewer")
    for params, field in (({"since": "yesterday"}, "since"),
                          ({"newest_first": "maybe"}, "newest_first"),
                          ({"actor": "a" * 257}, "actor"), ({"cursor": "x"}, "cursor")):
        answer = http.get("/api/v1/audit", params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert _error(answer)["field"] == field
    with pytest.raises(InvalidArgumentError) as refused:
        graph.client("viewer").audit.entries(AuditFilter(limit=0))
    assert refused.value.field == "limit"


OUT_OF_RANGE = ("0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59Z")


@pytest.mark.parametrize("field", ["since", "until"])
def test_audit_refuses_a_time_out_of_range_naming_it(api: ApiServer, field: str) -> None:
    http = api.http("viewer")
    for moment in OUT_OF_RANGE:
        answer = http.get("/api/v1/audit", params={field: moment})
        assert answer.status_code == 422, (moment, answer.text)
        assert _error(answer)["field"] == field


def test_audit_and_runs_refuse_a_cursor_past_what_they_reach(api: ApiServer) -> None:
    for path in ("/audit", "/runs"):
        answer = api.http("viewer").get("/api/v1" + path, params={"cursor": "10000"})
        assert answer.status_code == 422 and _error(answer)["field"] == "cursor", path
        assert "10000" in _error(answer)["message"]


# Free text that reaches a query: NUL is refused before it can (PostgreSQL cannot hold it).
NUL_TEXT: list[tuple[str, str, dict[str, str], str]] = [
    ("viewer", "/audit", {"actor": "d\x00ev"}, "actor"),
    ("viewer", "/audit", {"action": "dataset.\x00"}, "action"),
    ("viewer", "/audit", {"subject": "\x00"}, "subject"),
    ("viewer", "/lineage/node", {"node": "dataset_snapshot:raw\x00@1"}, "node"),
    ("viewer", "/lineage/upstream", {"node": "model:\x00x"}, "node"),
    ("viewer", "/lineage/openlineage", {"node": "model:x", "namespace": "n\x00"},
     "namespace"),
    ("viewer", "/runs", {"pipeline": "tr\x00ain"}, "pipeline"),
    ("admin", "/tokens", {"user": "ada\x00"}, "user"),
]


def test_text_filters_holding_nul_are_refused_naming_them(api: ApiServer) -> None:
    for role, path, params, field in NUL_TEXT:
        answer = api.http(role).get("/api/v1" + path, params=params)
        assert answer.status_code == 422, (path, answer.text)
        assert _error(answer)["field"] == field, path


def test_audit_head_and_verify_answer_the_chain(graph: ApiServer) -> None:
    http = graph.http("viewer")
    seq, digest = graph.workspace.audit.head()

    assert http.get("/api/v1/audit/head").json() == {"seq": seq, "hash": digest}
    report = http.get("/api/v1/audit/verify").json()
    assert report["first_break"] is None and report["head_seq"] == seq
    assert report["entries"] == seq
