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
