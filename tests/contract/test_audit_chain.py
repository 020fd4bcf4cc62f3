"""The audit chain on every backend: concurrent appenders keep it whole, and any edit, deletion,
insertion or reordering makes `loopline audit verify` fail naming the entry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from loopline.app import Workspace
from loopline.cli.main import run
from loopline.core.errors import InvalidArgumentError
from loopline.store import AuditFilter, MetadataStore

APPENDS_PER_PROCESS = 150

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from loopline.store import MetadataStore
    url, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = MetadataStore.open(url)
    (go.parent / f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.005)
    for i in range(count):
        with store.write(name) as uow:
            uow.emit("custom.appended", f"{name}:{i}", {"i": i})
            uow.audit("custom.append", f"{name}:{i}", None, {"i": i})
    store.close()
""")


def _start_together(folder: Path, go: Path, workers: list[subprocess.Popen[bytes]]) -> None:
    """Release the writers only once every one has connected, so they really overlap."""
    deadline = time.monotonic() + 60
    while len(list(folder.glob("ready-*"))) < len(workers):
        assert time.monotonic() < deadline, "writers did not get ready"
        assert all(w.poll() is None for w in workers), "a writer died before starting"
        time.sleep(0.01)
    go.touch()


def test_two_processes_appending_at_once_lose_nothing_and_keep_the_chain(
        store: MetadataStore, tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, store.url, name,
                          str(APPENDS_PER_PROCESS), str(go)])
        for name in ("writer-a", "writer-b")
    ]
    _start_together(tmp_path, go, workers)
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    events = store.events.read_after(0, limit=10_000)
    assert len(events) == 2 * APPENDS_PER_PROCESS
    assert len({e.subject for e in events}) == 2 * APPENDS_PER_PROCESS
    assert {e.actor for e in events} == {"writer-a", "writer-b"}
    for name in ("writer-a", "writer-b"):  # each writer's own events stay in its order
        mine = [e.payload["i"] for e in events if e.actor == name]
        assert mine == list(range(APPENDS_PER_PROCESS))
    report = store.audit.verify()
    assert report.ok, report.first_break
    assert report.entries == 2 * APPENDS_PER_PROCESS


def test_entries_filter_by_actor_action_and_subject(store: MetadataStore) -> None:
    for actor, action in (("ann", "model.register"), ("ben", "model.register"),
                          ("ann", "model.delete")):
        with store.write(actor) as uow:
            uow.audit(action, f"model:{actor}", {"state": "a"}, {"state": "b"})
    assert [e.action for e in store.audit.entries(AuditFilter(actor="ann"))] == [
        "model.delete", "model.register"]
    assert len(store.audit.entries(AuditFilter(action="model.register"))) == 2
    only = store.audit.entries(AuditFilter(subject="model:ben"))
    assert [(e.before, e.after) for e in only] == [({"state": "a"}, {"state": "b"})]
    oldest = store.audit.entries(AuditFilter(newest_first=False, limit=1))
    assert oldest[0].seq == 1
    second_at = store.audit.entries(AuditFilter(newest_first=False))[1].at
    assert [e.seq for e in store.audit.entries(AuditFilter(since=second_at))] == [3, 2]
    assert [e.seq for e in store.audit.entries(AuditFilter(until=second_at))] == [1]
    with pytest.raises(InvalidArgumentError, match="limit"):
        store.audit.entries(AuditFilter(limit=0))


def test_audit_fields_are_checked_before_anything_is_written(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="audit.action"), store.write("a") as uow:
        uow.audit("", "s")
    with pytest.raises(InvalidArgumentError, match="audit.after"), store.write("a") as uow:
        uow.audit("x.y", "s", None, {"bad": float("inf")})
    assert store.audit.head()[0] == 0


