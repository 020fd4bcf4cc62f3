"""OpenLineage export on SQLite and PostgreSQL: every event of a real pipeline run validates
against the specification's JSON schema (tests/fixtures/openlineage, offline) and each facet
against its own schema; tasks name their pipeline run as parent, read snapshots are inputs,
failures carry their message; events reach a local HTTP endpoint and a file intact."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pandas as pd
import pytest
from referencing import Registry, Resource

from loopline import pipeline, task
from loopline.app import Workspace
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.data.lineage import OPENLINEAGE_SCHEMA_URL, PRODUCER
from loopline.governance.openlineage import (
    openlineage_all_events,
    openlineage_run_events,
    openlineage_snapshot_events,
)
from loopline.governance.openlineage_export import (
    endpoint_url,
    export_to_file,
    export_to_url,
)
from loopline.pipelines.runner import RunResult

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openlineage"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


# -- the schema, offline ---------------------------------------------------------------------


def _format_checker() -> jsonschema.FormatChecker:
    """The formats the spec uses, checked for real: jsonschema skips date-time and uri
    unless optional packages are installed, so those two are implemented here."""
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not RFC3339.match(value):
            return False
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None

    @checker.checks("uri", raises=ValueError)
    def _uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parts = urlsplit(value)
        return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*$", parts.scheme)) and bool(
            parts.netloc or parts.path) and " " not in value

    return checker


FORMATS = _format_checker()
SCHEMAS = [json.loads(p.read_text()) for p in sorted(FIXTURES.rglob("*.json"))]
REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS)


def _validator(url: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": url}, registry=REGISTRY,
                                           format_checker=FORMATS)


RUN_EVENT = _validator(OPENLINEAGE_SCHEMA_URL)


def _facets(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from event["run"].get("facets", {}).values()
    yield from event["job"].get("facets", {}).values()
    for dataset in [*event["inputs"], *event["outputs"]]:
        yield from dataset.get("facets", {}).values()


def assert_valid(events: list[dict[str, Any]]) -> None:
    """Validate each event against the RunEvent schema and each facet against its own."""
    assert events
    for event in events:
        RUN_EVENT.validate(event)
        for facet in _facets(event):
            _validator(facet["_schemaURL"]).validate(facet)


def test_the_format_checks_are_real_and_a_bad_event_fails() -> None:
    assert {"date-time", "uuid", "uri"} <= set(FORMATS.checkers)
    good = {"eventType": "START", "eventTime": "2026-01-01T00:00:00+00:00",
            "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "n", "name": "j"},
            "producer": PRODUCER, "schemaURL": OPENLINEAGE_SCHEMA_URL}
    RUN_EVENT.validate(good)
    for field, bad in [("eventTime", "2026-01-01 00:00:00"), ("eventTime", "2026-01-01T00:00"),
                       ("run", {"runId": uuid.uuid4().hex}), ("producer", "not a uri"),
                       ("eventType", "RUNNING")]:
        with pytest.raises(jsonschema.ValidationError):
            RUN_EVENT.validate({**good, field: bad})


# -- pipelines that read a snapshot, and one that fails --------------------------------------

WORKSPACE: dict[str, Workspace] = {}


@task
def load(ref: str) -> list[int]:
    return [int(x) for x in WORKSPACE["ws"].datasets.read(ref).column("x").to_pylist()]


@task
def features(values: list[int]) -> bytes:
    return bytes(v % 256 for v in values) * 30_000  # over the inline limit: an artifact


@task
def total(values: list[int], blob: bytes) -> int:
    return sum(values) + len(blob)


@task
def explode(values: list[int]) -> int:
    raise ValueError(f"boom: the model diverged after {len(values)} rows")


@task
def report(value: int) -> str:
    return f"total {value}"


@pipeline
def orders_total(ref: str) -> int:
    values = load(ref)
    return total(values, features(values))


@pipeline
def orders_broken(ref: str) -> str:
    return report(explode(load(ref)))


@pytest.fixture
def snapshot_ref(ws: Workspace) -> Iterator[str]:
    frame = pd.DataFrame({"x": [1, 2, 3], "region": ["EU", "US", "EU"]})
    WORKSPACE["ws"] = ws
    try:
        yield ws.datasets.snapshot(frame, "orders").version.ref
    finally:
        WORKSPACE.clear()


def _run(ws: Workspace, definition: Any, ref: str) -> RunResult:
    return ws.pipelines.run(definition, {"ref": ref})


def _by_job(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    jobs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        jobs.setdefault(event["job"]["name"], []).append(event)
    return jobs


def test_every_event_of_a_run_is_valid_and_each_run_starts_and_ends(
        ws: Workspace, snapshot_ref: str) -> None:
    result = _run(ws, orders_total, snapshot_ref)
    assert result.succeeded
    events = openlineage_run_events(ws.store, result.run.id)
    assert_valid(events)
    jobs = _by_job(events)
    assert set(jobs) == {"orders_total", "orders_total.load", "orders_total.features",
                         "orders_total.total"}
    assert all([e["eventType"] for e in runs] == ["START", "COMPLETE"] for runs in jobs.values())
    assert events[0]["job"]["name"] == events[-1]["job"]["name"] == "orders_total"
    times = [datetime.fromisoformat(e["eventTime"]) for e in events]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    assert {e["producer"] for e in events} == {PRODUCER}
    assert {e["job"]["namespace"] for e in events} == {"loopline"}


def test_task_runs_name_the_pipeline_run_as_their_parent(
        ws: Workspace, snapshot_ref: str) -> None:
    result = _run(ws, orders_total, snapshot_ref)
    events = openlineage_run_events(ws.store, result.run.id, namespace="team-a")
    pipeline_run_id = str(uuid.UUID(hex=result.run.id))
    assert events[0]["run"]["runId"] == pipeline_run_id
    tasks = [e for e in events if e["job"]["name"] != "orders_total"]
    assert len(tasks) == 6
    for event in tasks:
        parent = event["run"]["facets"]["parent"]
        assert parent["run"] == {"runId": pipeline_run_id}
        assert parent["job"] == {"namespace": "team-a", "name": "orders_total"}
    assert len({e["run"]["runId"] for e in tasks}) == 3


def test_the_snapshot_a_task_read_is_its_input_with_schema_and_version(
        ws: Workspace, snapshot_ref: str) -> None:
    result = _run(ws, orders_total, snapshot_ref)
    jobs = _by_job(openlineage_run_events(ws.store, result.run.id))
    version = ws.datasets.get(snapshot_ref)
    for event in jobs["orders_total.load"]:
        [read] = event["inputs"]
        assert read["namespace"] == "loopline"
        assert read["name"] == f"dataset_snapshot:{snapshot_ref}" == "dataset_snapshot:orders@1"
        assert [f["name"] for f in read["facets"]["schema"]["fields"]] == ["x", "region"]
        assert read["facets"]["version"]["datasetVersion"] == version.content_hash
    start, complete = jobs["orders_total.features"]
    assert start["outputs"] == []
    [written] = complete["outputs"]
    assert written["name"].startswith("artifact:")
    assert written["facets"]["version"]["datasetVersion"] == written["name"][len("artifact:"):]
    # total got the others' outputs through the run, not as datasets: no task or code input
    assert all(not d["name"].startswith(("task_run:", "code_version:", "environment:"))
               for e in jobs["orders_total.total"] for d in e["inputs"])


def test_a_failed_task_ends_in_fail_with_its_error_and_its_dependant_is_aborted(
        ws: Workspace, snapshot_ref: str) -> None:
    result = _run(ws, orders_broken, snapshot_ref)
    assert not result.succeeded
    events = openlineage_run_events(ws.store, result.run.id)
    assert_valid(events)
    ends = {name: runs[-1] for name, runs in _by_job(events).items()}
    assert {name: e["eventType"] for name, e in ends.items()} == {
        "orders_broken": "FAIL", "orders_broken.load": "COMPLETE",
        "orders_broken.explode": "FAIL", "orders_broken.report": "ABORT"}
    message = ends["orders_broken.explode"]["run"]["facets"]["errorMessage"]["message"]
    assert "boom: the model diverged after 3 rows" in message
    assert "errorMessage" in ends["orders_broken"]["run"]["facets"]
    assert "errorMessage" not in ends["orders_broken.report"]["run"]["facets"]


def test_a_run_is_found_by_its_uuid_text_and_an_unknown_one_is_not_found(
        ws: Workspace, snapshot_ref: str) -> None:
    result = _run(ws, orders_total, snapshot_ref)
    by_hex = openlineage_run_events(ws.store, result.run.id)
    assert openlineage_run_events(ws.store, str(uuid.UUID(hex=result.run.id))) == by_hex
    with pytest.raises(NotFoundError, match="pipeline run"):
        openlineage_run_events(ws.store, uuid.uuid4().hex)
    with pytest.raises(InvalidArgumentError, match="namespace"):
        openlineage_run_events(ws.store, result.run.id, namespace=" ")


def test_a_snapshot_is_made_by_its_own_job_from_its_source(
        ws: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text("x,region\n1,EU\n2,US\n")
    ref = ws.datasets.snapshot(source, "orders").version.ref
    events = openlineage_snapshot_events(ws.store, ref)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[1]["job"]["name"] == "snapshot.orders"
    assert [d["name"] for d in events[1]["inputs"]] == [f"source:{source}"]
    assert [d["name"] for d in events[1]["outputs"]] == [f"dataset_snapshot:{ref}"]
    with pytest.raises(NotFoundError):
        openlineage_snapshot_events(ws.store, "orders@9")


def test_all_events_cover_snapshots_and_ended_runs_oldest_first_and_since_filters(
        ws: Workspace, snapshot_ref: str) -> None:
    first = _run(ws, orders_total, snapshot_ref)
    second = _run(ws, orders_broken, snapshot_ref)
    events = list(openlineage_all_events(ws.store))
    assert_valid(events)
    runs = [e["run"]["runId"] for e in events if e["job"]["name"] in {
        "orders_total", "orders_broken"}]
    assert runs == [str(uuid.UUID(hex=r.run.id)) for r in (first, first, second, second)]
    assert events[0]["job"]["name"] == "snapshot.orders"
    assert len(events) == 2 + 8 + 8
    assert second.run.finished_at is not None
    later = list(openlineage_all_events(ws.store, since=second.run.finished_at))
    assert {e["job"]["name"].split(".")[0] for e in later} == {"orders_broken"}
    assert list(openlineage_all_events(
        ws.store, since=second.run.finished_at + timedelta(seconds=1))) == []
    with pytest.raises(InvalidArgumentError, match="since"):
        openlineage_all_events(ws.store, since=datetime(2026, 1, 1))  # noqa: DTZ001


# -- sinks: a local HTTP endpoint and a file -------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    server: _LineageServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fail = len(self.server.received) >= self.server.fail_after
        if not fail:
            self.server.received.append((self.path, self.headers.get("Authorization"),
                                         json.loads(body)))
        self.send_response(500 if fail else 201)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _LineageServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Collector)
        self.received: list[tuple[str, str | None, Any]] = []
        self.fail_after = 1_000_000

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def lineage_server() -> Iterator[_LineageServer]:
    server = _LineageServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_endpoint_receives_exactly_the_exported_events(
        ws: Workspace, snapshot_ref: str, lineage_server: _LineageServer) -> None:
    events = openlineage_run_events(ws.store, _run(ws, orders_total, snapshot_ref).run.id)
    result = export_to_url(iter(events), lineage_server.url, api_key="k-123")
    assert result.ok and result.sent == len(events) == 8
    assert result.target == f"{lineage_server.url}/api/v1/lineage"
    assert [body for _, _, body in lineage_server.received] == events
    assert {(path, auth) for path, auth, _ in lineage_server.received} == {
        ("/api/v1/lineage", "Bearer k-123")}


def test_an_export_stops_at_the_first_failure_and_counts_what_was_sent(
        lineage_server: _LineageServer) -> None:
    lineage_server.fail_after = 2
    events = [{"n": i} for i in range(5)]
    result = export_to_url(events, f"{lineage_server.url}/ol?token=s3cr3t", endpoint="")
    assert (result.ok, result.sent) == (False, 2)
    assert result.error is not None and "500" in result.error and "s3cr3t" not in result.error
    assert len(lineage_server.received) == 2


def test_a_forbidden_url_or_endpoint_is_refused_before_any_event_is_read() -> None:
    def never() -> Iterator[dict[str, Any]]:
        raise AssertionError("events were read")
        yield {}

    for url in ("ftp://marquez.example/", "http://169.254.169.254/", "http://u:p@h.example/"):
        with pytest.raises(InvalidArgumentError, match="url"):
            export_to_url(never(), url)
    with pytest.raises(InvalidArgumentError, match="endpoint"):
        export_to_url(never(), "http://h.example", endpoint="../admin")
    with pytest.raises(InvalidArgumentError, match="api_key"):
        export_to_url(never(), "http://h.example", api_key="a\nb")
    assert str(endpoint_url("http://h.example/base/?x=1", "/api/v1/lineage")) == (
        "http://h.example/base/api/v1/lineage?x=1")


def test_a_file_export_round_trips_and_leaves_no_temporary_file(
        ws: Workspace, snapshot_ref: str, tmp_path: Path) -> None:
    events = openlineage_run_events(ws.store, _run(ws, orders_broken, snapshot_ref).run.id)
    out = tmp_path / "export" / "lineage.jsonl"
    out.parent.mkdir()
    out.write_text("old content\n")
    result = export_to_file(iter(events), out)
    assert result.ok and result.sent == len(events) == 8 and result.target == str(out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == events
    assert [p.name for p in out.parent.iterdir()] == ["lineage.jsonl"]
    with pytest.raises(InvalidArgumentError, match="path"):
        export_to_file(events, tmp_path / "missing" / "x.jsonl")


def test_a_failing_event_source_leaves_the_old_file_in_place(tmp_path: Path) -> None:
    out = tmp_path / "lineage.jsonl"
    out.write_text("old content\n")

    def broken() -> Iterator[dict[str, Any]]:
        yield {"n": 1}
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        export_to_file(broken(), out)
    assert out.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lineage.jsonl"]


# -- the CLI, in process ---------------------------------------------------------------------


def _cli(ws: Workspace, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from loopline.cli.main import run

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run(["--workspace", str(ws.root), "--db-url", ws.settings.db_url, "lineage",
             "openlineage", *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, " ".join(err.split())  # rich folds long lines


def _squeezed(text: str) -> str:
    return "".join(text.split())


def test_the_cli_prints_a_runs_events_as_json_lines(
        ws: Workspace, snapshot_ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(ws, orders_total, snapshot_ref)
    code, out, _ = _cli(ws, capsys, "--run", result.run.id, "--namespace", "team-a")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert_valid(events)
    assert events == openlineage_run_events(ws.store, result.run.id, "team-a")


def test_the_cli_writes_a_file_and_posts_with_the_key_from_the_environment(
        ws: Workspace, snapshot_ref: str, capsys: pytest.CaptureFixture[str],
        lineage_server: _LineageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(ws, orders_total, snapshot_ref)
    out_file = tmp_path / "all.jsonl"
    code, out, _ = _cli(ws, capsys, "--out", str(out_file), "--since", "2000-01-01")
    # rich folds a long path wherever the console width falls, so compare without whitespace
    assert code == 0 and _squeezed(f"10 OpenLineage events written to {out_file}") in \
        _squeezed(out)
    monkeypatch.setenv("MARQUEZ_KEY", "k-env")
    code, out, _ = _cli(ws, capsys, "--url", lineage_server.url, "--api-key-env", "MARQUEZ_KEY")
    assert code == 0 and _squeezed(f"sent to {lineage_server.url}/api/v1/lineage") in \
        _squeezed(out)
    assert [body for _, _, body in lineage_server.received] == [
        json.loads(line) for line in out_file.read_text().splitlines()]
    assert {auth for _, auth, _ in lineage_server.received} == {"Bearer k-env"}


def test_the_cli_refuses_bad_flags_urls_and_unknown_runs(
        ws: Workspace, capsys: pytest.CaptureFixture[str], lineage_server: _LineageServer,
        tmp_path: Path) -> None:
    code, _, err = _cli(ws, capsys, "--out", str(tmp_path / "x"), "--url", lineage_server.url)
    assert code == 5 and "one destination" in err
    code, _, err = _cli(ws, capsys, "--url", "file:///etc/passwd")
    assert code == 5 and "http:// or https://" in err
    code, _, err = _cli(ws, capsys, "--url", lineage_server.url, "--api-key-env", "NOT_SET_X")
    assert code == 5 and "NOT_SET_X" in err
    code, _, err = _cli(ws, capsys, "--since", "yesterday")
    assert code == 5 and "--since" in err
    code, _, err = _cli(ws, capsys, "--run", uuid.uuid4().hex)
    assert code == 3 and "not found" in err
    ws.datasets.snapshot(pd.DataFrame({"x": [1]}), "tiny")  # something to send
    lineage_server.fail_after = 0
    code, _, err = _cli(ws, capsys, "--url", lineage_server.url)
    assert code == 8 and "stopped after 0 events" in err and "500" in err
