"""The event outbox on every backend: events commit with their transaction, read in order,
and durable cursors move forward only."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.store import MetadataStore


def test_events_and_audit_entries_commit_together(store: MetadataStore) -> None:
    with store.write("alice") as uow:
        uow.emit("custom.thing_made", "thing:1", {"n": 1})
        uow.audit("thing.make", "thing:1", None, {"n": 1})
    events = store.events.read_after(0)
    assert [(e.type, e.subject, dict(e.payload), e.actor) for e in events] == [
        ("custom.thing_made", "thing:1", {"n": 1}, "alice")]
    assert store.audit.head()[0] == 1


def test_a_failed_transaction_leaves_no_event_and_no_audit_entry(store: MetadataStore) -> None:
    with pytest.raises(RuntimeError), store.write("alice") as uow:
        uow.emit("custom.thing_made", "thing:1")
        uow.audit("thing.make", "thing:1")
        raise RuntimeError("the state change failed")
    assert store.events.read_after(0) == []
    assert store.audit.head()[0] == 0
    assert store.audit.verify().ok


def test_read_after_returns_events_in_seq_order_with_type_filter(store: MetadataStore) -> None:
    for index in range(5):
        with store.write("bob") as uow:
            uow.emit("custom.even" if index % 2 == 0 else "custom.odd", f"s{index}")
    events = store.events.read_after(0)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.subject for e in store.events.read_after(events[1].seq)] == ["s2", "s3", "s4"]
    assert [e.subject for e in store.events.read_after(0, types=["custom.odd"])] == ["s1", "s3"]
    assert [e.subject for e in store.events.read_after(0, limit=2)] == ["s0", "s1"]


@pytest.mark.parametrize(("payload", "field"), [
    ({"x": float("nan")}, "event.payload"),
    ({"x": object()}, "event.payload"),
])
def test_unserialisable_payload_is_refused_naming_the_field(
        store: MetadataStore, payload: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field), store.write("a") as uow:
        uow.emit("custom.bad", "s", payload)
    assert store.events.count() == 0


def test_empty_type_and_bad_limits_are_refused(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgumentError, match="event.type"), store.write("a") as uow:
        uow.emit("", "s")
    with pytest.raises(InvalidArgumentError, match="limit"):
        store.events.read_after(0, limit=0)
    with pytest.raises(InvalidArgumentError, match="position"):
        store.events.read_after(-1)


def test_cursor_moves_by_compare_and_set_and_never_backwards(store: MetadataStore) -> None:
    assert store.events.cursor("indexer") == 0
    assert store.events.advance("indexer", 0, 3)
    assert not store.events.advance("indexer", 0, 5), "stale expected position must lose"
    assert store.events.cursor("indexer") == 3
    with pytest.raises(InvalidArgumentError, match="cannot move back"):
        store.events.advance("indexer", 3, 2)
    with pytest.raises(InvalidArgumentError, match="subscriber"):
        store.events.cursor("../etc")
    assert [c.subscriber for c in store.events.cursors()] == ["indexer"]


def test_racing_consumers_creating_one_cursor_let_exactly_one_win(store: MetadataStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        results.append(store.events.advance("racer", 0, 7))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    assert store.events.cursor("racer") == 7


def test_waiter_wakes_on_commit_or_times_out(store: MetadataStore) -> None:
    source = store.event_source(poll_interval=0.05)
    try:
        timer = threading.Timer(0.2, lambda: _emit_one(store))
        started = time.monotonic()
        timer.start()
        while not store.events.read_after(0) and time.monotonic() - started < 10:
            source.wait_for_events(timeout=5)
        timer.join()
        assert len(store.events.read_after(0)) == 1
        assert time.monotonic() - started < 5, "a commit must wake the waiter, not the timeout"
    finally:
        source.close()


def _emit_one(store: MetadataStore) -> None:
    with store.write("timer") as uow:
        uow.emit("custom.tick", "clock")



@pytest.mark.postgres
@pytest.mark.skipif("LOOPLINE_TEST_POSTGRES_URL" not in os.environ,
                    reason="LOOPLINE_TEST_POSTGRES_URL is not set (CI sets it)")
def test_postgres_sessions_insist_on_synchronous_commit(postgres_url: str) -> None:
    import sqlalchemy as sa

    off = f"{postgres_url}%20-csynchronous_commit%3Doff"  # the user's options try to turn it off
    store = MetadataStore.open(off, check_schema=False)
    try:
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        store.close()


def test_sqlite_runs_in_wal_with_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'pragmas.db'}", check_schema=False)
    try:
        with store.engine.connect() as connection:
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
        assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                          "busy_timeout": 30_000}
    finally:
        store.close()
