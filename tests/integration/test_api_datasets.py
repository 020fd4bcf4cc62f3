"""Datasets over the control plane: upload Parquet as snapshots, list, show and download
versions; the client answers as the local workspace does, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from api_support import ApiServer, serve_api

from loopline.api import ApiOptions
from loopline.app import Workspace
from loopline.client.datasets import RemoteValidation
from loopline.core.errors import AccessDeniedError, InvalidArgumentError, NotFoundError
from loopline.data.validation import Suite
from loopline.store import AuditFilter

UPLOAD = {"Content-Type": "application/octet-stream"}


def _frame(rows: int = 5, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"x": range(offset, offset + rows),
                         "label": [f"r{i}" for i in range(offset, offset + rows)],
                         "score": [i / 3 for i in range(offset, offset + rows)]})


def _parquet(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def _upload(http: httpx.Client, name: str, body: bytes,
            params: dict[str, object] | None = None) -> httpx.Response:
    return http.post(f"/api/v1/datasets/{name}/upload", content=body, headers=UPLOAD,
                     params=params)


def _error(answer: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = answer.json()["error"]
    return error


# --- upload -------------------------------------------------------------------------------

def test_upload_creates_a_version_audited_as_the_tokens_user(api: ApiServer) -> None:
    answer = _upload(api.http("developer"), "iris", _parquet(_frame()))

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["created"] is True
    assert body["version"]["dataset"] == "iris" and body["version"]["version"] == 1
    assert body["version"]["rows"] == 5
    assert body["version"]["created_by"] == "dev"
    assert body["version"]["source_uri"] is None
    [entry] = api.workspace.audit.entries(AuditFilter(action="dataset.snapshot"))
    assert entry.actor == "dev" and entry.subject == "dataset:iris@1"


def test_upload_of_the_same_rows_answers_200_with_the_latest_version(api: ApiServer) -> None:
    http = api.http("developer")
    first = _upload(http, "iris", _parquet(_frame()))
    again = _upload(http, "iris", _parquet(_frame()))

    assert again.status_code == 200, again.text
    assert again.json() == {"created": False, "version": first.json()["version"]}


def test_upload_with_parents_records_them(api: ApiServer) -> None:
    http = api.http("developer")
    parent = _upload(http, "raw", _parquet(_frame())).json()["version"]
    child = _upload(http, "clean", _parquet(_frame(3)), {"parents": ["raw@1"]})

    assert child.status_code == 201, child.text
    assert child.json()["version"]["parents"] == [parent["id"]]


def test_upload_refuses_a_body_that_is_not_parquet_naming_body(api: ApiServer) -> None:
    answer = _upload(api.http("developer"), "iris", b"x,y\n1,2\n")

    assert answer.status_code == 422
    assert _error(answer)["field"] == "body"
    assert api.workspace.datasets.versions("iris") == []


def test_upload_refuses_an_empty_body_or_parquet_without_rows_naming_body(
        api: ApiServer) -> None:
    http = api.http("developer")
    empty_rows = _parquet(_frame().iloc[0:0])

    for body in (b"", empty_rows):
        answer = _upload(http, "iris", body)
        assert answer.status_code == 422, answer.text
        assert _error(answer)["field"] == "body"


def test_upload_refuses_a_bad_name_or_parent(api: ApiServer) -> None:
    http = api.http("developer")
    body = _parquet(_frame())

    bad_name = _upload(http, "-iris", body)
    bad_parent = _upload(http, "iris", body, {"parents": ["no such@1"]})
    missing_parent = _upload(http, "iris", body, {"parents": ["ghost@1"]})

    assert bad_name.status_code == 422 and _error(bad_name)["field"] == "name"
    assert bad_parent.status_code == 422 and _error(bad_parent)["field"] == "parents"
    assert missing_parent.status_code == 404
    assert api.workspace.datasets.versions() == []


def test_upload_needs_write(api: ApiServer) -> None:
    answer = _upload(api.http("viewer"), "iris", _parquet(_frame()))

    assert answer.status_code == 403
    assert api.workspace.datasets.versions() == []


def test_upload_refuses_json(api: ApiServer) -> None:
    answer = api.http("developer").post("/api/v1/datasets/iris/upload", json={"rows": []})

    assert answer.status_code == 415


@pytest.fixture
def small_api(ws: Workspace) -> Iterator[ApiServer]:
    """The API with a 2 KiB upload limit."""
    with serve_api(ws, ApiOptions(max_upload_bytes=2048, auth_failures_per_minute=0)) as running:
        yield running


def test_upload_past_the_limit_is_refused_413_by_its_declared_length(
        small_api: ApiServer) -> None:
    answer = _upload(small_api.http("developer"), "big", b"\0" * 4096)

    assert answer.status_code == 413
    assert small_api.workspace.datasets.versions() == []


def test_upload_past_the_limit_is_refused_413_while_streaming_without_a_length(
        small_api: ApiServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"\0" * 512

    answer = small_api.http("developer").post("/api/v1/datasets/big/upload", content=chunks(),
                                              headers=UPLOAD)

    assert answer.status_code == 413
    assert _error(answer)["field"] == "body"
    assert small_api.workspace.datasets.versions() == []


def _uploads_left(ws: Workspace) -> list[Path]:
    folder = ws.config_dir / "tmp" / "uploads"
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def tight_api(ws: Workspace) -> Iterator[ApiServer]:
    """The API whose uploaded rows may decode to 1 MiB at most."""
    options = ApiOptions(max_decoded_bytes=1 << 20, auth_failures_per_minute=0)
    with serve_api(ws, options) as running:
        yield running


def _compressed(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


BOMBS = {
    # One 100 kB string a row: a dictionary of one value, 2,000 indices; 200 MB decoded.
    "repeated strings": pa.table({"text": ["a" * 100_000] * 2_000}),
    # Four million equal integers, run-length encoded; 32 MB decoded.
    "repeated numbers": pa.table({"n": pa.array([7] * 4_000_000, pa.int64())}),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_upload_whose_rows_decode_past_the_limit_is_refused_413_and_nothing_is_written(
        tight_api: ApiServer, bomb: str) -> None:
    body = _compressed(BOMBS[bomb])
    assert len(body) < 100_000
    ws = tight_api.workspace
    stored = list(ws.artifacts.list())

    answer = _upload(tight_api.http("developer"), "bomb", body)

    assert answer.status_code == 413, answer.text
    assert _error(answer)["field"] == "body"
    assert "max_decoded_bytes" in _error(answer)["message"]
    assert str(1 << 20) in _error(answer)["message"]
    assert ws.datasets.versions() == []
    assert list(ws.artifacts.list()) == stored
    assert _uploads_left(ws) == []


def test_upload_of_rows_within_the_decoded_limit_keeps_their_types(
        tight_api: ApiServer) -> None:
    table = pa.table({"text": ["a", "b", None] * 100, "n": list(range(300)),
                      "blob": [b"x", b"y", b"z"] * 100,
                      "big": pa.array(["q"] * 300, pa.large_string())})

    answer = _upload(tight_api.http("developer"), "fine", _compressed(table))

    assert answer.status_code == 201, answer.text
    local = tight_api.workspace.datasets.snapshot(table, "local")
    assert local.version.content_hash == answer.json()["version"]["content_hash"]
    assert tight_api.workspace.datasets.read("fine").equals(
        tight_api.workspace.datasets.read("local"))
    assert _uploads_left(tight_api.workspace) == []


def test_upload_streams_under_the_workspace_and_leaves_nothing_behind(
        api: ApiServer) -> None:
    http = api.http("developer")
    assert _upload(http, "iris", _parquet(_frame())).status_code == 201
    assert _upload(http, "iris", b"not parquet").status_code == 422

    assert (api.workspace.config_dir / "tmp" / "uploads").is_dir()
    assert _uploads_left(api.workspace) == []


def test_upload_within_the_limit_is_accepted(small_api: ApiServer) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2]}), sink)
    body = sink.getvalue()
    assert len(body) <= 2048

    assert _upload(small_api.http("developer"), "small", body).status_code == 201


# --- reads ----------------------------------------------------------------------------------

@pytest.fixture
def iris(api: ApiServer) -> ApiServer:
    """The API over a workspace with iris@1, iris@2 and other@1 (snapshotted locally)."""
    ws = api.workspace
    ws.datasets.snapshot(_frame(), "iris")
    ws.datasets.snapshot(_frame(7), "iris")
    ws.datasets.snapshot(_frame(2, offset=50), "other")
    return api


def test_versions_list_newest_first_in_pages(iris: ApiServer) -> None:
    http = iris.http("viewer")
    first = http.get("/api/v1/datasets/iris/versions", params={"limit": 1}).json()
    second = http.get("/api/v1/datasets/iris/versions",
                      params={"limit": 1, "cursor": first["next_cursor"]}).json()

    assert [v["version"] for v in first["items"] + second["items"]] == [2, 1]
    assert second["next_cursor"] is None


def test_a_nul_filter_or_a_cursor_out_of_range_is_422_naming_it(iris: ApiServer) -> None:
    http = iris.http("viewer")
    version = iris.workspace.datasets.get("iris@1")
    cases = [("/dataset-versions", {"dataset": "iris\x00"}, "dataset"),
             ("/dataset-versions", {"cursor": "100000"}, "cursor"),
             ("/datasets/iris/versions", {"cursor": "999999000"}, "cursor"),
             (f"/dataset-versions/{version.id}/validations", {"cursor": "1000"}, "cursor"),
             ("/dataset-versions", {"cursor": "99999999999999999999999"}, "cursor")]
    for path, params, field in cases:
        answer = http.get("/api/v1" + path, params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert _error(answer)["field"] == field
    near = http.get("/api/v1/dataset-versions", params={"cursor": "99999"})
    assert near.json() == {"items": [], "next_cursor": None}


def test_dataset_listing_counts_versions(iris: ApiServer) -> None:
    page = iris.http("viewer").get("/api/v1/datasets").json()

    assert page["items"] == [{"name": "iris", "versions": 2, "partitions": 0},
                             {"name": "other", "versions": 1, "partitions": 0}]
    assert iris.client("viewer").datasets.datasets() == \
        iris.workspace.datasets.queries.datasets()


def test_show_version_answers_the_record(iris: ApiServer) -> None:
    http = iris.http("viewer")
    latest = http.get("/api/v1/datasets/iris/versions/latest").json()
    by_id = http.get(f"/api/v1/dataset-versions/{latest['id']}").json()

    assert latest["version"] == 2 and latest["rows"] == 7
    assert [c["name"] for c in latest["columns"]] == ["x", "label", "score"]
    assert latest["profile"]
    assert by_id == latest


def test_unknown_dataset_or_version_answers_404(iris: ApiServer) -> None:
    http = iris.http("viewer")
    for path in ("/datasets/ghost/versions/latest", "/datasets/iris/versions/9",
                 "/datasets/iris/versions/9/data", f"/dataset-versions/{'0' * 32}"):
        answer = http.get("/api/v1" + path)
        assert answer.status_code == 404, (path, answer.text)
        assert _error(answer)["code"] == "not_found"


def test_malformed_name_or_version_answers_422_naming_it(iris: ApiServer) -> None:
    http = iris.http("viewer")
    bad_name = http.get("/api/v1/datasets/-x/versions/1")
    bad_version = http.get("/api/v1/datasets/iris/versions/0")

    assert bad_name.status_code == 422 and _error(bad_name)["field"] == "name"
    assert bad_version.status_code == 422 and _error(bad_version)["field"] == "version"


def test_download_streams_the_stored_parquet(iris: ApiServer) -> None:
    answer = iris.http("viewer").get("/api/v1/datasets/iris/versions/1/data")
    version = iris.workspace.datasets.get("iris@1")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    assert hashlib.sha256(answer.content).hexdigest() == version.blob_digest
    assert answer.headers["etag"] == f'"{version.blob_digest}"'
    assert pq.read_table(io.BytesIO(answer.content)).equals(
        iris.workspace.datasets.read("iris@1"))


# --- the client -----------------------------------------------------------------------------

def test_client_reads_equal_the_local_ones(iris: ApiServer) -> None:
    remote, local = iris.client("viewer").datasets, iris.workspace.datasets

    for ref in ("iris", "iris@1", "iris@latest", local.get("other").id):
        assert remote.get(ref) == local.get(ref)
    assert remote.versions() == local.versions()
    assert remote.versions("iris", limit=1) == local.versions("iris", limit=1)
    assert remote.previous(local.get("iris@2")) == local.previous(local.get("iris@2"))
    assert remote.previous(local.get("iris@1")) is None
    assert remote.read("iris@1").equals(local.read("iris@1"))
    assert remote.read("iris", columns=["score"]).equals(local.read("iris", columns=["score"]))
    assert [b.num_rows for b in remote.iter_batches("iris", batch_rows=3)] == \
        [b.num_rows for b in local.iter_batches("iris", batch_rows=3)]


def test_client_refuses_what_the_local_service_refuses(iris: ApiServer) -> None:
    remote = iris.client("viewer").datasets

    with pytest.raises(InvalidArgumentError) as bad_column:
        remote.read("iris@1", columns=["nope"])
    with pytest.raises(InvalidArgumentError) as bad_ref:
        remote.get("iris@0", field="model")
    with pytest.raises(NotFoundError):
        remote.get("ghost")

    assert bad_column.value.field == "columns"
    assert bad_ref.value.field == "model"


def test_client_snapshot_of_a_frame_is_the_version_a_local_snapshot_makes(
        api: ApiServer) -> None:
    remote = api.client("developer").datasets
    rows: list[int] = []

    made = remote.snapshot(_frame(), "iris", progress=rows.append)
    again = api.workspace.datasets.snapshot(_frame(), "iris")

    assert made.created and made.version.created_by == "dev"
    assert rows == [5]
    assert again.created is False and again.version == made.version
    assert remote.get("iris@1") == api.workspace.datasets.get("iris@1")


def test_client_snapshots_a_local_csv_file_and_parents(api: ApiServer, tmp_path: Path) -> None:
    remote = api.client("developer").datasets
    csv = tmp_path / "rows.csv"
    _frame(4).to_csv(csv, index=False)
    parent = remote.snapshot(pa.Table.from_pandas(_frame(), preserve_index=False), "raw")

    child = remote.snapshot(csv, "clean", parents=["raw@1"])

    assert child.version.rows == 4 and child.version.parents == (parent.version.id,)
    assert remote.read("clean").to_pandas()["label"].tolist() == ["r0", "r1", "r2", "r3"]


def test_client_snapshot_refuses_a_bad_source_name_or_role(api: ApiServer) -> None:
    developer = api.client("developer").datasets

    with pytest.raises(InvalidArgumentError) as bad_source:
        developer.snapshot(42, "iris")
    with pytest.raises(InvalidArgumentError) as no_rows:
        developer.snapshot(_frame().iloc[0:0], "iris")
    with pytest.raises(InvalidArgumentError) as bad_name:
        developer.snapshot(_frame(), "-iris")
    with pytest.raises(AccessDeniedError):
        api.client("viewer").datasets.snapshot(_frame(), "iris")

    assert (bad_source.value.field, no_rows.value.field, bad_name.value.field) == \
        ("source", "source", "name")
    assert api.workspace.datasets.versions() == []


# --- validation -----------------------------------------------------------------------------

SUITE = Suite.from_yaml("""
name: basic
expectations:
  - {type: column_exists, column: x}
  - {type: row_count_between, min: 6, max: 10}
