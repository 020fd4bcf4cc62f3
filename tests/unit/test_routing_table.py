"""The routing table: weighted and sticky splits, shadows, and what it refuses."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopline.core.deployments import (
    Deployment,
    DeploymentState,
    Route,
    RouteRole,
    Strategy,
    check_routes,
)
from loopline.core.errors import NotFoundError
from loopline.serving.routing import RouteChoice, RoutingTable, sticky_point

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DRAWS = 20_000
TOLERANCE = 0.03  # absolute share; ~8 standard deviations at 20,000 draws


@dataclass(frozen=True)
class FakeModel:
    uri: str
    input_names: tuple[str, ...] = ()
    batchable: bool = True

    def check(self, batch: Any) -> list[Any]:
        return []

    def predict(self, batch: Any) -> Any:
        return [self.uri] * len(batch)


def deployment(name: str, routes: list[Route], revision: int = 1) -> Deployment:
    return Deployment(name=name, strategy=Strategy.CANARY, routes=check_routes(routes),
                      state=DeploymentState.ACTIVE, revision=revision, created_at=T0,
                      created_by="t", updated_at=T0, updated_by="t")


def models_for(*deployments: Deployment) -> dict[str, FakeModel]:
    return {r.uri: FakeModel(r.uri) for d in deployments for r in d.routes}


def table_of(*deployments: Deployment, seed: int = 7) -> RoutingTable:
    return RoutingTable.build(deployments, models_for(*deployments), rng=random.Random(seed))


def split_routes(weights: list[int]) -> list[Route]:
    return [Route("m", i + 1, float(w), RouteRole.PRIMARY if i == 0 else RouteRole.CANARY)
            for i, w in enumerate(weights)]


@st.composite
def splits(draw: st.DrawFn) -> list[int]:
    """Integer weights of 1-4 answering routes summing to 100 (zero allowed for canaries)."""
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=0, max_size=3)))
    bounds = [0, *cuts, 100]
    return [b - a for a, b in itertools.pairwise(bounds)]


def shares(choices: list[RouteChoice]) -> dict[int, float]:
    counts = Counter(c.route.version for c in choices)
    return {version: n / len(choices) for version, n in counts.items()}


@settings(max_examples=25, deadline=None)
@given(weights=splits(), seed=st.integers(0, 2**32))
def test_random_draws_follow_the_weights_within_tolerance(weights: list[int], seed: int) -> None:
    table = table_of(deployment("d", split_routes(weights)), seed=seed)
    got = shares([table.route("d") for _ in range(DRAWS)])
    for version, weight in enumerate(weights, start=1):
        assert abs(got.get(version, 0.0) - weight / 100) <= TOLERANCE
        if weight == 0:
            assert version not in got


@settings(max_examples=25, deadline=None)
@given(weights=splits(), salt=st.text(max_size=8))
def test_sticky_keys_spread_over_arms_by_weight(weights: list[int], salt: str) -> None:
    table = table_of(deployment("d", split_routes(weights)))
    got = shares([table.route("d", f"{salt}user-{i}") for i in range(DRAWS)])
    for version, weight in enumerate(weights, start=1):
        assert abs(got.get(version, 0.0) - weight / 100) <= TOLERANCE


@settings(max_examples=50, deadline=None)
@given(weights=splits(), key=st.text(min_size=1, max_size=40), seed=st.integers(0, 1000))
def test_a_sticky_key_gets_the_same_arm_every_time_and_in_every_table(
        weights: list[int], key: str, seed: int) -> None:
    dep = deployment("d", split_routes(weights))
    first = table_of(dep, seed=seed).route("d", key).route
    again = [table_of(dep, seed=seed + n).route("d", key).route for n in range(1, 4)]
    same_table = table_of(dep)
    assert all(route == first for route in again)
    assert len({same_table.route("d", key).route for _ in range(5)}) == 1


def test_sticky_points_do_not_depend_on_the_process_hash_seed() -> None:
    code = ("from loopline.serving.routing import sticky_point; "
            "print(repr(sticky_point('shop', 'user-42')))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": seed}).stdout.strip()
               for seed in ("1", "2")}
    assert outputs == {repr(sticky_point("shop", "user-42"))}
    assert 0 <= sticky_point("shop", "user-42") < 100


def test_the_same_key_may_land_on_different_arms_in_different_deployments() -> None:
    points = {sticky_point(f"dep-{i}", "same-user") for i in range(20)}
    assert len(points) == 20


@settings(max_examples=20, deadline=None)
@given(weight=st.integers(0, 100), seed=st.integers(0, 2**32))
def test_a_shadow_mirrors_about_its_weight_in_percent_of_requests(weight: int, seed: int) -> None:
    routes = [Route("m", 1, 100.0), Route("m", 2, float(weight), RouteRole.SHADOW)]
    table = table_of(deployment("d", routes), seed=seed)
    mirrored = sum(bool(table.shadows("d")) for _ in range(DRAWS)) / DRAWS
    keyed = sum(bool(table.shadows("d", f"k{i}")) for i in range(DRAWS)) / DRAWS
    assert abs(mirrored - weight / 100) <= TOLERANCE
    assert abs(keyed - weight / 100) <= TOLERANCE
    if weight in (0, 100):
        assert mirrored == keyed == weight / 100


def test_shadow_choice_is_stable_per_key_and_never_answers() -> None:
    routes = [Route("m", 1, 100.0), Route("m", 2, 50.0, RouteRole.SHADOW)]
    table = table_of(deployment("d", routes))
    for i in range(200):
        decisions = {tuple(c.route.uri for c in table.shadows("d", f"k{i}")) for _ in range(3)}
        assert len(decisions) == 1
        assert table.route("d", f"k{i}").route.version == 1


def test_choices_carry_the_loaded_model_of_their_route() -> None:
    dep = deployment("d", split_routes([50, 50]))
    table = table_of(dep)
    for _ in range(50):
        choice = table.route("d")
        assert choice.model.uri == choice.route.uri


def test_model_returns_the_primary_and_listings_are_sorted() -> None:
    table = table_of(deployment("b", split_routes([10, 90])), deployment("a", split_routes([100])))
    assert table.deployments() == ("a", "b")
    assert table.model("b").route.version == 1
    assert table.model("b").route.role is RouteRole.PRIMARY
    assert table.revisions == {"a": 1, "b": 1}
    assert table.ready
    assert table.deployment("b").name == "b"
    assert set(table.models()) == {"models:/m/1", "models:/m/2"}


def test_an_unknown_deployment_is_not_found_without_listing_what_is_served() -> None:
    table = table_of(deployment("shop", split_routes([100])))
    for call in (lambda: table.route("nope"), lambda: table.shadows("nope"),
                 lambda: table.model("nope"), lambda: table.deployment("nope")):
        with pytest.raises(NotFoundError, match="not served here") as caught:
            call()
        assert caught.value.kind == "deployment"
        assert caught.value.key == "nope"
        assert "shop" not in str(caught.value)


def test_a_deployment_without_loaded_models_is_unavailable_and_not_ready() -> None:
    ok = deployment("ok", [Route("a", 1, 100.0)])
    broken = deployment("broken", [Route("b", 1, 100.0), Route("b", 2, 10.0, RouteRole.SHADOW)])
    models = {"models:/a/1": FakeModel("models:/a/1"), "models:/b/1": FakeModel("models:/b/1")}
    table = RoutingTable.build([ok, broken], models)
    assert not table.ready
    assert table.unavailable == ("broken",)
    assert table.deployments() == ("ok",)
    assert table.revisions == {"ok": 1, "broken": 1}
    with pytest.raises(NotFoundError, match="failed to load"):
        table.route("broken")


def test_an_empty_table_is_ready_and_routes_nothing() -> None:
    table = RoutingTable.empty()
    assert table.ready
    assert table.deployments() == ()
    with pytest.raises(NotFoundError, match="not served here"):
        table.route("x")


def test_the_table_is_immutable() -> None:
    table = table_of(deployment("d", split_routes([100])))
    with pytest.raises(AttributeError):
        table.unavailable = ("x",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        table.revisions["d"] = 2  # type: ignore[index]
