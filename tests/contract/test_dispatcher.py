"""The dispatcher on every backend: at-least-once delivery in order, per-subscriber retries,
and durable cursors shared by dispatchers in other processes."""

from __future__ import annotations

import threading
import time

import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.core.events import Event
from loopline.loop import Dispatcher
from loopline.store import MetadataStore


def _emit(store: MetadataStore, count: int, type_: str = "custom.made") -> None:
    for index in range(count):
        with store.write("maker") as uow:
            uow.emit(type_, f"thing:{index}", {"i": index})


def test_each_subscriber_gets_every_wanted_event_once_in_order(store: MetadataStore) -> None:
    _emit(store, 3, "custom.made")
    _emit(store, 2, "custom.other")
    everything: list[int] = []
    made: list[str] = []
    dispatcher = Dispatcher(store.event_source(), batch_size=2)
    dispatcher.subscribe("all", lambda e: everything.append(e.seq))
    dispatcher.subscribe("made-only", lambda e: made.append(e.subject), {"custom.made"})
    assert dispatcher.run_once().handled == 8
    assert everything == sorted(everything) and len(everything) == 5
    assert made == ["thing:0", "thing:1", "thing:2"]
    assert dispatcher.run_once().handled == 0
    last = store.events.last_seq()
    assert store.events.cursor("all") == last
    assert store.events.cursor("made-only") == last, "skipped types still move the cursor"


def test_a_failing_handler_is_retried_and_does_not_hold_up_others(
        store: MetadataStore) -> None:
    _emit(store, 3)
    attempts: list[int] = []
    healthy: list[int] = []

    def flaky(event: Event) -> None:
        attempts.append(event.payload["i"])
        if event.payload["i"] == 1 and attempts.count(1) == 1:
            raise ValueError("downstream busy")

    dispatcher = Dispatcher(store.event_source(), max_backoff=0.0)
    dispatcher.subscribe("flaky", flaky)
    dispatcher.subscribe("healthy", lambda e: healthy.append(e.payload["i"]))
    first = dispatcher.run_once()
    assert "flaky" in first.failed and "downstream busy" in first.failed["flaky"]
    assert healthy == [0, 1, 2]
    assert store.events.cursor("flaky") == store.events.read_after(0)[0].seq
    time.sleep(0.01)
    dispatcher.run_once()
    assert attempts == [0, 1, 1, 2], "the failed event is redelivered, earlier ones are not"


def test_a_new_dispatcher_resumes_from_the_durable_cursor(store: MetadataStore) -> None:
    _emit(store, 4)
    first: list[int] = []
    one = Dispatcher(store.event_source())
    one.subscribe("indexer", lambda e: first.append(e.payload["i"]))
    one.run_once()
    _emit(store, 1)
    second: list[int] = []
    two = Dispatcher(store.event_source())
    two.subscribe("indexer", lambda e: second.append(e.payload["i"]))
    two.run_once()
    assert first == [0, 1, 2, 3]
    assert second == [0], "only the event committed after the first dispatcher stopped"


def test_run_delivers_events_committed_while_it_waits(store: MetadataStore) -> None:
    received: list[int] = []
    done = threading.Event()

    def handle(event: Event) -> None:
        received.append(event.payload["i"])
        if len(received) == 3:
            done.set()

    source = store.event_source(poll_interval=0.05)
    dispatcher = Dispatcher(source)
    dispatcher.subscribe("live", handle)
    stop = threading.Event()
    runner = threading.Thread(target=dispatcher.run, args=(stop, 5.0))
    runner.start()
    try:
        time.sleep(0.2)
        _emit(store, 3)
        assert done.wait(10), "events committed during a wait must be delivered"
    finally:
        stop.set()
        runner.join(timeout=10)
        source.close()
    assert received == [0, 1, 2]


def test_bad_subscriptions_are_refused(store: MetadataStore) -> None:
    dispatcher = Dispatcher(store.event_source())
    dispatcher.subscribe("one", lambda e: None)
    with pytest.raises(InvalidArgumentError, match="already subscribed"):
        dispatcher.subscribe("one", lambda e: None)
    with pytest.raises(InvalidArgumentError, match="subscriber"):
        dispatcher.subscribe("no spaces allowed", lambda e: None)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        Dispatcher(store.event_source(), batch_size=0)