""")


def _validation(api: ApiServer, role: str) -> RemoteValidation:
    return RemoteValidation(api.client(role)._http)


def test_validation_stores_a_report_audited_as_the_tokens_user(iris: ApiServer) -> None:
    version = iris.workspace.datasets.get("iris@1")
    answer = iris.http("developer").post(f"/api/v1/dataset-versions/{version.id}/validations",
                                         json=SUITE.model_dump(mode="json"))

    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert report["created_by"] == "dev" and report["suite"] == "basic"
    assert [r["passed"] for r in report["results"]] == [True, False]
    [entry] = iris.workspace.audit.entries(AuditFilter(action="dataset.validate"))
    assert entry.actor == "dev"


def test_client_validation_equals_the_local_service(iris: ApiServer) -> None:
    remote, ws = _validation(iris, "developer"), iris.workspace

    made = remote.validate_dataset("iris", SUITE)
    version_id = ws.datasets.get("iris").id

    assert made.passed and made.created_by == "dev"
    assert remote.load(made.run_id) == ws.validation.load(made.run_id)
    assert remote.history(version_id) == ws.validation.history(version_id)
    assert [run.id for run in remote.history(version_id, limit=1)] == [made.run_id]


def test_validation_refuses_a_bad_suite_unknown_column_or_version(iris: ApiServer) -> None:
    http = iris.http("developer")
    version = iris.workspace.datasets.get("iris@1")
    path = f"/api/v1/dataset-versions/{version.id}/validations"

    bad_suite = http.post(path, json={"name": "s", "expectations": [{"type": "nope"}]})
    extra = http.post(path, json={"name": "s", "colour": "red"})
    unknown_column = http.post(path, json={"name": "s", "expectations": [
        {"type": "not_null", "column": "ghost"}]})
    unknown_version = http.post(f"/api/v1/dataset-versions/{'0' * 32}/validations",
                                json={"name": "s"})
    unknown_run = http.get(f"/api/v1/validations/{'0' * 32}")

    assert bad_suite.status_code == 422 and _error(bad_suite)["field"].startswith("expectations")
    assert extra.status_code == 422 and _error(extra)["field"] == "colour"
    assert unknown_column.status_code == 422, unknown_column.text
    assert unknown_version.status_code == 404 and unknown_run.status_code == 404
    assert iris.http("viewer").post(path, json={"name": "s"}).status_code == 403
    assert iris.workspace.validation.history(version.id) == []
