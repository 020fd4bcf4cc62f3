"""Named leases on every backend: one holder at a time, refused until expiry, renewed by the
holder, freed by release, and exactly one winner among concurrent acquirers; a server's duty
ticks only in the process holding its lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from loopline.api.background import DutyLeases
from loopline.core.clock import ManualClock
from loopline.core.errors import InvalidArgumentError
from loopline.loop.scheduler import Duty
from loopline.store import MetadataStore
from loopline.store.lease_records import current, release, try_acquire

TTL = timedelta(seconds=30)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def leases(db_url: str, clock: ManualClock) -> Iterator[MetadataStore]:
    """A migrated store whose clock moves only when the test says."""
    opened = MetadataStore.open(db_url, clock=clock, check_schema=False)
    opened.upgrade()
    try:
        yield opened
    finally:
        opened.close()


def test_first_acquire_takes_a_free_lease_until_now_plus_ttl(
        leases: MetadataStore, clock: ManualClock) -> None:
    assert current(leases, "duty:rollouts") is None
    assert try_acquire(leases, "duty:rollouts", "a", TTL)
    lease = current(leases, "duty:rollouts")
    assert lease is not None
    assert (lease.name, lease.holder) == ("duty:rollouts", "a")
    assert lease.acquired_at == clock.now()
    assert lease.expires_at == clock.now() + TTL


def test_another_holder_is_refused_until_the_lease_expires_then_takes_it(
        leases: MetadataStore, clock: ManualClock) -> None:
    assert try_acquire(leases, "duty:x", "a", TTL)
    clock.advance(TTL - timedelta(seconds=1))
    assert not try_acquire(leases, "duty:x", "b", TTL)
    lease = current(leases, "duty:x")
    assert lease is not None and lease.holder == "a"  # the refusal changed nothing
    clock.advance(timedelta(seconds=1))  # exactly at expiry: free
    assert try_acquire(leases, "duty:x", "b", TTL)
    taken = current(leases, "duty:x")
    assert taken is not None
    assert (taken.holder, taken.acquired_at, taken.expires_at) == (
        "b", clock.now(), clock.now() + TTL)
    assert not try_acquire(leases, "duty:x", "a", TTL)  # the old holder lost it


def test_renewal_by_the_holder_extends_the_lease_and_keeps_when_it_was_taken(
        leases: MetadataStore, clock: ManualClock) -> None:
    taken_at = clock.now()
    assert try_acquire(leases, "duty:x", "a", TTL)
    for _ in range(3):  # each renewal before expiry keeps it past the first ttl
        clock.advance(TTL / 2)
        assert try_acquire(leases, "duty:x", "a", TTL)
        assert not try_acquire(leases, "duty:x", "b", TTL)
    lease = current(leases, "duty:x")
    assert lease is not None
    assert (lease.holder, lease.acquired_at, lease.expires_at) == (
        "a", taken_at, clock.now() + TTL)


def test_release_by_the_holder_frees_the_lease_at_once(leases: MetadataStore) -> None:
    assert try_acquire(leases, "duty:x", "a", TTL)
    release(leases, "duty:x", "a")
    assert current(leases, "duty:x") is None
    assert try_acquire(leases, "duty:x", "b", TTL)


def test_release_by_another_holder_or_of_a_missing_lease_changes_nothing(
        leases: MetadataStore) -> None:
    release(leases, "duty:none", "a")  # nothing to release: no error
    assert try_acquire(leases, "duty:x", "a", TTL)
    release(leases, "duty:x", "b")
    lease = current(leases, "duty:x")
    assert lease is not None and lease.holder == "a"
    assert not try_acquire(leases, "duty:x", "b", TTL)


def test_leases_of_different_names_are_independent(leases: MetadataStore) -> None:
    assert try_acquire(leases, "duty:a", "one", TTL)
    assert try_acquire(leases, "duty:b", "two", TTL)
    assert not try_acquire(leases, "duty:a", "two", TTL)
    assert not try_acquire(leases, "duty:b", "one", TTL)


def test_an_expired_lease_is_still_shown_as_stored(
        leases: MetadataStore, clock: ManualClock) -> None:
    assert try_acquire(leases, "duty:x", "a", TTL)
    clock.advance(TTL * 2)
    lease = current(leases, "duty:x")
    assert lease is not None and lease.holder == "a" and lease.expires_at < clock.now()


@pytest.mark.parametrize(("name", "holder", "field"), [
    ("", "a", "lease name"), ("x" * 129, "a", "lease name"),
    ("duty:x", "", "lease holder"), ("duty:x", "h" * 129, "lease holder")])
def test_a_blank_or_too_long_name_or_holder_is_refused_naming_it(
        leases: MetadataStore, name: str, holder: str, field: str) -> None:
    for call in (lambda: try_acquire(leases, name, holder, TTL),
                 lambda: release(leases, name, holder)):
        with pytest.raises(InvalidArgumentError) as raised:
            call()
        assert raised.value.field == field


@pytest.mark.parametrize("expired", [False, True], ids=["free", "expired"])
def test_concurrent_acquirers_of_a_free_or_expired_lease_have_exactly_one_winner(
        leases: MetadataStore, clock: ManualClock, expired: bool) -> None:
    if expired:
        assert try_acquire(leases, "duty:race", "old", TTL)
        clock.advance(TTL)
    holders = [f"holder-{i}" for i in range(8)]
    start = threading.Barrier(len(holders))

    def acquire(holder: str) -> bool:
        start.wait(10)
        return try_acquire(leases, "duty:race", holder, TTL)

    with ThreadPoolExecutor(len(holders)) as pool:
        won = dict(zip(holders, pool.map(acquire, holders), strict=True))  # raises what raised
    winners = [holder for holder, took in won.items() if took]
    assert len(winners) == 1
    lease = current(leases, "duty:race")
    assert lease is not None and lease.holder == winners[0]


def test_a_guarded_duty_ticks_only_while_its_holder_has_the_lease(
        leases: MetadataStore, clock: ManualClock) -> None:
    ticks: list[str] = []
    one, two = DutyLeases(leases, "one", TTL), DutyLeases(leases, "two", TTL)
    first = one.guard(Duty("rollouts", lambda: ticks.append("one")))
    second = two.guard(Duty("rollouts", lambda: ticks.append("two")))
    for _ in range(3):
        first.tick()
        second.tick()
        clock.advance(TTL / 2)  # within the lease: each tick of its holder renews it
    assert ticks == ["one"] * 3
    assert (one.held(), two.held()) == (["duty:rollouts"], [])
    clock.advance(TTL)  # the holder stopped ticking and renewing: the lease expired
    second.tick()
    first.tick()
    assert ticks[3:] == ["two"]
    one.renew()  # finds it lost
    assert one.held() == []


def test_released_duty_leases_are_taken_over_at_once(leases: MetadataStore) -> None:
    one, two = DutyLeases(leases, "one", TTL), DutyLeases(leases, "two", TTL)
    assert one.hold("alerts") and one.hold("playbooks")
    assert not two.hold("alerts")
    one.release_all()
    assert one.held() == [] and current(leases, "duty:alerts") is None
    assert two.hold("alerts") and two.hold("playbooks")
