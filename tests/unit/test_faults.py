"""Fault injection settings: parsing, bounds, and reproducible choices."""

from __future__ import annotations

import pytest

from loopline.core.errors import InvalidArgumentError
from loopline.pipelines import FaultInjector, InjectedFault, parse_faults


def test_faults_parse_from_settings_text() -> None:
    assert parse_faults("train=0.3, load = 1 ,") == {"train": 0.3, "load": 1.0}
    assert parse_faults("") == {}


@pytest.mark.parametrize("text", ["train", "train=", "=0.2", "train=2", "train=-0.1", "t=x"])
def test_malformed_faults_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="faults"):
        parse_faults(text)


def test_the_same_seed_injects_the_same_faults() -> None:
    def pattern(seed: int) -> list[bool]:
        injector = FaultInjector({"t": 0.5}, seed=seed)
        outcomes = []
        for _ in range(40):
            try:
                injector.check("t", "t")
                outcomes.append(False)
            except InjectedFault:
                outcomes.append(True)
        return outcomes

    assert pattern(3) == pattern(3)
    assert 5 < sum(pattern(3)) < 35
    FaultInjector({"other": 1.0}).check("t", "t")  # unnamed tasks never fail
    with pytest.raises(InjectedFault):
        FaultInjector({"t[2]": 1.0}).check("t", "t[2]")  # by key as well as by name


def test_a_seeded_injector_fails_the_same_attempts_whatever_the_thread_order() -> None:
    import threading

    def failing_attempts(order: list[str]) -> set[tuple[str, int]]:
        injector = FaultInjector({"t": 0.5}, seed=7)
        failed: set[tuple[str, int]] = set()
        lock = threading.Lock()

        def attempt(key: str, nth: int) -> None:
            try:
                injector.check("t", key)
            except InjectedFault:
                with lock:
                    failed.add((key, nth))

        for nth in range(1, 4):
            threads = [threading.Thread(target=attempt, args=(key, nth)) for key in order]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return failed

    keys = [f"t-{i}" for i in range(40)]
    first = failing_attempts(keys)
    assert first == failing_attempts(list(reversed(keys)))
    assert 0 < len(first) < 120  # some fail, not all