@pytest.fixture
def audited(db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace on each backend with five audited artifacts."""
    workspace = Workspace.init(tmp_path, overrides={"db_url": db_url})
    for index in range(5):
        workspace.artifacts.put_bytes(f"artifact {index}".encode())
    try:
        yield workspace
    finally:
        workspace.close()


def _verify_cli(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run(["--workspace", str(workspace.root), "--db-url", workspace.store.url,
             "audit", "verify"])
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def _sql(workspace: Workspace, statement: str, **params: object) -> None:
    with workspace.store.engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def test_intact_chain_verifies(audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _verify_cli(audited, capsys)
    assert code == 0
    # workspace.init, db.upgrade, then five artifact.put
    assert "7 entries" in output


def test_edited_entry_is_named(audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(audited, "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 3")
    code, output = _verify_cli(audited, capsys)
    assert code != 0
    assert "entry #3" in output and "edited" in output


def test_deleted_entry_is_named(audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(audited, "DELETE FROM audit_entries WHERE seq = 4")
    code, output = _verify_cli(audited, capsys)
    assert code != 0
    assert "entry #4" in output and "deleted" in output


def test_deleted_last_entry_is_caught_by_the_head(
        audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    last, _ = audited.store.audit.head()
    _sql(audited, "DELETE FROM audit_entries WHERE seq = :seq", seq=last)
    code, output = _verify_cli(audited, capsys)
    assert code != 0
    assert f"entry #{last}" in output


def test_reordered_entries_are_named(audited: Workspace,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _sql(audited, "UPDATE audit_entries SET seq = -1 WHERE seq = 2")
    _sql(audited, "UPDATE audit_entries SET seq = 2 WHERE seq = 3")
    _sql(audited, "UPDATE audit_entries SET seq = 3 WHERE seq = -1")
    code, output = _verify_cli(audited, capsys)
    assert code != 0
    assert "entry #2" in output and "reordered" in output


def test_inserted_entry_is_named(audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    last, _ = audited.store.audit.head()
    for seq in range(last, 2, -1):  # make room after entry #2, highest first to keep seq unique
        _sql(audited, "UPDATE audit_entries SET seq = :new WHERE seq = :old",
             new=seq + 1, old=seq)
    _sql(audited, "INSERT INTO audit_entries (seq, id, at, actor, action, subject, before,"
                  " after, prev_hash, hash) SELECT 3, 'forged', at, 'mallory', 'artifact.put',"
                  " subject, before, after, hash, hash FROM audit_entries WHERE seq = 2")
    _sql(audited, "UPDATE audit_head SET seq = :seq", seq=last + 1)
    code, output = _verify_cli(audited, capsys)
    assert code != 0
    assert "entry #3" in output and "forged" in output


def test_a_cursor_tailing_concurrent_writers_sees_every_event_once_in_order(
        store: MetadataStore, tmp_path: Path) -> None:
    # If seq order could differ from commit order, a tailing cursor would step over an event
    # that commits late; this is the outbox's core promise, checked under real contention.
    from loopline.loop import Dispatcher

    seen: list[int] = []
    go = tmp_path / "go"
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, store.url, name,
                          str(APPENDS_PER_PROCESS), str(go)])
        for name in ("tail-a", "tail-b")
    ]
    with Dispatcher(store.event_source(), batch_size=7) as dispatcher:
        dispatcher.subscribe("tail", lambda event: seen.append(event.seq))
        _start_together(tmp_path, go, workers)
        while any(worker.poll() is None for worker in workers):
            dispatcher.run_once()
        assert all(worker.wait(timeout=120) == 0 for worker in workers)
        dispatcher.run_once()
    committed = [e.seq for e in store.events.read_after(0, limit=10_000)]
    assert len(committed) == 2 * APPENDS_PER_PROCESS
    assert seen == committed


def test_a_summary_edited_into_non_json_is_named_not_a_crash(
        audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(audited, "UPDATE audit_entries SET after = '{not json' WHERE seq = 3")
    code, output = _verify_cli(audited, capsys)
    assert code == 6
    assert "entry #3" in output and "edited" in output
    listed = audited.store.audit.entries()
    assert any(e.after == {"__undecodable__": "{not json"} for e in listed)


def test_a_missing_head_is_a_break_and_status_reports_it(
        audited: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(audited, "DELETE FROM audit_head")
    code, output = _verify_cli(audited, capsys)
    assert code == 6 and "head record is missing" in output
    from loopline.app import workspace_status

    checks = {c.name: c for c in workspace_status(audited)}
    assert not checks["audit log"].healthy
