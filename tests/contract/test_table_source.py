"""The table source on each backend: swaps after revision changes, reuses models, survives
failures. Deployments are written straight into the ``deployments`` table; reads go through
``store.deployment_queries.DeploymentQueries``."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from loopline.core.deployments import Deployment, DeploymentState, Route, RouteRole, Strategy
from loopline.core.errors import BackendError, IntegrityError, InvalidArgumentError
from loopline.serving.metrics import ServingMetrics
from loopline.serving.routing import RoutingTable
from loopline.serving.table_source import TableSource
from loopline.store import MetadataStore
from loopline.store.deployment_queries import DeploymentQueries, routes_record
from loopline.store.models import DEPLOYMENTS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLL = 0.01


@dataclass(frozen=True)
class FakeModel:
    uri: str
    input_names: tuple[str, ...] = ()
    batchable: bool = True

    def check(self, batch: Any) -> list[Any]:
        return []

    def predict(self, batch: Any) -> Any:
        return [self.uri] * len(batch)


class FakeLoader:
    """Loads any version except those listed in ``broken``; counts loads per URI."""

    def __init__(self) -> None:
        self.loads: Counter[str] = Counter()
        self.broken: set[str] = set()
        self.lock = threading.Lock()

    def servable(self, name: str, version: int) -> FakeModel:
        uri = f"models:/{name}/{version}"
        with self.lock:
            self.loads[uri] += 1
        if uri in self.broken:
            raise IntegrityError(f"{uri}: stored bytes do not match their digest")
        return FakeModel(uri)


class Swaps:
    def __init__(self) -> None:
        self.tables: list[RoutingTable] = []
        self.event = threading.Event()

    def __call__(self, table: RoutingTable) -> None:
        self.tables.append(table)
        self.event.set()


def write(store: MetadataStore, name: str, routes: Sequence[Route], revision: int) -> None:
    """Insert or update the ``deployments`` row of ``name`` directly."""
    values = {"strategy": str(Strategy.CANARY), "routes": routes_record(routes),
              "state": "active", "revision": revision, "updated_at": T0, "updated_by": "t"}
    with store.engine.begin() as connection:
        updated = connection.execute(
            sa.update(DEPLOYMENTS).where(DEPLOYMENTS.c.name == name).values(**values))
        if updated.rowcount == 0:
            connection.execute(sa.insert(DEPLOYMENTS).values(
                name=name, spec={}, step=0, step_started_at=None, passes=0, failures=0,
                last_good=[], created_at=T0, created_by="t", **values))


def delete(store: MetadataStore, name: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.delete(DEPLOYMENTS).where(DEPLOYMENTS.c.name == name))


def primary(model: str, version: int) -> list[Route]:
    return [Route(model, version, 100.0)]


def canary(model: str, old: int, new: int, share: float) -> list[Route]:
    return [Route(model, old, 100.0 - share), Route(model, new, share, RouteRole.CANARY)]


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def swaps() -> Swaps:
    return Swaps()


def source(store: MetadataStore, loader: FakeLoader, swaps: Swaps, **kwargs: Any) -> TableSource:
    return TableSource(DeploymentQueries(store.engine), loader, swaps, poll_seconds=POLL,
                       **kwargs)


def served(table: RoutingTable | None) -> dict[str, list[str]]:
    assert table is not None
    return {name: [r.uri for r in table.deployment(name).routes] for name in table.deployments()}


def manual(ts: TableSource) -> TableSource:
    """Stop the poll thread so the test drives ``poll_once`` itself."""
    ts.close()
    return ts


def test_the_initial_table_serves_every_deployment_with_each_version_loaded_once(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    write(store, "shop", canary("m", 1, 2, 10.0), 1)
    write(store, "ads", primary("m", 1), 3)
    ts = source(store, loader, swaps)
    try:
        table = ts.load_initial()
    finally:
        ts.close()
    assert table.ready
    assert served(table) == {"ads": ["models:/m/1"], "shop": ["models:/m/1", "models:/m/2"]}
    assert table.revisions == {"ads": 3, "shop": 1}
    assert loader.loads == {"models:/m/1": 1, "models:/m/2": 1}
    assert swaps.tables == []  # the first table is returned, not swapped


def test_a_revision_change_swaps_in_a_new_table_reusing_loaded_models(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    write(store, "shop", primary("m", 1), 1)
    ts = manual(source(store, loader, swaps))
    old = ts.load_initial()
    assert not ts.poll_once()  # nothing moved
    write(store, "shop", canary("m", 1, 2, 25.0), 2)
    assert ts.poll_once()
    assert swaps.tables == [ts.table]
    assert served(ts.table) == {"shop": ["models:/m/1", "models:/m/2"]}
    assert ts.table is not None
    assert ts.table.model("shop").model is old.model("shop").model  # reused, not reloaded
    assert loader.loads == {"models:/m/1": 1, "models:/m/2": 1}
    assert old.revisions == {"shop": 1}  # the old table is untouched
    write(store, "shop", primary("m", 2), 3)
    assert ts.poll_once()
    assert served(ts.table) == {"shop": ["models:/m/2"]}
    assert set(ts._models) == {"models:/m/2"}  # version 1 is released
    assert ts.swaps == 2


def test_a_failing_load_keeps_the_old_routes_and_other_changes_still_swap(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    write(store, "shop", primary("m", 1), 1)
    write(store, "ads", primary("a", 1), 1)
    metrics = ServingMetrics()
    ts = source(store, loader, swaps, metrics=metrics)
    ts.load_initial()
    ts.close()
    loader.broken.add("models:/m/2")
    write(store, "shop", canary("m", 1, 2, 10.0), 2)
    assert not ts.poll_once()
    assert served(ts.table)["shop"] == ["models:/m/1"]
    assert ts.load_failures == 1
    write(store, "ads", primary("a", 2), 2)
    assert ts.poll_once()
    assert served(ts.table) == {"ads": ["models:/a/2"], "shop": ["models:/m/1"]}
    assert ts.table is not None and ts.table.revisions == {"ads": 2, "shop": 1}
    loader.broken.clear()
    deadline = time.monotonic() + 5
    while ts.table.revisions["shop"] != 2 and time.monotonic() < deadline:
        time.sleep(POLL)  # the failed version is retried after a short backoff
        ts.poll_once()
    assert served(ts.table)["shop"] == ["models:/m/1", "models:/m/2"]
    assert b"loopline_model_load_failures_total 1.0" in metrics.render()
    assert b"loopline_table_swaps_total 2.0" in metrics.render()


def test_a_new_deployment_whose_model_fails_is_unavailable_until_it_loads(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    loader.broken.add("models:/m/1")
    write(store, "shop", primary("m", 1), 1)
    write(store, "ads", primary("a", 1), 1)
    ts = manual(source(store, loader, swaps))
    table = ts.load_initial()
    assert table.unavailable == ("shop",)
    assert not table.ready
    assert table.deployments() == ("ads",)


def test_a_deleted_deployment_leaves_the_table_and_releases_its_models(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    write(store, "shop", primary("m", 1), 1)
    write(store, "ads", primary("a", 1), 1)
    ts = manual(source(store, loader, swaps))
    ts.load_initial()
    delete(store, "ads")
    assert ts.poll_once()
    assert served(ts.table) == {"shop": ["models:/m/1"]}
    assert set(ts._models) == {"models:/m/1"}


def test_only_the_named_deployments_are_served(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    write(store, "shop", primary("m", 1), 1)
    write(store, "ads", primary("a", 1), 1)
    ts = manual(source(store, loader, swaps, deployments=["shop"]))
    assert ts.load_initial().deployments() == ("shop",)
    write(store, "ads", primary("a", 2), 2)
    assert not ts.poll_once()
    assert "models:/a/2" not in loader.loads


def test_the_poll_thread_swaps_on_its_own_and_closes_at_once(
        store: MetadataStore, loader: FakeLoader, swaps: Swaps) -> None:
    write(store, "shop", primary("m", 1), 1)
    ts = source(store, loader, swaps)
    ts.load_initial()
    try:
        write(store, "shop", primary("m", 2), 2)
        assert swaps.event.wait(10)
        assert served(swaps.tables[-1]) == {"shop": ["models:/m/2"]}
    finally:
        ts.close()
    slow = TableSource(DeploymentQueries(store.engine), loader, swaps, poll_seconds=3600)
    slow.load_initial()
    started = time.monotonic()
    slow.close()
    assert time.monotonic() - started < 5  # wakes from its interval instead of sleeping it


class FlakyReader:
    """Fails its first ``failures`` reads of revisions, like a database that is away."""

    def __init__(self, deployments: list[Deployment], failures: int) -> None:
        self.deployments = deployments
        self.failures = failures

    def revisions(self) -> Mapping[str, int]:
        if self.failures > 0:
            self.failures -= 1
            raise BackendError("database is unreachable")
        return {d.name: d.revision for d in self.deployments}

    def list(self) -> Sequence[Deployment]:
        return list(self.deployments)


def deployment(name: str, version: int, revision: int) -> Deployment:
    return Deployment(name=name, strategy=Strategy.REPLACE, routes=tuple(primary("m", version)),
                      state=DeploymentState.ACTIVE, revision=revision, created_at=T0,
                      created_by="t", updated_at=T0, updated_by="t")


def test_a_failing_poll_is_counted_and_the_thread_keeps_polling(
        loader: FakeLoader, swaps: Swaps) -> None:
    reader = FlakyReader([deployment("shop", 1, 1)], failures=3)
    ts = TableSource(reader, loader, swaps, poll_seconds=POLL)
    ts.load_initial()
    try:
        reader.deployments = [deployment("shop", 2, 2)]
        assert swaps.event.wait(10)
    finally:
        ts.close()
    assert ts.poll_failures == 3
    assert served(ts.table) == {"shop": ["models:/m/2"]}


def test_a_non_positive_poll_interval_is_refused_naming_the_field(
        loader: FakeLoader, swaps: Swaps) -> None:
    with pytest.raises(InvalidArgumentError, match="poll_seconds"):
        TableSource(FlakyReader([], 0), loader, swaps, poll_seconds=0)
